"""Test setup: TensorFlow backend in-process, two logical CPU devices, and the benchmark data.

The CPU split has to happen before TensorFlow runs any op, so it is done here, at import
time, before any test module is collected. Tests that need another backend (JAX) or a fresh
process run Python in a subprocess through the ``run_python`` fixture.

Data: the session reads the small fixtures in ``tests/fixtures/data`` (same layout and formats
as the full data; see its README): ``$MTLZOO_DATA_DIR`` points there for the whole session, so
recipes, benchmarks and CLI subprocesses read them too. Tests marked ``full_data`` (deselected
by default; ``pytest -m full_data`` runs them) take ``full_data_dir`` instead: the full data
from ``$MTLZOO_FULL_DATA_DIR``, else the caller's ``$MTLZOO_DATA_DIR``, else ``../shared/data``.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"

import pytest  # noqa: E402

from mtlzoo.training.strategies import split_cpu  # noqa: E402

split_cpu(2)

REPO = Path(__file__).resolve().parents[1]
FIXTURE_DATA = REPO / "tests" / "fixtures" / "data"
# The full data, as the caller named it, before the session points $MTLZOO_DATA_DIR at the fixtures.
FULL_DATA = Path(
    os.environ.get("MTLZOO_FULL_DATA_DIR") or os.environ.get("MTLZOO_DATA_DIR") or REPO.parent / "shared" / "data"
)
os.environ["MTLZOO_DATA_DIR"] = str(FIXTURE_DATA)


def pytest_configure(config):
    if not FIXTURE_DATA.is_dir():  # committed with the tests: a broken checkout, not missing data
        raise pytest.UsageError(f"the test fixtures {FIXTURE_DATA} are missing; restore tests/fixtures/ from git")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The small fixture data (``tests/fixtures/data``, also ``$MTLZOO_DATA_DIR`` in this session)."""
    return FIXTURE_DATA


@pytest.fixture
def full_data_dir(monkeypatch) -> Path:
    """The full benchmark data, for tests marked ``full_data``; ``$MTLZOO_DATA_DIR`` points at it
    during the test. Fails (does not skip) when it is missing."""
    path = FULL_DATA.resolve()
    if path == FIXTURE_DATA.resolve():
        pytest.fail(f"the full data is needed, but MTLZOO_DATA_DIR names the fixtures ({path}); "
                    "set MTLZOO_FULL_DATA_DIR to the full data folder")
    missing = [f"{name}/" for name in ("mnist", "fashion_mnist", "kang_synthetic", "school") if not (path / name).is_dir()]
    if missing:
        found = f"{path} lacks {', '.join(missing)}" if path.is_dir() else f"{path} does not exist"
        pytest.fail(f"this full_data test needs the full benchmark data, but {found}: set MTLZOO_FULL_DATA_DIR "
                    "(or MTLZOO_DATA_DIR) to the folder holding mnist/, fashion_mnist/, kang_synthetic/ and school/ "
                    "(see tests/fixtures/README.md), or deselect it with -m 'not full_data'")
    monkeypatch.setenv("MTLZOO_DATA_DIR", str(path))
    return path


@pytest.fixture
def run_python(tmp_path):
    """Run a Python snippet in a fresh interpreter; return the completed process.

    ``backend`` sets KERAS_BACKEND; the snippet runs with ``tmp_path`` as working directory.
    A non-zero exit fails the test with the child's output.
    """

    def run(code: str, *, backend: str = "tensorflow", timeout: float = 300, env=None, check=True):
        child_env = {**os.environ, "KERAS_BACKEND": backend, **(env or {})}
        child_env["PYTHONPATH"] = os.pathsep.join([str(REPO), child_env.get("PYTHONPATH", "")])
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=tmp_path, env=child_env, capture_output=True, text=True, timeout=timeout,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"child process failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
        return proc

    return run


def cli(*args, cwd=None, timeout: float = 600, env=None) -> subprocess.CompletedProcess:
    """Run ``python -m mtlzoo ARGS`` in a subprocess (as a user would run the command)."""
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join([str(REPO), child_env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "mtlzoo", *map(str, args)],
        cwd=cwd or REPO, env=child_env, capture_output=True, text=True, timeout=timeout,
    )


def cli_here(*args, env=None) -> subprocess.CompletedProcess:
    """Run ``mtlzoo ARGS`` in this process (``mtlzoo.cli.main``), with ``cli``'s result.

    The same parser, code and messages as the command, without a fresh interpreter's five
    seconds of importing TensorFlow: for the many bad-input checks. ``cli`` runs the real
    command in a subprocess, for what only a process shows (exit status, start-up log).
    """
    import contextlib
    import io

    from mtlzoo import cli as command

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = command.main(argv)
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else 1
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(["mtlzoo", *argv], code, out.getvalue(), err.getvalue())
