"""The package's shape: one home for errors, and what ``import mtlzoo`` pulls in."""

import ast
import inspect
import subprocess
import sys

from conftest import REPO
from mtlzoo import errors


def test_every_error_has_the_one_base_and_its_builtin_kind():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(classes) >= 12
    for cls in classes:
        assert issubclass(cls, errors.MtlzooError), cls
        if cls is not errors.MtlzooError:
            assert issubclass(cls, (ValueError, RuntimeError)), cls  # callers catching those still do
    # Bad input exits 2; a run that failed (diverged, a server that refused) exits 1.
    assert {c.__name__ for c in classes if c.exit_code == 1} == {"TrainingDiverged", "ServingError"}


def test_no_error_class_is_defined_outside_errors_py():
    found = []
    for path in sorted((REPO / "mtlzoo").rglob("*.py")):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Diverged")):
                found.append(f"{path.relative_to(REPO)}: {node.name}")
    assert found == []


def test_import_mtlzoo_leaves_tensorflow_datasets_alone():
    code = "import sys, mtlzoo; print('tensorflow_datasets' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"
