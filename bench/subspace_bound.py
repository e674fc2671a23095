"""Generalisation bounds of multi-task subspace models against single-task ones, on the same data.

After Zakerinia, Ghobadi & Lampert (2025). Every configuration is trained as in
``bench/intrinsic_dim.py`` (Adam, best validation epoch), then ``mtlzoo.subspace.certify``
quantises its free parameters to a learned codebook, fine-tunes, arithmetic-codes them and
bounds the average test error over the tasks (the Occam bound with the prefix-code prior,
n = all tasks' training examples, confidence 95 %; formula in ``mtlzoo.subspace.bounds``).

- **Multi-task** (``--multi``): ``LxK`` columns (theta_t = theta_0 + P Q alpha_t) or ``hard:L``
  (one network, theta = theta_0 + P w): one message, one bound on the average error.
- **Single-task** (``--single``): T independent subspace models, theta_t = theta_0 + P w_t with
  w_t in R^d; each task's w_t coded alone and bounded on its own examples at confidence
  delta / T, so that the mean of the T bounds bounds the average error with confidence 1 - delta.

    python bench/subspace_bound.py           # writes bench/results/subspace_bound.{json,md}
    python bench/subspace_bound.py --quick   # 3 tasks, 100 images each, 1 seed: a smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MTLZOO_DATA_DIR", str(REPO.parent / "shared" / "data"))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from mtlzoo.data import load_dataset  # noqa: E402
from mtlzoo.subspace.bounds import search_bits  # noqa: E402
from mtlzoo.subspace.certify import certify  # noqa: E402
import intrinsic_dim  # noqa: E402  (bench/, beside this script: the same build and training)
import results_io  # noqa: E402

RESULTS = REPO / "bench" / "results"


def train(dataset, data, spec, args, seed) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = intrinsic_dim.build(dataset, args.units, seed=seed, **intrinsic_dim.subspace_params(spec))
    intrinsic_dim.fit_and_score(model, data, epochs=args.epochs, learning_rate=args.learning_rate,
                                batch_size=args.batch_size, seed=seed, patience=args.patience, decay=args.decay)
    return model


def run(dataset, data, spec, args, seed) -> dict:
    started = time.perf_counter()
    model = train(dataset, data, spec, args, seed)
    report = certify(model, data["train"], data["test"], levels=args.levels, epochs=args.finetune_epochs,
                     learning_rate=args.finetune_learning_rate, searched=args.searched, seed=seed)
    row = {"bound": report["bound"], "train_error": report["train_error"], "test_error": report["test_error"],
           "bits": report["bits"]["total"], "free_parameters": report["free_parameters"],
           "seconds": time.perf_counter() - started}
    if "single_task" in report:
        singles = [r["bound"] for r in report["single_task"].values()]
        row.update(single_task_mean_bound=float(np.mean(singles)), single_task_min_bound=float(np.min(singles)),
                   single_task_bits=float(np.mean([r["bits"] for r in report["single_task"].values()])))
    print(f"{spec} seed={seed}: bound {row['bound']:.4f}, test error {row['test_error']:.4f}, "
          f"{row['bits']} bits" + (f", single-task mean bound {row['single_task_mean_bound']:.4f}"
                                   if "single_task_mean_bound" in row else "")
          + f" ({row['seconds']:.0f} s)", flush=True)
    return row


def mean_std(values) -> str:
    return f"{100 * np.mean(values):.2f} ± {100 * np.std(values):.2f}"


def markdown(report) -> str:
    c, results = report["config"], report["results"]
    seeds = [str(s) for s in c["seeds"]]
    lines = [
        f"# Generalisation bounds on {c['dataset']}", "",
        f"{len(c['tasks'])} tasks x {c['examples_per_task']} training images (n = "
        f"{len(c['tasks']) * c['examples_per_task']:,}), MLP 784 -> {c['units']} -> 10, Kronecker expansion; "
        f"codebook of {c['levels']} levels, {c['finetune_epochs']} epochs of quantisation-aware fine-tuning; "
        f"delta = 0.05; seeds {c['seeds']}"
        + (f"; the message also names this configuration among the {c['searched']} bounded on this training set "
           f"({search_bits(c['searched'])} bits, a union bound over them)" if c.get("searched", 1) > 1 else "")
        + f". Reproduce: `{c['command']}`.", "",
        "Bound on the average test error over the tasks, mean ± std over seeds (percent). Multi-task: one "
        "message for all tasks. Single-task: the mean of the T per-task bounds, each at delta / T.", "",
        "| model | free parameters | bits | train error | test error | bound |",
        "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for spec, by_seed in results.items():
        rows = [by_seed[s] for s in seeds]
        free = rows[0]["free_parameters"]
        total = free["shared"] + free["per_task"] * free["tasks"]
        single = "single_task_mean_bound" in rows[0]
        name = (f"single-task, d = {spec}" if single else
                f"hard sharing, l = {spec[5:]}" if spec.startswith("hard:") else f"columns, l x k = {spec}")
        bound = [r["single_task_mean_bound"] if single else r["bound"] for r in rows]
        bits = np.mean([r["single_task_bits"] * free["tasks"] if single else r["bits"] for r in rows])
        lines.append(f"| {name} | {total:,} | {bits:,.0f} | {mean_std([r['train_error'] for r in rows])} | "
                     f"{mean_std([r['test_error'] for r in rows])} | {mean_std(bound)} |")
    summary = report["summary"]
    lines += ["", f"Best multi-task bound: {summary['best_multi']} at {100 * summary['best_multi_bound']:.2f} %; "
                  f"best single-task bound: {summary['best_single']} at {100 * summary['best_single_bound']:.2f} %; "
                  f"paired difference (multi - single, per seed) {mean_std(summary['paired_difference'])} points.", ""]
    return "\n".join(lines)


def summarise(results, seeds) -> dict:
    def bounds(spec):
        rows = [results[spec][s] for s in seeds]
        return [r.get("single_task_mean_bound", r["bound"]) for r in rows]

    multi = [s for s in results if "single_task_mean_bound" not in results[s][seeds[0]]]
    single = [s for s in results if s not in multi]
    best_multi = min(multi, key=lambda s: np.mean(bounds(s)))
    best_single = min(single, key=lambda s: np.mean(bounds(s)))
    return {"best_multi": best_multi, "best_multi_bound": float(np.mean(bounds(best_multi))),
            "best_single": best_single, "best_single_bound": float(np.mean(bounds(best_single))),
            "paired_difference": [float(a - b) for a, b in zip(bounds(best_multi), bounds(best_single))]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 tasks, 100 images each, 1 seed, 2 epochs; nothing written")
    parser.add_argument("--dataset", default="label_permuted_mnist")
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--examples-per-task", type=int, default=5000)
    parser.add_argument("--heldout-per-task", type=int, default=1000, help="validation and test images per task")
    parser.add_argument("--units", type=int, nargs="+", default=[64])
    parser.add_argument("--multi", default="hard:1000", help="LxK (columns) or hard:L (one network), comma-separated")
    parser.add_argument("--single", default="200,400", help="single-task subspace dimensions d, comma-separated")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--decay", action="store_true", help="divide the learning rate by 3 on validation plateaus")
    parser.add_argument("--levels", type=int, default=8)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-learning-rate", type=float, default=1e-3)
    parser.add_argument("--searched", type=int, default=1,
                        help="configurations bounded on this training set before choosing these (certify's searched)")
    parser.add_argument("--out", default=str(RESULTS / "subspace_bound"))
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.examples_per_task, args.heldout_per_task, args.seeds, args.epochs = 3, 100, 30, "0", 2
        args.multi, args.single, args.finetune_epochs = "hard:60,40x4", "40", 1
    args.units = tuple(args.units)
    seeds = [str(int(s)) for s in args.seeds.split(",")]
    dataset = load_dataset(args.dataset, num_tasks=args.tasks, examples_per_task=args.examples_per_task,
                           heldout_per_task=args.heldout_per_task)
    data = {split: dataset.load(split) for split in ("train", "validation", "test")}
    specs = args.multi.split(",") + args.single.split(",")
    results = {spec: {seed: run(dataset, data, spec, args, int(seed)) for seed in seeds} for spec in specs}
    report = {"config": {"dataset": args.dataset, "tasks": [t.name for t in dataset.tasks()],
                         "examples_per_task": args.examples_per_task, "units": list(args.units),
                         "seeds": [int(s) for s in seeds], "epochs": args.epochs, "patience": args.patience,
                         "learning_rate": args.learning_rate, "decay": args.decay, "levels": args.levels,
                         "finetune_epochs": args.finetune_epochs, "finetune_learning_rate": args.finetune_learning_rate,
                         "searched": args.searched,
                         "command": " ".join(["python bench/subspace_bound.py", *(argv or sys.argv[1:])])},
              "machine": results_io.machine(), "results": results, "summary": summarise(results, seeds)}
    text = markdown(report)
    print(text)
    if not args.quick:
        results_io.write(args.out, report, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
