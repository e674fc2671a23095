"""Every weighting method against unitary scalarization, on MultiMNIST and on School.

Runs ``mtlzoo compare`` (as a user would, in a subprocess) on two recipes with single-task
baselines, 3 seeds each, then copies each RUN_DIR's compare.{json,md,png} to
``bench/results/compare_<benchmark>.*`` and writes ``bench/weighting_compare.md`` with the
commands and wall times. The budgets are chosen so that both finish within about 50 minutes
on 2 shared CPU cores (see that file for why each is cut where it is):

- ``multimnist``: ``zoo_configs/multimnist_hard_sharing.yaml`` (all 50000 training canvases),
  2 epochs instead of 10.
- ``school``: ``zoo_configs/school_top10_hard_sharing.yaml``: the 10 largest of the 139
  schools, 30 epochs.
- ``school139`` (only when named, about 25 minutes): all 139 schools, 4 methods, 1 seed, 12
  epochs, no single-task baselines: a check that the methods scale to 139 tasks.

    python bench/weighting_compare.py                          # both, into /tmp/weighting_compare
    python bench/weighting_compare.py --benchmarks school      # one of them
    python bench/weighting_compare.py --quick                  # 2 weightings, 1 seed, 1 epoch; nothing kept

The data is read from $MTLZOO_DATA_DIR (default ../shared/data beside the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"
WEIGHTINGS = ("unitary,uncertainty,dwa,rlw,famo,gradnorm,pcgrad,mgda,mgda_ub,cagrad,imtl_g,aligned_mtl,"
              "nash_mtl,upgrad")
BENCHMARKS = {
    "multimnist": ["zoo_configs/multimnist_hard_sharing.yaml", "--epochs", "2"],
    "school": ["zoo_configs/school_top10_hard_sharing.yaml"],
    "school139": ["zoo_configs/school_hard_sharing.yaml", "--epochs", "12"],
}
DEFAULT_BENCHMARKS = ("multimnist", "school")
# (weightings, seeds, single-task baselines) where a benchmark does not run the full set.
BUDGETS = {"school139": ("unitary,uncertainty,pcgrad,mgda_ub", 1, False)}
NOTES = {
    "multimnist": (
        "MultiLeNet hard sharing on all of MultiMNIST (50000 training canvases, the 10000 test canvases), "
        "2 epochs instead of the recipe's 10: an epoch costs 6-10 s with unitary and 12-30 s with a gradient "
        "method on the 2 shared cores, and the 48 runs had to fit about 30 minutes. The accuracies are "
        "therefore below the converged ~97 % of bench/results/multimnist.md. DWA keeps every weight at 1 "
        "for its first two epochs, so here it *is* unitary (same seeds, same numbers up to float noise): "
        "it only shows how reproducible a run is. Single-task baselines: the same LeNet on each digit alone "
        "(`--single-task`), 3 seeds."
    ),
    "school139": (
        "The full benchmark, one regression task per school (`zoo_configs/school_hard_sharing.yaml`), on a "
        "smaller budget: 4 methods, 1 seed, 12 epochs, no single-task baselines (139 of them), so no Δm and no "
        "spread; read it as a check that the methods scale to 139 tasks, not as a ranking. With a batch of 256 "
        "students and 139 schools, every batch lacks some schools (22 % of them on average): before absent "
        "tasks were taken out of the combination, MGDA-UB's min-norm point was the zero vector in every step "
        "and its training stalled (test rmse 12.36 against unitary's 10.00). Without the absent schools it reaches "
        "11.51, still far behind (the min-norm point favours the tasks with the smallest gradients; not "
        "investigated further)."
    ),
    "school": (
        "School cut to its 10 largest schools (`zoo_configs/school_top10_hard_sharing.yaml`, 201-251 "
        "students each, so 40-50 test students per task): with all 139 schools, building the train step "
        "of a gradient method (the per-task gradients of every task) takes minutes per run on this machine "
        "(measured: pcgrad 6 s at 10 tasks, 20 s at 20, 58 s at 30; unitary alone needs ~100 s to trace the "
        "139-task step), far beyond a 42-run budget. The other schools' students stay in the data with "
        "weight 0. Single-task baselines: the same MLP trained on each school alone (`--single-task`, "
        "30 runs), 3 seeds."
    ),
}


def run_benchmark(name: str, workdir: Path, weightings: str, seeds: int, extra: list[str],
                  single_task: bool = True) -> dict:
    out = workdir / name
    command = [sys.executable, "-m", "mtlzoo", "compare", *BENCHMARKS[name][:1], "--weightings", weightings,
               "--seeds", str(seeds), *BENCHMARKS[name][1:], *extra, *(["--single-task"] if single_task else []),
               "--out", str(out), "--overwrite"]
    shown = " ".join(["mtlzoo", *command[3:]]).replace(str(workdir), "RUN_ROOT")
    print(f"$ {shown}", flush=True)
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(command, cwd=REPO, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name}: mtlzoo compare failed with exit code {proc.returncode}")
    return {"command": shown, "wall_seconds": round(wall, 1), "out": out}



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--benchmarks", default=",".join(DEFAULT_BENCHMARKS), help=f"of {sorted(BENCHMARKS)}")
    parser.add_argument("--workdir", default="/tmp/weighting_compare", help="where the RUN_DIRs go (RUN_ROOT)")
    parser.add_argument("--quick", action="store_true", help="unitary,pcgrad, 1 seed, 1 epoch; results not copied")
    args = parser.parse_args(argv)
    os.environ.setdefault("MTLZOO_DATA_DIR", str(REPO.parent / "shared" / "data"))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    done = {}
    for name in args.benchmarks.split(","):
        if args.quick:
            extra = ["--epochs", "1"]
            done[name] = run_benchmark(name, workdir, "unitary,pcgrad", 1, extra)
        else:
            weightings, seeds, single_task = BUDGETS.get(name, (WEIGHTINGS, 3, True))
            done[name] = run_benchmark(name, workdir, weightings, seeds, [], single_task)
        print(f"{name}: {done[name]['wall_seconds']:.0f} s", flush=True)
    if args.quick:
        return 0
    for name, info in done.items():
        for suffix in ("json", "md", "png"):
            shutil.copyfile(info["out"] / f"compare.{suffix}", RESULTS / f"compare_{name}.{suffix}")
        print(f"wrote bench/results/compare_{name}.{{json,md,png}}")
    write_summary()
    return 0


def write_summary() -> None:
    """bench/weighting_compare.md from every bench/results/compare_<benchmark>.json there is."""
    from mtlzoo.evaluation.report import summary_table

    lines = [
        "# Weighting methods compared (`mtlzoo compare`)",
        "",
        "Every registered weighting method (except `static`, which needs weights) trained with 3 seeds on "
        "two benchmarks, with single-task baselines for Δm, and four of them on all 139 School tasks, by "
        "`python bench/weighting_compare.py [--benchmarks school139]` on 2 shared CPU cores. "
        "Each benchmark's full tables (summary, per task) are in "
        "`bench/results/compare_<benchmark>.md`, every number in `.json`, the plot in `.png`.",
        "",
        "A method is marked *better* (*worse*) than unitary when its mean Δm beats (trails) unitary's by more "
        "than the larger of the two standard deviations over seeds.",
        "",
        "Seconds per epoch (validation included) were measured while other jobs shared the 2 cores (load "
        "average 2-4), so they are inflated and noisy: compare them within a table only. Whole-run wall "
        "times include building each model and tracing its train step.",
    ]
    for name in BENCHMARKS:
        path = RESULTS / f"compare_{name}.json"
        if not path.exists():
            continue
        report = json.loads(path.read_text())
        command = report["command"].replace(str(Path(report["command"].split("--out ")[-1].split()[0]).parent),
                                            "RUN_ROOT")
        better = [w for w, s in report["summary"].items() if s.get("vs_unitary", {}).get("verdict") == "better"]
        worse = [w for w, s in report["summary"].items() if s.get("vs_unitary", {}).get("verdict") == "worse"]
        lines += [
            "",
            f"## {name}",
            "",
            NOTES[name],
            "",
            f"Command (RUN_ROOT: `--workdir`, default /tmp/weighting_compare): `{command}`; "
            f"wall time {report['wall_seconds'] / 60:.1f} min ({len(report['runs']) * len(report['seeds'])} "
            f"multi-task runs, {sum(len(r) for r in ((report['single_task'] or {}).get('runs') or {}).values())} "
            "single-task runs).",
            "",
            summary_table(report),
            "",
            f"Better than unitary beyond one std: {', '.join(better) or 'none'}; worse: {', '.join(worse) or 'none'}."
            if len(report["seeds"]) > 1 else "One seed: no spread, so no verdict against unitary.",
        ]
    (REPO / "bench" / "weighting_compare.md").write_text("\n".join(lines) + "\n")
    print("wrote bench/weighting_compare.md")


if __name__ == "__main__":
    sys.exit(main())
