"""Bad input and faults around training: nothing lost, nothing half-done, one clear line.

Each case runs the real command (in this process through ``mtlzoo.cli.main``, or in a child
process where the fault is about processes) on real files.
"""

import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import keras
import numpy as np
import pytest

from conftest import REPO
from helpers import small_recipe, small_recipe_dict, write_recipe
from mtlzoo import Task
from mtlzoo.cli import main
from mtlzoo.recipes.config import ConfigError, recipe_from_dict
from mtlzoo.data.base import MultiTaskArrays
from mtlzoo.data.files import DataIntegrityError
from mtlzoo.data.kang import generate_kang_synthetic
from mtlzoo.training import trainer


def run_cli(capsys, *args) -> tuple[int, str]:
    """``mtlzoo ARGS`` in this process: (exit code, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse
        code = e.code
    return code, capsys.readouterr().err


def assert_one_line(stderr: str, start: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(start), stderr
    assert "Traceback" not in stderr


def tree_digest(directory) -> dict:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
    trainer.train(small_recipe(epochs=1), run, verbose=0)
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path):
    shutil.copytree(finished_run, tmp_path / "run")
    return tmp_path / "run"


def kang_files(directory, edit=None):
    """A ``kang_synthetic`` data folder (npz + SHA256SUMS) from the generator, optionally edited."""
    arrays = generate_kang_synthetic(0)
    if edit:
        edit(arrays)
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "kang_synthetic.npz", **arrays)
    digest = hashlib.sha256((directory / "kang_synthetic.npz").read_bytes()).hexdigest()
    (directory / "SHA256SUMS").write_text(f"{digest}  kang_synthetic.npz\n")
    return directory


def files_recipe(tmp_path, data_dir, **training):
    raw = small_recipe_dict(**training)
    raw["data"].update(source="files", data_dir=str(data_dir))
    return write_recipe(tmp_path / "files.yaml", raw)


# ---------------------------------------------------------------------------------------------
# --overwrite replaces a run only once the new one has started


@pytest.mark.parametrize("failure", ["invalid recipe", "missing data", "diverges in epoch 1"])
def test_a_failed_overwrite_keeps_the_previous_run(run_copy, tmp_path, capsys, failure):
    before = tree_digest(run_copy)
    raw = small_recipe_dict(epochs=2)
    if failure == "invalid recipe":
        raw["training"]["epochs"] = 0
    elif failure == "missing data":
        raw["data"].update(source="files", data_dir=str(tmp_path / "nowhere"))
    else:
        raw["training"].update(optimizer="sgd", learning_rate=1e30)
    code, err = run_cli(capsys, "train", write_recipe(tmp_path / "new.yaml", raw), "--out", run_copy, "--overwrite")
    assert code == (1 if failure.startswith("diverges") else 2)
    assert_one_line(err, "mtlzoo train: ")
    assert tree_digest(run_copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.yaml", "run"]  # nothing left aside


def test_overwrite_replaces_the_run_once_it_has_started(run_copy, tmp_path):
    trainer.train(small_recipe(epochs=2), run_copy, overwrite=True, verbose=0)
    assert json.loads((run_copy / "run.json").read_text())["epochs_done"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# ---------------------------------------------------------------------------------------------
# Non-finite numbers


@pytest.mark.parametrize("edit, key", [
    (lambda raw: raw["training"].update(learning_rate=math.inf), "training.learning_rate"),
    (lambda raw: raw["training"].update(weight_decay=math.inf), "training.weight_decay"),
    (lambda raw: raw["training"].update(early_stopping={"min_delta": math.nan}), "training.early_stopping.min_delta"),
    (lambda raw: raw.update(tasks=[{"name": "task_00", "weight": math.inf}]), "tasks[0].weight"),
    (lambda raw: raw.update(tasks=[{"name": "task_00", "weight": math.nan}]), "tasks[0].weight"),
    (lambda raw: raw["architecture"]["params"].update(dropout=math.nan), "architecture.params.dropout"),
])
def test_non_finite_settings_are_refused(edit, key):
    raw = small_recipe_dict()
    edit(raw)
    with pytest.raises(ConfigError, match=rf"^bad\.yaml: {re.escape(key)}: expected a "):
        recipe_from_dict(raw, "bad.yaml")


def test_the_yaml_spelling_of_infinity_is_refused_from_a_file(tmp_path, capsys):
    raw = small_recipe_dict()
    path = write_recipe(tmp_path / "inf.yaml", raw)
    path.write_text(path.read_text().replace("learning_rate: 0.05", "learning_rate: .inf"))
    code, err = run_cli(capsys, "train", path, "--out", tmp_path / "run")
    assert code == 2 and "training.learning_rate: expected a finite positive number, got inf" in err
    assert_one_line(err, "mtlzoo train: error: ")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("weight", [math.nan, math.inf, -1.0])
def test_a_task_weight_must_be_finite_in_the_api_too(weight):
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        Task("t", "regression", weight=weight)


@pytest.mark.parametrize("array, where, message", [
    ("train_X", (3, 7, 2), "split 'kang_synthetic/train': input 'features' holds 1 non-finite value(s); the first is nan"),
    ("train_Y", (1, 0), "split 'kang_synthetic/train': target 'task_01' holds 1 non-finite value(s); the first is inf"),
])
def test_non_finite_data_is_refused_naming_split_array_and_index(tmp_path, capsys, array, where, message):
    def poison(arrays):
        arrays[array] = arrays[array].astype("float64")
        arrays[array][where] = math.nan if array.endswith("X") else math.inf

    recipe = files_recipe(tmp_path, kang_files(tmp_path / "data", poison), epochs=1)
    code, err = run_cli(capsys, "train", recipe, "--out", tmp_path / "run")
    assert code == 2 and message in err and "at index [" in err
    assert_one_line(err, "mtlzoo train: error: ")
    assert not (tmp_path / "run").exists()


def test_a_missing_label_may_be_nan_and_trains_as_absent():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = x @ np.array([[1.0], [2.0], [-1.0]], "float32")
    labelled = (np.arange(64) % 2).astype("float32")
    y_nan = np.where(labelled[:, None] > 0, y, np.nan).astype("float32")
    data = MultiTaskArrays({"x": x}, {"t": y_nan}, {"t": labelled}).checked("fixture")
    assert np.isfinite(data.targets["t"]).all()
    np.testing.assert_array_equal(data.targets["t"][1::2], y[1::2])
    # A NaN marks a missing label even where the weight says labelled; an infinity is an error
    # naming the example.
    labelled[2] = 1.0
    marked = MultiTaskArrays({"x": x}, {"t": y_nan}, {"t": labelled}).checked("fixture")
    assert marked.weights["t"][2] == 0.0 and marked.targets["t"][2, 0] == 0.0
    y_nan[2] = np.inf
    with pytest.raises(DataIntegrityError, match=r"target 't' holds 1 non-finite .* at index \[2, 0\] \(example 2\)"):
        MultiTaskArrays({"x": x}, {"t": y_nan}, {"t": labelled}).checked("fixture")


def test_a_diverging_run_stops_with_exit_1_keeping_the_last_finite_checkpoint(tmp_path, capsys):
    # Plain SGD at this rate is finite for two epochs, then overflows (measured: loss 0.32, 152, nan).
    raw = small_recipe_dict(epochs=8, optimizer="sgd", learning_rate=2.0, shuffle=False)
    code, err = run_cli(capsys, "train", write_recipe(tmp_path / "r.yaml", raw), "--out", tmp_path / "run")
    assert code == 1
    assert_one_line(err, "mtlzoo train: failed: training diverged in epoch ")
    state = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())
    assert 1 <= state["epochs_done"] < 8 and all(math.isfinite(v) for v in state["history"]["loss"])
    checkpoint = keras.saving.load_model(tmp_path / "run" / "checkpoints" / "last.keras")
    assert all(np.isfinite(w).all() for w in checkpoint.get_weights())
    assert not (tmp_path / "run" / "model.keras").exists()


# ---------------------------------------------------------------------------------------------
# Arguments and recipe values that Keras would reject later


@pytest.mark.parametrize("epochs", ["-3", "0", "two"])
def test_cli_epochs_must_be_a_positive_integer(tmp_path, capsys, epochs):
    recipe = write_recipe(tmp_path / "r.yaml", small_recipe_dict())
    code, err = run_cli(capsys, "train", recipe, "--out", tmp_path / "run", "--epochs", epochs)
    assert code == 2
    assert_one_line(err, "mtlzoo train: error: argument --epochs: expected an integer >= 1, got ")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        trainer.train(small_recipe(), tmp_path / "api", epochs=0, verbose=0)
    assert not (tmp_path / "api").exists()


@pytest.mark.parametrize("edit, expected", [
    (lambda raw: raw.update(tasks=[{"name": "task_00", "loss": "msee"}]), "tasks[0]: Task 'task_00': unknown loss 'msee'"),
    (lambda raw: raw.update(tasks=[{"name": "task_00", "metrics": ["mae", "rmsee"]}]),
     "tasks[0]: Task 'task_00': unknown metric 'rmsee'"),
    (lambda raw: raw["architecture"]["params"].update(activation="rellu"),
     "architecture.params.activation: expected a Keras activation name"),
    (lambda raw: raw["architecture"]["params"].update(dropout=-0.1), "architecture.params.dropout: expected a rate in [0, 1)"),
    (lambda raw: raw["architecture"]["params"].update(dropout=1.0), "architecture.params.dropout: expected a rate in [0, 1)"),
    (lambda raw: raw["architecture"]["params"].update(shared_units=[2_000_000_000]),
     "architecture.params.shared_units: widths [2000000000] need at least 4e+09 parameters"),
    (lambda raw: raw["architecture"]["params"].update(shared_units=[100_000, 100_000]),
     "architecture.params.shared_units: widths [100000, 100000] need at least 1e+10 parameters"),
])
def test_values_keras_would_reject_are_refused_at_load(tmp_path, capsys, edit, expected):
    raw = small_recipe_dict()
    edit(raw)
    recipe = write_recipe(tmp_path / "bad.yaml", raw)
    code, err = run_cli(capsys, "train", recipe, "--out", tmp_path / "run")
    assert code == 2 and f"{recipe}: {expected}" in err
    assert_one_line(err, "mtlzoo train: error: ")


def test_the_parameter_limit_can_be_raised(monkeypatch):
    raw = small_recipe_dict()
    raw["architecture"]["params"]["shared_units"] = [40_000, 40_000]  # 1.6e9: refused by default
    with pytest.raises(ConfigError, match="need at least 1.6e"):
        recipe_from_dict(raw)
    monkeypatch.setenv("MTLZOO_MAX_PARAMETERS", "2e9")
    assert recipe_from_dict(raw).params["shared_units"] == [40_000, 40_000]


def test_a_data_integrity_failure_exits_2(tmp_path, capsys):
    data = kang_files(tmp_path / "data")
    (data / "SHA256SUMS").write_text("0" * 64 + "  kang_synthetic.npz\n")
    code, err = run_cli(capsys, "train", files_recipe(tmp_path, data), "--out", tmp_path / "run")
    assert code == 2 and "kang_synthetic.npz" in err
    assert_one_line(err, "mtlzoo train: error: ")


@pytest.mark.parametrize("args, expected", [
    (["evaluate", "{run}", "--split", "tset"], "--split 'tset': dataset 'kang_synthetic' has splits"),
    (["evaluate", "{run}", "--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got 0"),
    (["export", "{run}", "{tmp}/models", "--version", "0"], "argument --version: expected an integer >= 1"),
    (["preset", "{run}", "{tmp}/preset", "--baselines", "{tmp}/run/recipe.yaml"], "is not valid JSON"),
    (["preset", "{run}", "{tmp}/preset", "--baselines", "{tmp}/run/run.json"], 'expected {"source": ...'),
    (["preset", "{run}", "{tmp}/preset", "--split", "tset"], "--split 'tset': dataset 'kang_synthetic' has splits"),
    (["serving-config", "{tmp}", "--versions", "1,two"], "argument --versions: expected versions such as 1,2"),
    (["serving-config", "{tmp}", "--num-versions", "-1"], "argument --num-versions: expected an integer >= 1"),
    (["tune", "{tmp}/tuning.yaml", "--out", "{tmp}/best.yaml"], "tuning.space: unknown key(s) ['epochs']"),
])
def test_other_bad_arguments_are_one_line_and_exit_2(run_copy, tmp_path, capsys, args, expected):
    raw = small_recipe_dict()
    raw["tuning"] = {"space": {"epochs": [1, 2]}}
    write_recipe(tmp_path / "tuning.yaml", raw)
    code, err = run_cli(capsys, *[a.format(run=run_copy, tmp=tmp_path) for a in args])
    assert code == 2 and expected in err, err
    assert_one_line(err, f"mtlzoo {args[0]}: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tuning.yaml"]  # nothing written


# ---------------------------------------------------------------------------------------------
# Damaged run directories


def test_a_truncated_model_file_is_named_as_damaged(run_copy, capsys):
    model = run_copy / "model.keras"
    model.write_bytes(model.read_bytes()[:2000])
    for command in (["evaluate", run_copy], ["export", run_copy, run_copy.parent / "models"]):
        code, err = run_cli(capsys, *command)
        assert code == 2 and f"{str(model)!r} is damaged: not a .keras (zip) archive" in err
        assert_one_line(err, f"mtlzoo {command[0]}: error: ")
    assert not (run_copy.parent / "models").exists()


@pytest.mark.parametrize("damage, expected", [
    (lambda text: text[: len(text) // 2], "is damaged: not readable JSON"),
    (lambda text: json.dumps({**json.loads(text), "epochs_done": "one"}), "'epochs_done' should be an integer >= 0"),
    (lambda text: json.dumps({**json.loads(text), "history": {"loss": ["x"]}}), "'history' should be"),
    (lambda text: json.dumps({**json.loads(text), "random_state": [[1, 2, 3]]}), "does not fit its checkpoint"),
    (lambda text: "[]", "expected a JSON object, got list"),
])
def test_a_damaged_state_file_is_named_on_resume(run_copy, tmp_path, capsys, damage, expected):
    state = run_copy / "checkpoints" / "state.json"
    state.write_text(damage(state.read_text()))
    recipe = write_recipe(tmp_path / "r.yaml", small_recipe_dict(epochs=2))
    code, err = run_cli(capsys, "train", recipe, "--out", run_copy, "--resume")
    assert code == 2 and f"{str(state)!r}" in err and expected in err
    assert_one_line(err, "mtlzoo train: error: ")


def test_a_model_that_safe_mode_refuses_is_one_line(run_copy, capsys):
    inputs = keras.Input((20,), name="features")
    unsafe = keras.Model(inputs, {"task_00": keras.layers.Lambda(lambda t: t[:, :1] * 2)(inputs)})
    unsafe.save(run_copy / "model.keras")
    code, err = run_cli(capsys, "evaluate", run_copy)
    assert code == 2 and "holds Python code (e.g. a Lambda layer) that safe mode refuses to run" in err
    assert_one_line(err, "mtlzoo evaluate: error: ")
    assert zipfile.is_zipfile(run_copy / "model.keras")


# ---------------------------------------------------------------------------------------------
# Kill and resume: the same weights as a run never interrupted

KILLABLE_TRAIN = """
import sys
from mtlzoo.training.strategies import split_cpu
split_cpu(2)  # before TensorFlow starts: mirrored gets two CPU replicas
from mtlzoo.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _train_process(args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", KILLABLE_TRAIN, "train", *map(str, args), "--verbose", "0"],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_after(process, state_path, epochs_done, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"training ended before the kill (exit {process.returncode}): {process.stderr.read()[-2000:]}")
        try:
            if json.loads(state_path.read_text())["epochs_done"] >= epochs_done:
                break
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["one_device", "mirrored"])
def test_kill_twice_and_resume_gives_the_uninterrupted_run(tmp_path, strategy):
    raw = small_recipe_dict(epochs=10, shuffle=True, seed=3)  # shuffled data, and dropout below
    raw["architecture"]["params"].update(shared_units=[16], activation="relu", dropout=0.3)
    recipe = write_recipe(tmp_path / "r.yaml", raw)
    common = ["--strategy", strategy]
    state = tmp_path / "killed" / "checkpoints" / "state.json"
    _kill_after(_train_process([recipe, "--out", tmp_path / "killed", *common], tmp_path), state, 2)
    _kill_after(_train_process([recipe, "--out", tmp_path / "killed", "--resume", *common], tmp_path), state, 5)
    done = _train_process([recipe, "--out", tmp_path / "killed", "--resume", *common], tmp_path)
    assert done.wait(timeout=600) == 0, done.stderr.read()[-2000:]
    straight = trainer.train(recipe_from_dict(raw), tmp_path / "straight", strategy=strategy, verbose=0)

    runs = {name: json.loads((tmp_path / name / "run.json").read_text()) for name in ("straight", "killed")}
    assert runs["killed"]["initial_epoch"] >= 5 and runs["straight"]["initial_epoch"] == 0
    assert runs["killed"]["replicas"] == runs["straight"]["replicas"] == (2 if strategy == "mirrored" else 1)
    histories = [json.loads((tmp_path / name / "history.json").read_text()) for name in ("straight", "killed")]
    np.testing.assert_allclose(histories[1]["loss"], histories[0]["loss"], rtol=1e-6, atol=0)
    resumed = keras.saving.load_model(tmp_path / "killed" / "model.keras")
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
