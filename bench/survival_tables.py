"""Deep survival models against Cox proportional hazards on the tables of scikit-survival.

For each fold of a stratified k-fold split (``mtlzoo.data.survival_tables``) and each task of
the dataset, three models are scored by Harrell's C-index on the held-out fold:

- ``coxph``: scikit-survival's ``CoxPHSurvivalAnalysis`` (Efron ties) fitted on the training
  and validation patients of that task;
- ``single``: a ``hard_sharing`` network with this task alone (Cox loss, Efron ties);
- ``multi`` (datasets with two or more tasks): the same network with every task, sharing the trunk.

The networks train full-batch (every risk set is the whole training split) with Adam, keep
the weights of the epoch with the lowest validation loss, and are seeded by ``--seeds``: each
deep model's fold score is the mean over those seeds. Paired differences are taken per fold.

    python bench/survival_tables.py --dataset actg320
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_io  # noqa: E402

import keras  # noqa: E402

import mtlzoo  # noqa: E402
from mtlzoo.data import load_dataset  # noqa: E402
from mtlzoo.survival import concordance_index  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def fit_network(dataset, tasks, args, seed):
    """Train one network on ``tasks``; return ``{task: test C-index}``."""
    data = {split: dataset.load(split).select(tasks) for split in ("train", "validation", "test")}
    keras.utils.set_random_seed(seed)
    model = mtlzoo.create_model("hard_sharing", [t for t in dataset.tasks() if t.name in tasks],
                                dataset.input_spec(), shared_units=args.units, dropout=args.dropout)
    model.compile(optimizer=keras.optimizers.AdamW(args.learning_rate, weight_decay=args.weight_decay))
    train, validation = data["train"], data["validation"]
    model.fit(dict(train.inputs), dict(train.targets), batch_size=len(train), epochs=args.epochs, verbose=0,
              validation_data=(dict(validation.inputs), dict(validation.targets)),
              callbacks=[keras.callbacks.EarlyStopping(patience=args.patience, restore_best_weights=True)])
    risk = model.predict(dict(data["test"].inputs), batch_size=4096, verbose=0)
    target = data["test"].targets
    return {t: concordance_index(target[t][:, 0], target[t][:, 1], risk[t][:, 0]) for t in tasks}


def fit_coxph(dataset, task):
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    parts = [dataset.frame(split) for split in ("train", "validation")]
    x = np.concatenate([p[0].to_numpy() for p in parts])
    y = np.concatenate([p[1][task] for p in parts])
    model = CoxPHSurvivalAnalysis(ties="efron", alpha=1e-4).fit(x, y)
    x_test, y_test = dataset.frame("test")
    return concordance_index(y_test[task]["time"], y_test[task]["event"], model.predict(x_test.to_numpy()))


def summarise(folds: list[dict], tasks: list[str], models: list[str]) -> dict:
    summary = {}
    for task in tasks:
        scores = {m: np.array([f[m][task] for f in folds]) for m in models}
        row = {m: {"mean": float(v.mean()), "std": float(v.std(ddof=1))} for m, v in scores.items()}
        for a, b in (("multi", "coxph"), ("multi", "single"), ("single", "coxph")):
            if a in scores and b in scores:
                diff = scores[a] - scores[b]
                row[f"{a}-{b}"] = {"mean": float(diff.mean()), "std": float(diff.std(ddof=1))}
        summary[task] = row
    return summary


def markdown(report: dict) -> str:
    config, summary = report["config"], report["summary"]
    models = config["models"]
    pairs = [k for k in next(iter(summary.values())) if "-" in k]
    lines = [f"# {config['dataset']}: deep survival models vs CoxPH ({config['folds']}-fold CV)", "",
             f"Test C-index, mean ± std over folds; deep models averaged over seeds {config['seeds']} "
             "within each fold; paired differences per fold.", "",
             f"`{config['command']}`", "",
             "| task | " + " | ".join(models) + " | " + " | ".join(pairs) + " |",
             "|---" * (1 + len(models) + len(pairs)) + "|"]
    for task, row in summary.items():
        cells = [f"{row[m]['mean']:.3f} ± {row[m]['std']:.3f}" for m in models]
        cells += [f"{row[p]['mean']:+.3f} ± {row[p]['std']:.3f}" for p in pairs]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += ["", f"{report['seconds']:.0f} s on {report['machine']['cpus']} CPUs.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="actg320", help="actg320, gbsg2, whas500 or flchain")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--units", type=int, nargs="+", default=[16])
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--patience", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--quick", action="store_true", help="2 folds, 1 seed, 5 epochs; nothing written")
    parser.add_argument("--out", default=None, help="results path without suffix (default: results/survival_<dataset>)")
    args = parser.parse_args(argv)
    if args.quick:
        args.folds, args.seeds, args.epochs = 2, "0", 5
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    folds = []
    for fold in range(args.folds):
        dataset = load_dataset(args.dataset, folds=args.folds, fold=fold)
        tasks = [t.name for t in dataset.tasks()]
        scores = {"coxph": {t: fit_coxph(dataset, t) for t in tasks}}
        scores["single"] = {t: float(np.mean([fit_network(dataset, [t], args, s)[t] for s in seeds])) for t in tasks}
        if len(tasks) > 1:
            runs = [fit_network(dataset, tasks, args, s) for s in seeds]
            scores["multi"] = {t: float(np.mean([r[t] for r in runs])) for t in tasks}
        print(f"fold {fold}: " + "; ".join(f"{m} " + ", ".join(f"{t} {v:.3f}" for t, v in s.items())
                                           for m, s in scores.items()), flush=True)
        folds.append(scores)
    models = list(folds[0])
    report = {"config": {"dataset": args.dataset, "folds": args.folds, "seeds": seeds, "models": models,
                         "units": args.units, "dropout": args.dropout, "epochs": args.epochs,
                         "patience": args.patience, "learning_rate": args.learning_rate,
                         "weight_decay": args.weight_decay,
                         "command": " ".join(["python bench/survival_tables.py", *(argv or sys.argv[1:])])},
              "machine": results_io.machine(), "folds": folds, "summary": summarise(folds, tasks, models),
              "seconds": time.perf_counter() - started}
    text = markdown(report)
    print(text)
    if not args.quick:
        results_io.write(args.out or RESULTS / f"survival_{args.dataset}", report, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
