"""The shipped MUiR recipe, ``zoo_configs/kang_muir.yaml``, on the Kang benchmark over seeds.

Trains the recipe exactly as ``mtlzoo train`` does, with its own settings (only ``data.noisy``
and ``training.seed`` change), on the clean and the noisy data, and reports the mean test RMSE
over the 30 tasks of every run, mean ± std over the seeds, against the goals (clean <= 0.05,
noisy <= 0.42, on every seed). ``bench/muir_kang.py`` is the paper's experiment without the
trainer, with 1000 generations and the single-task baseline.

A run takes 20-35 minutes of one CPU core, so each is kept as it finishes
(``bench/results/muir_kang_recipe/<variant>_seed<k>.json``) and the table is rebuilt from every
run kept: parts run side by side in separate processes.

    python bench/muir_kang_recipe.py --variants noisy --seeds 0,1
    python bench/muir_kang_recipe.py --variants clean --seeds 0,1,2,3,4
    python bench/muir_kang_recipe.py --table-only   # the table from the runs kept
    python bench/muir_kang_recipe.py --quick --seeds 0 --variants clean   # a smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MTLZOO_DATA_DIR", str(REPO.parent / "shared" / "data"))

import numpy as np  # noqa: E402

import results_io  # noqa: E402  (bench/, beside this script)
from muir_kang import GOALS, groups_pure, groups_recovered, variant_summary  # noqa: E402

RECIPE = REPO / "zoo_configs" / "kang_muir.yaml"
RESULTS = REPO / "bench" / "results"
PARTS = RESULTS / "muir_kang_recipe"


def run(variant: str, seed: int, quick: bool = False) -> dict:
    """Train the recipe on ``variant`` data with ``seed``; its test RMSE and learned alignment
    (``quick``: 2 generations and 1 epoch after them, of 5 steps each)."""
    from mtlzoo.muir import find_bank
    from mtlzoo.recipes.config import load_recipe, recipe_from_dict
    from mtlzoo.training import trainer

    raw = load_recipe(RECIPE).to_dict()
    raw["data"]["noisy"] = variant == "noisy"
    raw["training"]["seed"] = seed
    if quick:
        raw["training"].update(epochs=3, steps_per_epoch=5)
        raw["training"]["alignment_search"]["generations"] = 2
        raw["training"]["early_stopping"]["start_from_epoch"] = 2
    recipe = recipe_from_dict(raw, source=str(RECIPE))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        model = trainer.train(recipe, Path(run_dir) / "run", verbose=0)
    seconds = time.perf_counter() - started
    test = recipe.make_dataset().load("test")
    predictions = model.predict(dict(test.inputs), verbose=0, batch_size=len(test))
    rmse = {}
    for task in recipe.tasks:
        weights = np.asarray(test.weights[task.name], "float64").reshape(-1)
        errors = np.asarray(predictions[task.name], "float64").reshape(-1) - np.asarray(
            test.targets[task.name], "float64").reshape(-1)
        rmse[task.name] = float(np.sqrt(np.sum(weights * errors**2) / weights.sum()))
    psi = np.asarray(find_bank(model).incumbents())
    return {
        "variant": variant,
        "seed": seed,
        "test_rmse": float(np.mean(list(rmse.values()))),
        "task_rmse": rmse,
        "alignment": [int(k) for k in psi],
        "hypermodules_in_use": int(len(np.unique(psi))),
        "groups_recovered": groups_recovered(psi),
        "groups_pure": groups_pure(psi),
        "seconds": seconds,
    }


def report_from(runs: list[dict]) -> dict:
    variants = {variant: variant_summary(runs, variant) for variant in GOALS}
    return {"recipe": str(RECIPE.relative_to(REPO)),
            "variants": {variant: v for variant, v in variants.items() if v is not None},
            "command": "python bench/muir_kang_recipe.py --variants clean,noisy --seeds 0,1,2,3,4",
            "machine": results_io.machine()}


def markdown(report: dict) -> str:
    lines = [
        "# The kang_muir recipe over seeds",
        "",
        f"`{report['recipe']}` trained by the trainer with its own settings (only `data.noisy` and "
        "`training.seed` change); mean test RMSE over the 30 tasks per run. "
        f"Reproduce: `{report['command']}` (runs may go in parallel processes; "
        "`--table-only` rebuilds this table from the runs kept).",
        "",
        "| data | seeds | mean ± std | worst seed | goal (every seed) | met | per seed | hypermodules | "
        "no module spans two groups |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | --- | --- |",
    ]
    for variant, v in report["variants"].items():
        runs = v["runs"]
        lines.append(
            f"| {variant} | {', '.join(map(str, v['seeds']))} | {v['test_rmse']['mean']:.3f} ± "
            f"{v['test_rmse']['std']:.3f} | {v['worst']:.3f} | ≤ {v['goal']:.2f} | "
            f"{'yes' if v['every_seed_meets_goal'] else 'no'} | "
            f"{', '.join(format(r['test_rmse'], '.3f') for r in runs)} | "
            f"{', '.join(str(r['hypermodules_in_use']) for r in runs)} | "
            f"{', '.join('yes' if r['groups_pure'] else 'no' for r in runs)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default="clean,noisy")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the table from the runs kept")
    parser.add_argument("--quick", action="store_true", help="a smoke run of 3 short epochs per run; nothing kept")
    args = parser.parse_args(argv)
    if not args.table_only:
        for variant in args.variants.split(","):
            if variant not in GOALS:
                parser.error(f"--variants takes clean and/or noisy, got {variant!r}")
            for seed in (int(s) for s in args.seeds.split(",")):
                result = run(variant, seed, quick=args.quick)
                print(f"{variant} seed {seed}: test RMSE {result['test_rmse']:.4f}, "
                      f"{result['hypermodules_in_use']} hypermodules, {result['seconds']:.0f} s", flush=True)
                if not args.quick:
                    results_io.keep_run(PARTS, f"{variant}_seed{seed}", result)
    if args.quick:
        return 0
    report = report_from(results_io.kept_runs(PARTS))
    missed = [v for v, r in report["variants"].items() if not r["every_seed_meets_goal"]]
    return results_io.publish(RESULTS / "muir_kang_recipe", report, markdown(report), missed)


if __name__ == "__main__":
    sys.exit(main())
