"""`mtlzoo compare`: weightings x seeds trained for real on a tiny recipe, tables, plot and Δm."""

import json
import math
import os

import numpy as np
import pytest

from conftest import cli_here
from helpers import small_recipe, small_recipe_dict, write_recipe
from mtlzoo import cli as mtlzoo_cli
from mtlzoo.evaluation import compare
from mtlzoo.evaluation import delta_m

WEIGHTINGS = ("unitary", "pcgrad")
TASKS = ("task_00", "task_10")
METRICS = ("rmse", "mae")  # the regression tasks' default metrics, both lower-is-better
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """One real comparison through the command line: 2 weightings x 2 seeds, single-task baselines."""
    tmp = tmp_path_factory.mktemp("compare")
    recipe = write_recipe(tmp / "recipe.yaml", small_recipe_dict(epochs=1, tasks=TASKS))
    out = tmp / "run"
    proc = cli_here("compare", recipe, "--weightings", ",".join(WEIGHTINGS), "--seeds", "2", "--single-task",
               "--out", out)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return out, proc, json.loads((out / "compare.json").read_text())


def test_every_weighting_seed_and_task_is_recorded(compared):
    out, _, report = compared
    assert report["weightings"] == list(WEIGHTINGS) and report["seeds"] == [0, 1]
    for weighting in WEIGHTINGS:
        assert sorted(report["runs"][weighting]) == ["seed0", "seed1"]
        for i in range(2):
            run = report["runs"][weighting][f"seed{i}"]
            assert run["seed"] == i and run["epochs"] == 1 and run["seconds_per_epoch"] > 0
            assert (out / weighting / f"seed{i}" / "run.json").is_file()
            recorded = json.loads((out / weighting / f"seed{i}" / "run.json").read_text())
            assert recorded["weighting"] == weighting
            assert sorted(run["metrics"]) == sorted(TASKS)
            for task in TASKS:
                for metric in METRICS:
                    assert math.isfinite(run["metrics"][task][metric])
                assert run["metrics"][task]["examples"] > 0
    assert report["summary"]["pcgrad"]["vs_unitary"]["verdict"] in ("better", "worse", "tie")
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_markdown_plot_and_printed_summary(compared):
    out, proc, _ = compared
    text = (out / "compare.md").read_text()
    assert "Command: `mtlzoo compare" in text
    for weighting in WEIGHTINGS:
        row = next(line for line in text.splitlines() if line.startswith(f"| {weighting} |"))
        assert row.count("±") >= 3  # rmse, mae, Δm
    for task in TASKS:
        assert any(line.startswith(f"| {task} | rmse |") and "±" in line for line in text.splitlines())
    assert (out / "compare.png").read_bytes()[:8] == PNG_MAGIC
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("compare.json", "compare.md", "compare.png", "single_task.json"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's 0o600
    assert "[8/8]" in proc.stdout and "| pcgrad |" in proc.stdout and "Δm %" in proc.stdout


def test_single_task_baselines_and_delta_m_by_hand(compared):
    out, _, report = compared
    baselines = json.loads((out / "single_task.json").read_text())
    assert sorted(baselines) == sorted(TASKS)
    for task in TASKS:
        runs = report["single_task"]["runs"][task]
        assert sorted(runs) == ["seed0", "seed1"]
        for metric in METRICS:
            expected = np.mean([runs[s]["metrics"][task][metric] for s in runs])
            assert baselines[task][metric] == pytest.approx(expected)
    for weighting in WEIGHTINGS:
        for run in report["runs"][weighting].values():
            scores = run["metrics"]
            by_hand = np.mean([-(scores[t][m] - baselines[t][m]) / baselines[t][m] * 100
                               for t in TASKS for m in METRICS])
            assert run["delta_m"] == pytest.approx(by_hand)
            assert run["delta_m"] == pytest.approx(delta_m(scores, baselines, {m: False for m in METRICS}))
        deltas = [r["delta_m"] for r in report["runs"][weighting].values()]
        assert report["summary"][weighting]["delta_m"]["mean"] == pytest.approx(np.mean(deltas))
        assert report["summary"][weighting]["delta_m"]["std"] == pytest.approx(np.std(deltas, ddof=1))


def test_saved_baselines_are_reused_and_no_baselines_omits_delta_m(compared, tmp_path):
    out, _, _ = compared
    recipe = small_recipe(epochs=1, tasks=TASKS)
    report = compare.compare(recipe, tmp_path / "reuse", ["unitary"], seeds=1,
                             baselines=out / "single_task.json", log=lambda *a, **k: None)
    assert not (tmp_path / "reuse" / "single_task").exists()
    assert report["single_task"]["source"] == str(out / "single_task.json")
    run = report["runs"]["unitary"]["seed0"]
    baselines = json.loads((out / "single_task.json").read_text())
    assert run["delta_m"] == pytest.approx(delta_m(run["metrics"], baselines, {m: False for m in METRICS}))

    report = compare.compare(recipe, tmp_path / "plain", ["unitary"], seeds=1, log=lambda *a, **k: None)
    assert report["single_task"] is None and report["runs"]["unitary"]["seed0"]["delta_m"] is None
    text = (tmp_path / "plain" / "compare.md").read_text()
    assert "Δm omitted" in text and "Δm %" not in text
    assert (tmp_path / "plain" / "compare.png").read_bytes()[:8] == PNG_MAGIC


def test_unknown_weighting_fails_before_training(tmp_path, capsys, monkeypatch):
    from mtlzoo.training import trainer

    monkeypatch.setattr(trainer, "train", lambda *a, **k: pytest.fail("nothing may train"))
    recipe = write_recipe(tmp_path / "recipe.yaml", small_recipe_dict(epochs=1, tasks=TASKS))
    code = mtlzoo_cli.main(["compare", str(recipe), "--weightings", "unitary,pcgrd", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == mtlzoo_cli.EXIT_BAD_INPUT
    assert "pcgrd" in err and "registered weightings" in err and "pcgrad" in err
    assert not (tmp_path / "run").exists()


def test_bad_arguments_are_refused(tmp_path, capsys, monkeypatch):
    from mtlzoo.training import trainer

    monkeypatch.setattr(trainer, "train", lambda *a, **k: pytest.fail("nothing may train"))
    recipe = write_recipe(tmp_path / "recipe.yaml", small_recipe_dict(epochs=1, tasks=TASKS))
    args = ["compare", str(recipe), "--weightings", "unitary", "--out"]

    with pytest.raises(SystemExit) as exit_info:
        mtlzoo_cli.main([*args, str(tmp_path / "a"), "--seeds", "0"])
    assert exit_info.value.code == 2 and "--seeds" in capsys.readouterr().err

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    assert mtlzoo_cli.main([*args, str(busy)]) == mtlzoo_cli.EXIT_BAD_INPUT
    assert "not empty" in capsys.readouterr().err
    assert mtlzoo_cli.main([*args, str(busy), "--overwrite"]) == mtlzoo_cli.EXIT_BAD_INPUT
    assert "does not look like a comparison" in capsys.readouterr().err
    assert (busy / "notes.txt").read_text() == "keep me"

    missing = ["compare", str(tmp_path / "nope.yaml"), "--weightings", "unitary", "--out", str(tmp_path / "b")]
    assert mtlzoo_cli.main(missing) == mtlzoo_cli.EXIT_BAD_INPUT
    assert "recipe file not found" in capsys.readouterr().err

    assert mtlzoo_cli.main([*args, str(tmp_path / "c"), "--baselines", str(tmp_path / "none.json")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "partial.json").write_text(json.dumps({"task_00": {"rmse": 1.0, "mae": 1.0}}))
    assert mtlzoo_cli.main([*args, str(tmp_path / "c"), "--baselines", str(tmp_path / "partial.json")]) == 2
    assert "task_10" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_failing_run_leaves_no_compare_json(tmp_path, monkeypatch):
    from mtlzoo.training import trainer

    def broken(*args, **kwargs):
        raise RuntimeError("training diverged")

    monkeypatch.setattr(trainer, "train", broken)
    with pytest.raises(RuntimeError, match="diverged"):
        compare.compare(small_recipe(epochs=1, tasks=TASKS), tmp_path / "run", ["unitary"], seeds=1,
                        log=lambda *a, **k: None)
    assert (tmp_path / "run" / compare.SETTINGS_FILE).is_file()
    assert not any((tmp_path / "run" / name).exists() for name in compare.RESULT_FILES)


def test_metric_directions():
    assert compare.higher_is_better("accuracy") and compare.higher_is_better("auc")
    assert compare.higher_is_better("binary_accuracy")
    assert not compare.higher_is_better("rmse") and not compare.higher_is_better("mae")
    assert not compare.higher_is_better("val_loss") and not compare.higher_is_better("mean_squared_error")
    with pytest.raises(compare.CompareError, match="higher or lower"):
        compare.higher_is_better("wobble")
    tasks = small_recipe(epochs=1, tasks=TASKS).tasks
    assert compare.metric_directions(tasks) == {t: {"rmse": False, "mae": False} for t in TASKS}
