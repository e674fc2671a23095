"""The package's shape: one home for errors, and what ``import mtlzoo`` pulls in."""

import ast
import inspect
import subprocess
import sys

from conftest import REPO
from mtlzoo import errors


def test_every_error_has_the_one_base_and_its_builtin_kind():
    homes = {errors.__name__, "mtlzoo_client.errors"}  # the client's three are re-exported by mtlzoo.errors
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ in homes]
    assert len(classes) >= 12
    for cls in classes:
        assert issubclass(cls, errors.MtlzooError), cls
        if cls is not errors.MtlzooError:
            assert issubclass(cls, (ValueError, RuntimeError)), cls  # callers catching those still do
    # Bad input exits 2; a run that failed (diverged, a server that refused) exits 1.
    assert {c.__name__ for c in classes if c.exit_code == 1} == {"TrainingDiverged", "ServingError"}


def test_no_error_class_is_defined_outside_errors_py():
    found = []
    for path in sorted([*(REPO / "mtlzoo").rglob("*.py"), *(REPO / "mtlzoo_client").rglob("*.py")]):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Diverged")):
                found.append(f"{path.relative_to(REPO)}: {node.name}")
    assert found == []


def test_no_test_folder_shadows_a_package():
    # pytest puts tests/ on sys.path, where a folder named like a package is a namespace package
    # that an editable install's finder never gets to override.
    assert not [p.name for p in (REPO / "tests").iterdir() if p.name in ("mtlzoo", "mtlzoo_client")]


def test_import_mtlzoo_leaves_tensorflow_datasets_alone():
    code = "import sys, mtlzoo; print('tensorflow_datasets' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"


def _keras_private_names() -> set[str]:
    """The private attribute names of the Keras classes mtlzoo subclasses or drives."""
    import keras

    classes = [keras.Model, keras.layers.Layer, keras.callbacks.Callback, keras.callbacks.ProgbarLogger,
               keras.callbacks.EarlyStopping, keras.metrics.Metric, keras.optimizers.Optimizer, keras.losses.Loss]
    names = {n for cls in classes for n in dir(cls) if n.startswith("_") and not n.startswith("__")}
    inputs = keras.Input((2,))
    for instance in (keras.Model(inputs, keras.layers.Dense(1)(inputs)), keras.callbacks.EarlyStopping(),
                     keras.metrics.Mean(), keras.optimizers.Adam()):
        names |= {n for n in vars(instance) if n.startswith("_") and not n.startswith("__")}
    return names


def test_keras_internals_are_touched_only_in_the_compat_module():
    """No ``keras.src`` import and no private Keras attribute (``model._compile_loss``,
    ``self._tracker``, ``super()._update_progbar`` ...) outside ``mtlzoo/training/compat.py``."""
    private = _keras_private_names()
    assert {"_compile_loss", "_tracker", "_loss_tracker", "_update_progbar", "_inbound_nodes"} <= private
    found = []
    for path in sorted([*(REPO / "mtlzoo").rglob("*.py"), *(REPO / "mtlzoo_client").rglob("*.py")]):
        if path.relative_to(REPO).as_posix() == "mtlzoo/training/compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                found += [f"{path.name}:{node.lineno} imports {m}" for m in modules
                          if m.startswith(("keras.src", "tensorflow.python", "keras._tf_keras"))]
            elif isinstance(node, ast.Attribute) and node.attr in private:
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
            elif isinstance(node, ast.Attribute) and node.attr in ("_keras_history", "__internal__"):
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert found == []
