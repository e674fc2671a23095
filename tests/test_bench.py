"""Benchmarks stay runnable: each runs in its quick mode (its full run writes bench/results/)."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

# Each quick run takes tens of seconds: in the slow set, which .ci/run runs after the default suite.
pytestmark = pytest.mark.slow


def quick_run(script: str, *args: str) -> str:
    """Run ``bench/<script> --quick [args]``; fail with its output unless it exits 0; return its stdout."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--quick", *args],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return proc.stdout


def test_export_latency_quick_run():
    stdout = quick_run("export_latency.py")
    rows = [line for line in stdout.splitlines() if line.startswith("T=")]
    assert len(rows) == 4  # T = 2, 4 at batch 1 and 64
    assert all("multitask_savedmodel" in row and "separate_savedmodels" in row for row in rows)


def test_multimnist_quick_run_trains_every_recipe(data_dir):
    stdout = quick_run("multimnist.py")
    rows = [line for line in stdout.splitlines() if line.startswith("multi_mnist seed=0 ")]
    trained = [line.split()[2].rstrip(":") for line in rows if "done" not in line]
    assert trained == ["single_task", "hard_sharing", "cross_stitch", "soft_sharing", "mmoe", "ple"]
    table = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + 6  # header, rule, one row per model


def test_muir_kang_quick_run_beats_single_task(data_dir):
    stdout = quick_run("muir_kang.py")
    line = next(line for line in stdout.splitlines() if line.startswith("clean seed 0: "))
    single = float(line.split("single-task RMSE ")[1].split(",")[0])
    shared = float(line.split("MUiR RMSE ")[1].split(",")[0])
    # Even 20 generations of alignment search beat 30 separate linear models from 10 examples each.
    assert shared < 0.6 * single
    assert "Cost of reparameterization" in stdout


def test_muir_kang_recipe_quick_run_trains_the_shipped_recipe(data_dir):
    stdout = quick_run("muir_kang_recipe.py", "--seeds", "0", "--variants", "noisy")
    line = next(line for line in stdout.splitlines() if line.startswith("noisy seed 0: "))
    # 15 steps cannot fit the tasks yet, but the run must give a finite error and an alignment.
    rmse = float(line.split("test RMSE ")[1].split(",")[0])
    assert 0 < rmse < 10 and "hypermodules" in line


def test_muir_cross_domain_quick_run_pairs_every_variant_with_single_task(data_dir):
    stdout = quick_run("muir_cross_domain.py")
    assert [line.split(":")[0] for line in stdout.splitlines() if line.startswith("seed ")] == ["seed 0", "seed 1"]
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and "test " in line]
    assert [row.split("|")[1].strip() for row in rows] == ["fashion", "school", "dna"]
    for row in rows:
        single, *others = [cell.strip() for cell in row.split("|")[3:7]]
        assert "±" in single and "[" not in single
        # muir, random alignment, separate banks: each with its paired difference and interval
        assert len(others) == 3 and all(cell.count("[") == 1 and "±" in cell for cell in others)
    assert "MUiR against single-task: fashion: " in stdout
    assert "Cost of reparameterization" in stdout


def test_loop_overhead_quick_run_times_both_loops(data_dir):
    stdout = quick_run("loop_overhead.py")
    rows = {line.split("|")[1].strip().split(" ")[0]: line for line in stdout.splitlines() if line.startswith("| ")}
    plain, zoo = (float(rows[k].split("|")[2]) for k in ("plain", "`mtlzoo.train`"))
    assert plain > 0 and zoo > 0
    # The ratio is printed from unrounded times; the times are printed rounded to 0.01 s.
    assert float(rows["`mtlzoo.train`"].split("|")[3]) == pytest.approx(zoo / plain, abs=0.01 * (1 + zoo / plain) / plain + 0.01)


