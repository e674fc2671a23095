"""Benchmarks stay runnable: each runs in its quick mode (its full run writes bench/results/)."""

import subprocess
import sys

import pytest

from conftest import REPO


def quick_run(script: str) -> str:
    """Run ``bench/<script> --quick``; fail with its output unless it exits 0; return its stdout."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--quick"],
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
    line = next(line for line in stdout.splitlines() if line.startswith("clean: "))
    single = float(line.split("single-task RMSE ")[1].split(",")[0])
    shared = float(line.split("MUiR RMSE ")[1].split(",")[0])
    # Even 20 generations of alignment search beat 30 separate linear models from 10 examples each.
    assert shared < 0.6 * single
    assert "Cost of reparameterization" in stdout


def test_muir_cross_domain_quick_run_shares_across_domains(data_dir):
    stdout = quick_run("muir_cross_domain.py")
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and "test " in line]
    assert [row.split("|")[1].strip() for row in rows] == ["digits", "school", "dna"]
    # The three domains' blocks, in one bank: 410 (conv + dense), 32 (two 64x64 dense), 52 (conv1d + LSTM).
    assert [row.split("|")[5].strip() for row in rows] == ["410", "32", "52"]
    assert "Hypermodules generating blocks of several domains" in stdout
    assert "Cost of reparameterization" in stdout


def test_loop_overhead_quick_run_times_both_loops(data_dir):
    stdout = quick_run("loop_overhead.py")
    rows = {line.split("|")[1].strip().split(" ")[0]: line for line in stdout.splitlines() if line.startswith("| ")}
    plain, zoo = (float(rows[k].split("|")[2]) for k in ("plain", "`mtlzoo.train`"))
    assert plain > 0 and zoo > 0
    assert float(rows["`mtlzoo.train`"].split("|")[3]) == pytest.approx(zoo / plain, abs=0.01)
