"""TensorFlow's C++ start-up notices, kept off the terminal.

Importing TensorFlow and running its first op print absl lines on file descriptor 2 (oneDNN,
the CUDA stub, CPU features, a failed ``cuInit`` on machines without a GPU) that say nothing
about the user's run, and ``TF_CPP_MIN_LOG_LEVEL`` does not silence those printed before absl is
initialised. ``quiet_startup_log`` forwards fd 2 through a filter that drops exactly those
lines; everything else, Python's own stderr included, goes through unchanged. A user who sets
``TF_CPP_MIN_LOG_LEVEL`` (to any value) gets TensorFlow's log untouched.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading

STARTUP_NOTICES = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IE]\d{4} [\d:. ]+\d+ (port|cudart_stub|cpu_feature_guard|cuda_platform|cuda_executor|gpu_device)\.cc:\d+\] "
    rb"|To enable the following instructions: .* in other operations, rebuild TensorFlow)"
)


# Read before TensorFlow loads: importing it sets TF_CPP_MIN_LOG_LEVEL itself.
_USER_SET_LEVEL = "TF_CPP_MIN_LOG_LEVEL" in os.environ


def is_startup_notice(line: bytes) -> bool:
    return STARTUP_NOTICES.match(line) is not None


def _forward(read_fd: int, write_fd: int) -> None:
    with os.fdopen(read_fd, "rb") as pipe:
        for line in pipe:
            if not is_startup_notice(line):
                os.write(write_fd, line)


@contextlib.contextmanager
def quiet_startup_log():
    """Within the block, TensorFlow's start-up notices on fd 2 are dropped (see the module)."""
    if _USER_SET_LEVEL:
        yield
        return
    try:
        sys.stderr.flush()
        original = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (an embedded interpreter): nothing to filter
        yield
        return
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    forwarder = threading.Thread(target=_forward, args=(read_fd, original), daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        finally:
            os.dup2(original, 2)  # drops the pipe's last write end here, so the forwarder ends
            # A child process started in the block may still hold the pipe; don't wait for it.
            forwarder.join(timeout=5)
            if not forwarder.is_alive():
                os.close(original)