def test_weighting_speed_quick_run_reports_ratios_to_unitary(tmp_path):
    out = tmp_path / "weighting_speed"
    stdout = quick_run("weighting_speed.py", "--out", str(out))  # T = 2, 3; unitary, uncertainty, mgda
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["config"]["tasks"] == [2, 3]
    assert report["methods"] == ["unitary", "uncertainty", "mgda"]
    for tasks in ("2", "3"):
        result = report["results"][tasks]
        rows = result["methods"]
        assert rows["unitary"]["ratio"] == 1.0
        for row in rows.values():
            assert len(row["step_seconds"]) == report["config"]["rounds"] == 2  # rounds of timed steps
            assert all(len(r) == report["config"]["steps"] for r in row["step_seconds"])
            assert row["ratio"] == pytest.approx(row["median_seconds_per_step"] / rows["unitary"]["median_seconds_per_step"])
            assert row["peak_bytes"] >= 0
        assert (rows["uncertainty"]["kind"], rows["mgda"]["kind"]) == ("loss", "gradient")
        assert rows["mgda"]["solver_seconds"] > 0
        assert rows["mgda"]["analytic_gradient_bytes"] == int(tasks) * result["parameters"]["shared"] * 4
    table = [line for line in stdout.splitlines() if line.startswith("| ") and "× (" in line]
    assert [line.split("|")[1].strip() for line in table] == ["unitary", "uncertainty", "mgda"]
    assert "| unitary | loss | 1.00× (" in out.with_suffix(".md").read_text()


def test_solver_speed_quick_run_times_every_solver():
    stdout = quick_run("solver_speed.py")
    rows = [line.split("|") for line in stdout.splitlines() if line.startswith("| ") and line[2:3].isalpha()]
    timed = {(r[1].strip(), int(r[2])) for r in rows if r[1].strip() != "solver"}
    solvers = ("mgda", "cagrad", "upgrad", "nash_mtl", "imtl_g", "aligned_mtl", "pcgrad")
    assert timed == {(s, t) for s in solvers for t in (2, 3)}
    assert all(float(r[3]) > 0 for r in rows if r[1].strip() != "solver")


def test_weighting_compare_quick_run_writes_a_comparison(tmp_path, data_dir):
    quick_run("weighting_compare.py", "--benchmarks", "school", "--workdir", str(tmp_path))
    report = json.loads((tmp_path / "school" / "compare.json").read_text())
    assert report["weightings"] == ["unitary", "pcgrad"]
    assert (tmp_path / "school" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_intrinsic_dim_quick_runs_sweep_and_time_the_subspace(data_dir):
    stdout = quick_run("intrinsic_dim.py", "--pixel-swaps", "50")
    assert "# Intrinsic dimension on permuted_mnist, 50 pixel swaps per task" in stdout
    rows = [line for line in stdout.splitlines() if " seed=0: mean test accuracy " in line]
    assert [line.split(" seed=")[0] for line in rows] == ["full ", "single 20", "single 80", "multi 40x4", "multi hard:60"]
    # The multi-task table gives each run its amortized dimension: 40*4/3 + 4 and 60/3.
    table = [line.split("|")[1:4] for line in stdout.splitlines() if line.startswith("| 40 ") or line.startswith("| 60 ")]
    assert [[cell.strip() for cell in row] for row in table] == [["60", "-", "20.0"], ["40", "4", "57.3"]]
    cost = quick_run("intrinsic_dim.py", "--cost-only")
    ratio = float(cost.split("ratio ")[1].split(";")[0])
    cpu_ratio = float(cost.split("in CPU time ")[1].split(" ")[0])
    assert 0 < ratio < 20 and 0 < cpu_ratio < 20 and "subspace" in cost


def test_intrinsic_dim_interpolates_where_the_curve_crosses_the_90_percent_line():
    # In a subprocess: importing the bench script sets its own environment defaults.
    code = (
        "import json, sys; sys.path.insert(0, 'bench'); import intrinsic_dim as b\n"
        "print(json.dumps([b.crossing([(800, 0.83), (400, 0.78)], 0.7988),\n"
        "                  b.crossing([(200, 0.7), (400, 0.8)], 0.8),\n"
        "                  b.crossing([(200, 0.9), (400, 0.95)], 0.8),\n"
        "                  b.crossing([(200, 0.5), (400, 0.6)], 0.8),\n"
        "                  b.crossing([(100, 0.5), (200, 0.85), (400, 0.7), (800, 0.9)], 0.8)]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    between, exact, first, never, bumpy = json.loads(proc.stdout.splitlines()[-1])
    # 0.7988 is 37.6 % of the way from 0.78 to 0.83: 400 * 2 ** 0.376, in log d.
    assert between == pytest.approx(400 * 2 ** 0.376)
    assert exact == pytest.approx(400) and first == 200 and never is None
    # The first crossing counts, not a later dip and recovery: 100 * 2 ** (0.3 / 0.35).
    assert bumpy == pytest.approx(100 * 2 ** (0.3 / 0.35))


def test_subspace_bound_quick_run_bounds_every_model(data_dir):
    stdout = quick_run("subspace_bound.py")
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and "%" not in line and "---" not in line]
    names = [row.split("|")[1].strip() for row in rows[1:]]
    assert names == ["hard sharing, l = 60", "columns, l x k = 40x4", "single-task, d = 40"]
    for row in rows[1:]:
        bound, test_error = (float(cell.split("±")[0]) for cell in (row.split("|")[6], row.split("|")[5]))
        assert test_error <= 100 and 0 < bound <= 100
    assert "Best multi-task bound: " in stdout


def test_survival_tables_quick_run_scores_every_model_on_both_endpoints():
    stdout = quick_run("survival_tables.py")
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in stdout.splitlines()
            if line.startswith("| aids ") or line.startswith("| death ")}
    assert sorted(rows) == ["aids", "death"]
    for cells in rows.values():
        assert len(cells) == 6  # coxph, single, multi and three paired differences
        assert all(0.3 < float(cell.split("±")[0]) < 1.0 for cell in cells[:3])


