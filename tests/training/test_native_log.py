"""TensorFlow's C++ start-up notices stay off the terminal; everything else on stderr does not."""

import os
import subprocess
import sys

from conftest import REPO, cli
from mtlzoo.training.native_log import is_startup_notice

# Printed by TF 2.21 on a CPU-only machine: on import, then on the first op.
NOTICES = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796150865.482441    5912 port.cc:153] oneDNN custom operations are on. You may see ...\n",
    b"I0000 00:00:1796150865.482815    5912 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    b"GPU will not be used.\n",
    b"I0000 00:00:1796150865.559693    5912 cpu_feature_guard.cc:227] This TensorFlow binary is optimized ...\n",
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    b"appropriate compiler flags.\n",
    b"E0000 00:00:1796150869.537508    5912 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n",
]


def test_only_the_start_up_notices_are_recognised():
    assert all(is_startup_notice(line) for line in NOTICES)
    for line in (b"E0000 00:00:1.5    5912 op_kernel.cc:1857] OP_REQUIRES failed: Invalid argument\n",
                 b"Traceback (most recent call last):\n", b"mtlzoo train: error: no such recipe\n",
                 b"W0000 00:00:1.5  77 port.cc:1] something new\n"):
        assert not is_startup_notice(line), line


def _child(code: str, **env):
    child_env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    child_env.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True, timeout=300)


def test_the_filter_drops_notices_and_passes_every_other_line_in_order():
    # The module alone, loaded from its file: plain Python, so the child needs no TensorFlow import.
    code = (
        "import importlib.util, os, sys\n"
        f"spec = importlib.util.spec_from_file_location('native_log', {str(REPO / 'mtlzoo' / 'training' / 'native_log.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "quiet_startup_log = module.quiet_startup_log\n"
        f"notices = {NOTICES!r}\n"
        "with quiet_startup_log():\n"
        "    os.write(2, notices[0]); os.write(2, b'native line\\n'); os.write(2, notices[-1])\n"
        "    print('python line', file=sys.stderr)\n"
        "print('after', file=sys.stderr)\n"
    )
    proc = _child(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b"native line\npython line\nafter\n"
    proc = _child(code, TF_CPP_MIN_LOG_LEVEL="0")  # the user asked for TensorFlow's log: nothing dropped
    assert proc.stderr.endswith(NOTICES[0] + b"native line\n" + NOTICES[-1] + b"python line\nafter\n")


def test_the_cli_prints_no_tensorflow_start_up_log(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    proc = cli("list")
    assert proc.returncode == 0, proc.stderr
    assert "hard_sharing" in proc.stdout
    assert proc.stderr == ""
