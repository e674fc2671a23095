"""The `mtlzoo` command: end to end as a user runs it (a subprocess), and its bad-input checks
in this process (``cli_here``: the same parser and code, without a fresh TensorFlow import)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, cli, cli_here
from helpers import small_recipe_dict, write_recipe

# Runs the export's answer script and fails if anything imported mtlzoo on the way.
ANSWER_WITHOUT_MTLZOO = """
import runpy, sys
sys.argv = [sys.argv[0], *sys.argv[1:]]
try:
    runpy.run_path(%r, run_name="__main__")
except SystemExit as e:
    code = e.code
else:
    code = 0
assert not any(m == "mtlzoo" or m.startswith("mtlzoo.") for m in sys.modules), "mtlzoo was imported"
sys.exit(code)
""" % str(REPO / "export" / "answer_request.py")


def test_list_shows_architectures_datasets_and_recipes():
    proc = cli_here("list")
    assert proc.returncode == 0, proc.stderr
    assert "hard_sharing" in proc.stdout and "kang_synthetic" in proc.stdout
    assert "zoo_configs/kang_hard_sharing.yaml" in proc.stdout


@pytest.mark.slow
def test_train_evaluate_export_answer(tmp_path):
    recipe = write_recipe(tmp_path / "recipe.yaml", small_recipe_dict(epochs=3))
    run, base = tmp_path / "run", tmp_path / "models" / "kang"

    proc = cli("train", recipe, "--out", run, "--verbose", "1")
    assert proc.returncode == 0, proc.stderr
    assert "Epoch 3/3" in proc.stdout and "val_loss" in proc.stdout

    proc = cli("evaluate", run)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((run / "metrics_test.json").read_text())
    assert sorted(report["tasks"]) == ["task_00", "task_01", "task_10", "task_20"]
    assert all(scores["examples"] == 50 for scores in report["tasks"].values())
    assert report["mean"]["rmse"] == pytest.approx(
        sum(s["rmse"] for s in report["tasks"].values()) / 4, rel=1e-6
    )
    assert "task_20" in proc.stdout and "mean" in proc.stdout

    for expected_version in ("1", "2"):
        proc = cli("export", run, base)
        assert proc.returncode == 0, proc.stderr
        assert (base / expected_version / "saved_model.pb").is_file()
    proc = cli("export", run, base, "--version", "1")
    assert proc.returncode == 2 and "already exists" in proc.stderr

    # The export carries warmup records from real inputs.
    assert (base / "2" / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0

    proc = cli("predict", "--export", base, "--input", run / "request.json", "--output", run / "answer.json")
    assert proc.returncode == 0, proc.stderr
    outputs = json.loads((run / "answer.json").read_text())["outputs"]
    expected = json.loads((run / "expected_response.json").read_text())["predictions"]
    for task in ("task_00", "task_01", "task_10", "task_20"):
        np.testing.assert_allclose(outputs[task], [row[task] for row in expected], atol=1e-5)
    (run / "bad.json").write_text(json.dumps({"instances": [{"features": [1.0, 2.0]}]}))
    proc = cli("predict", "--export", base, "--input", run / "bad.json")
    assert proc.returncode == 2
    assert "input 'features' has shape [1, 2]; expected float32 with shape [batch, 20]." in proc.stderr

    answer = subprocess.run(
        [sys.executable, "-c", ANSWER_WITHOUT_MTLZOO, str(base), str(run / "request.json"),
         "--expected", str(run / "expected_response.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert answer.returncode == 0, answer.stderr[-3000:]
    assert f"from {base / '2'}" in answer.stdout and "(ok)" in answer.stdout
    response = json.loads(answer.stdout.splitlines()[1])
    assert len(response["predictions"]) == 4
    assert sorted(response["predictions"][0]) == ["task_00", "task_01", "task_10", "task_20"]


@pytest.mark.slow  # a fresh process per answer (12 s); .ci/run runs the slow set
def test_answer_script_reports_a_mismatch(tmp_path):
    recipe = write_recipe(tmp_path / "recipe.yaml", small_recipe_dict(epochs=1, tasks=["task_05"]))
    run, base = tmp_path / "run", tmp_path / "models"
    assert cli_here("train", recipe, "--out", run, "--verbose", "0").returncode == 0
    assert cli_here("export", run, base).returncode == 0
    expected = json.loads((run / "expected_response.json").read_text())
    expected["predictions"][0]["task_05"][0] += 0.01
    (run / "wrong.json").write_text(json.dumps(expected))
    answer = subprocess.run(
        [sys.executable, str(REPO / "export" / "answer_request.py"), str(base), str(run / "request.json"),
         "--expected", str(run / "wrong.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert answer.returncode == 1 and "MISMATCH" in answer.stdout


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda raw: raw["training"].update(epochs="many"), "training.epochs: expected a positive integer"),
        (lambda raw: raw.update(tasks=["task_30"]), "tasks[0].name: dataset 'kang_synthetic' provides no task"),
        (lambda raw: raw["architecture"]["params"].update(depth=3), "architecture.params.depth"),
    ],
)
def test_bad_recipe_is_one_clear_line_and_exit_code_2(tmp_path, edit, expected):
    raw = small_recipe_dict()
    edit(raw)
    recipe = write_recipe(tmp_path / "bad.yaml", raw)
    proc = cli_here("train", recipe, "--out", tmp_path / "run")
    assert proc.returncode == 2
    assert f"mtlzoo train: error: {recipe}: {expected}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_missing_inputs_exit_2(tmp_path):
    proc = cli_here("train", tmp_path / "missing.yaml", "--out", tmp_path / "run")
    assert proc.returncode == 2 and "recipe file not found" in proc.stderr
    proc = cli_here("evaluate", tmp_path)
    assert proc.returncode == 2 and "holds no trained model" in proc.stderr
    proc = cli_here("export", tmp_path, tmp_path / "models")
    assert proc.returncode == 2 and "holds no trained model" in proc.stderr
    proc = cli_here("train")
    assert proc.returncode == 2 and "mtlzoo train: error: the following arguments are required" in proc.stderr


def test_files_source_without_data_directory_is_a_clear_error(tmp_path):
    raw = small_recipe_dict()
    raw["data"]["source"] = "files"
    recipe = write_recipe(tmp_path / "files.yaml", raw)
    proc = cli_here("train", recipe, "--out", tmp_path / "run", env={"MTLZOO_DATA_DIR": str(tmp_path / "nowhere")})
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