def test_deep_mts_quick_run_scores_segmentation_survival_fusion_and_cost():
    stdout = quick_run("deep_mts.py")
    row = next(line for line in stdout.splitlines() if line.startswith("| 0 "))
    dice, deep, oracle, fused = (float(row.split("|")[i].split("(")[0]) for i in (2, 3, 4, 5))
    assert 0 <= dice <= 1 and all(0 < c < 1 for c in (deep, oracle, fused)) and oracle > 0.6
    assert "TensorFlow's default threads: wall clock" in stdout
    ratio = float(stdout.split("**")[1].rstrip("×"))
    assert 0.5 < ratio < 10


def test_deep_mts_step_cost_on_one_thread():
    # The full bench measures again in a child process started like this.
    stdout = quick_run("deep_mts.py", "--cost-only", "--cost-threads", "1")
    assert "1 thread(s): wall clock" in stdout
    assert 0.5 < float(stdout.split("**")[3].rstrip("×")) < 10  # CPU time
    # Without --cost-only the training would run on those threads too: refused, saying why.
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "deep_mts.py"), "--quick", "--cost-threads", "1"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 2 and "--cost-threads needs --cost-only" in proc.stderr


def test_auxiliary_quick_run_reports_both_studies(data_dir):
    stdout = quick_run("auxiliary.py")
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and "%" not in line.split("|")[1]]
    arms = [row.split("|")[1].strip() for row in rows if row.split("|")[1].strip() not in ("arm", "---")]
    assert arms == ["left alone", "+ right (auxiliary)", "+ reconstruction", "+ right, gated",
                    "left alone", "+ right (gradient reversal)", "+ right (confusion)"]
    probes = [float(line.split("probe on right ")[1]) for line in stdout.splitlines() if "probe on right" in line]
    assert len(probes) == 3 and all(0 <= p <= 1 for p in probes)


def test_auxiliary_run_of_one_study_keeps_the_other_studys_committed_results(tmp_path):
    # In a subprocess: importing the bench script sets its own environment defaults.
    previous = {"seeds": [0, 1, 2], "fashion": {"left alone": {"x": 1}}, "adversarial": {"old": 1},
                "command": "python bench/auxiliary.py"}
    (tmp_path / "auxiliary.json").write_text(json.dumps(previous))
    code = (
        "import json, sys; from pathlib import Path; sys.path.insert(0, 'bench'); import auxiliary\n"
        "new = {'seeds': [0, 1, 2], 'adversarial': {'new': 1},\n"
        "       'commands': {'adversarial': 'python bench/auxiliary.py --studies adversarial'}}\n"
        "kept = auxiliary.keep_other_studies(new, Path(sys.argv[1]))\n"
        "other = auxiliary.keep_other_studies({**new, 'seeds': [0]}, Path(sys.argv[1]))\n"
        "print(json.dumps([kept, other]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "auxiliary.json")], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kept, other = json.loads(proc.stdout.splitlines()[-1])
    assert kept["fashion"] == previous["fashion"] and kept["adversarial"] == {"new": 1}
    assert kept["commands"] == {"fashion": "python bench/auxiliary.py",
                                "adversarial": "python bench/auxiliary.py --studies adversarial"}
    assert "fashion" not in other  # results over other seeds are not merged
