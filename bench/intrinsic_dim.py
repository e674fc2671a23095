"""Intrinsic dimension of single-task and multi-task learning on permuted MNIST, and the cost
of training in a subspace.

After Zakerinia, Ghobadi & Lampert (2025), "Deep Multi-Task Learning Has Low Amortized Intrinsic
Dimensionality". Ten tasks, each MNIST under its own pixel permutation (``permuted_mnist``; with
``--pixel-swaps s``, s swapped pixel pairs instead of a full permutation) with its own 1000
training images; every task has the same MLP column (784 -> units -> 10).

- **Full**: each task's column trained in all its D weights (``mtlzoo.subspace.freeze`` of an
  untrained subspace model: T plain columns from one theta_0).
- **Single-task subspace** (Li et al., ICLR 2018): theta_t = theta_0 + P w_t, w_t in R^d
  (``task_dim=None``). d_int90 of a task: the smallest d whose test accuracy, averaged over the
  seeds, reaches 90 % of that task's full accuracy.
- **Multi-task subspace**: theta_t = theta_0 + P Q alpha_t, Q (l x k) shared; amortized intrinsic
  dimension AID = l k / T + k (``--multi 800x8``). Or hard sharing (``--multi hard:2000``): one
  network for all tasks, hidden layers as the column's and one head per task, theta = theta_0 + P w
  with w in R^l, AID = l / T. AID_90: the smallest AID whose accuracy averaged over tasks and seeds
  reaches 90 % of the full models' average.
- **Step cost** (``--cost-only``): seconds per training step of the multi-task subspace model
  against the same columns trained directly, side by side, with D ~ 10^5 per column (Kronecker
  expansion); written to its own results file.

Every configuration trains with Adam for at most ``--epochs`` epochs, keeping the epoch with the
best validation loss (1000 validation images per task); accuracy is on 1000 test images per task.

    python bench/intrinsic_dim.py            # 3 seeds; writes bench/results/intrinsic_dim.{json,md,png}
    python bench/intrinsic_dim.py --dataset label_permuted_mnist --out bench/results/intrinsic_dim_labels
    python bench/intrinsic_dim.py --pixel-swaps 200 --out bench/results/intrinsic_dim_swaps
    python bench/intrinsic_dim.py --cost-only --out bench/results/subspace_step_cost
    python bench/intrinsic_dim.py --quick    # 3 tasks, 100 images each, 1 seed, 2 epochs: a smoke run
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

import mtlzoo  # noqa: E402
from mtlzoo import subspace  # noqa: E402
from mtlzoo.data import load_dataset  # noqa: E402
from mtlzoo.subspace.certify import task_errors  # noqa: E402
import results_io  # noqa: E402  (bench/, beside this script)

RESULTS = REPO / "bench" / "results"


def build(dataset, units, **params) -> keras.Model:
    return mtlzoo.create_model("subspace", dataset.tasks(), dataset.input_spec(), units=units, **params)


def fit_and_score(model, data, *, epochs, learning_rate, batch_size, seed, patience, decay=False) -> dict:
    """Train on ``data["train"]`` keeping the best validation epoch; test accuracy per task.

    ``decay``: divide the learning rate by 3 whenever the validation loss has not improved for
    ``patience // 3`` epochs.
    """
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    callbacks = [keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)]
    if decay:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(factor=1 / 3, patience=max(1, patience // 3)))
    model.fit(data["train"].to_tf_dataset(batch_size, shuffle=True, seed=seed), epochs=epochs, shuffle=False,
              validation_data=data["validation"].to_tf_dataset(1024), callbacks=callbacks, verbose=0)
    return {task: 1.0 - error for task, (error, _) in task_errors(model, data["test"]).items()}


def subspace_params(spec: str) -> dict:
    """The ``subspace`` parameters a run names: ``D`` (single-task, d per task), ``LxK`` (columns,
    Q of l x k) or ``hard:L`` (one network)."""
    if spec.startswith("hard:"):
        return {"intrinsic_dim": int(spec[5:]), "task_dim": None, "sharing": "hard"}
    if "x" in spec:
        l, k = (int(x) for x in spec.split("x"))
        return {"intrinsic_dim": l, "task_dim": k}
    return {"intrinsic_dim": int(spec), "task_dim": None}


def run_config(kind, spec, dataset, data, args, seed) -> dict:
    keras.utils.set_random_seed(seed)
    if kind == "full":
        model = subspace.freeze(build(dataset, args.units, task_dim=None, intrinsic_dim=1, seed=seed))
        lr = args.full_learning_rate
    else:
        model = build(dataset, args.units, seed=seed, **subspace_params(spec))
        lr = args.learning_rate
    started = time.perf_counter()
    accuracy = fit_and_score(model, data, epochs=args.epochs, learning_rate=lr, batch_size=args.batch_size, seed=seed,
                             patience=args.patience)
    return {"accuracy": accuracy, "seconds": time.perf_counter() - started}


def step_cost(dataset, data, args) -> dict:
    """Seconds per step, subspace against plain, at D ~ 10^5 weights per column."""
    keras.utils.set_random_seed(0)
    units = (args.cost_units,)
    model = build(dataset, units, intrinsic_dim=args.cost_dim[0], task_dim=args.cost_dim[1])
    plain = subspace.freeze(model)
    size = subspace.find_columns(model).expansion.size
    runs = {}
    for name, m in (("plain", plain), ("subspace", model)):
        m.compile(optimizer=keras.optimizers.Adam(1e-3))
        runs[name] = (m, lambda: data["train"].to_tf_dataset(args.batch_size, shuffle=True, repeat=True))
    times = results_io.step_times(runs, steps=args.cost_steps, rounds=args.cost_rounds)
    wall, cpu = ({name: t[clock] for name, t in times.items()} for clock in ("wall", "cpu"))
    return {"column_weights": size, "tasks": len(dataset.tasks()), "units": list(units), "intrinsic_dim": args.cost_dim[0],
            "task_dim": args.cost_dim[1], "rounds": args.cost_rounds, "steps": args.cost_steps,
            "seconds_per_step": wall, "cpu_seconds_per_step": cpu,
            "ratio": wall["subspace"] / wall["plain"], "cpu_ratio": cpu["subspace"] / cpu["plain"]}


def first_reaching(points, target):
    """The smallest x whose mean accuracy reaches ``target`` (points: [(x, mean)]), or None."""
    reached = [x for x, mean in sorted(points) if mean >= target]
    return reached[0] if reached else None


def crossing(points, target):
    """Where the accuracy curve first reaches ``target``, interpolated linearly in log x between the
    grid point that first reaches it and the one before (points: [(x, mean)]); None if none does.

    ``first_reaching`` is an upper bound that depends on the grid; this estimate lets a coarse grid
    compare two curves. A curve that reaches the target at its first point gives that point.
    """
    points = sorted(points)
    for i, (x, mean) in enumerate(points):
        if mean >= target:
            if i == 0:
                return float(x)
            x0, mean0 = points[i - 1]
            fraction = (target - mean0) / (mean - mean0)
            return float(np.exp(np.log(x0) + fraction * (np.log(x) - np.log(x0))))
    return None


def summarise(results, tasks, seeds) -> dict:
    full = {t: float(np.mean([results["full"][s]["accuracy"][t] for s in seeds])) for t in tasks}
    full_mean = float(np.mean(list(full.values())))
    single_curve = {}
    for d, by_seed in results["single"].items():
        per_task = {t: [by_seed[s]["accuracy"][t] for s in seeds] for t in tasks}
        single_curve[d] = {t: float(np.mean(v)) for t, v in per_task.items()}
    single_points = {t: [(int(d), c[t]) for d, c in single_curve.items()] for t in tasks}
    d_int90 = {t: first_reaching(single_points[t], 0.9 * full[t]) for t in tasks}
    d_int90_interpolated = {t: crossing(single_points[t], 0.9 * full[t]) for t in tasks}
    multi_curve = {}
    for key, by_seed in results["multi"].items():
        params = subspace_params(key)
        l, k = params["intrinsic_dim"], params["task_dim"]
        means = [float(np.mean([by_seed[s]["accuracy"][t] for t in tasks])) for s in seeds]
        multi_curve[key] = {"l": l, "k": k, "aid": l / len(tasks) if k is None else l * k / len(tasks) + k,
                            "mean": float(np.mean(means)), "std": float(np.std(means))}
    multi_points = [(c["aid"], c["mean"]) for c in multi_curve.values()]

    def mean_over_tasks(per_task):
        return None if None in per_task.values() else float(np.mean(list(per_task.values())))

    return {"full": full, "full_mean": full_mean, "single_curve": single_curve, "d_int90": d_int90,
            "mean_d_int90": mean_over_tasks(d_int90), "multi_curve": multi_curve,
            "aid90": first_reaching(multi_points, 0.9 * full_mean),
            "d_int90_interpolated": d_int90_interpolated,
            "mean_d_int90_interpolated": mean_over_tasks(d_int90_interpolated),
            "aid90_interpolated": crossing(multi_points, 0.9 * full_mean)}


def cost_markdown(cost, batch_size, command) -> str:
    t = cost["seconds_per_step"]
    return "\n".join([
        "# Cost of a training step in a random subspace", "",
        f"{cost['tasks']} columns of {cost['column_weights']:,} weights (MLP 784 -> {cost['units']} -> 10), batch "
        f"{batch_size}, l = {cost['intrinsic_dim']}, k = {cost['task_dim']}, Kronecker expansion: subspace "
        f"{1000 * t['subspace']:.2f} ms against plain {1000 * t['plain']:.2f} ms per step (the same columns, every "
        f"weight trained), ratio {cost['ratio']:.2f}; in CPU time {cost['cpu_ratio']:.2f} (medians of "
        f"{cost['rounds']} alternating rounds of {cost['steps']} steps). "
        f"Reproduce: `{command}`.", ""])


def variant(config) -> str:
    """What sets the run's task set apart from the default one, for titles ("" if nothing)."""
    swaps, task_seed = config.get("pixel_swaps"), config.get("task_seed")
    return ((f", {swaps} pixel swaps per task" if swaps is not None else "")
            + (f", task set {task_seed}" if task_seed else ""))


def markdown(report) -> str:
    s, c = report["summary"], report["config"]
    lines = [
        f"# Intrinsic dimension on {c['dataset']}{variant(c)}", "",
        f"{len(c['tasks'])} tasks x {c['examples_per_task']} training images, MLP column 784 -> {c['units']} -> 10 "
        f"({s['column_weights']:,} weights), seeds {c['seeds']}, Kronecker expansion, Adam, best validation epoch of "
        f"at most {c['epochs']} (patience {c['patience']}). Reproduce: `{c['command']}`.", "",
        f"Full models: mean test accuracy {100 * s['full_mean']:.2f} %; 90 % of it: {90 * s['full_mean']:.2f} %.", "",
        "## Single-task subspace training (theta_t = theta_0 + P w_t)", "",
        "| d | " + " | ".join(c["tasks"]) + " | mean |", "| ---: |" + " ---: |" * (len(c["tasks"]) + 1)]
    for d, curve in sorted(s["single_curve"].items(), key=lambda kv: int(kv[0])):
        values = [100 * curve[t] for t in c["tasks"]]
        lines.append(f"| {d} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {np.mean(values):.1f} |")
    lines += ["", "d_int90 per task: " + ", ".join(f"{t} {v}" for t, v in s["d_int90"].items())
              + f"; mean {s['mean_d_int90']}.", "",
              "## Multi-task subspace training", "",
              "Columns: theta_t = theta_0 + P Q alpha_t, AID = lk/T + k. Hard sharing (k = -): one network, "
              "theta = theta_0 + P w, AID = l/T.", "",
              "| l | k | AID | mean test acc % (± std over seeds) |", "| ---: | ---: | ---: | ---: |"]
    for curve in sorted(s["multi_curve"].values(), key=lambda c: c["aid"]):
        accuracy = f"{100 * curve['mean']:.2f} ± {100 * curve['std']:.2f}"
        lines.append(f"| {curve['l']} | {curve['k'] or '-'} | {curve['aid']:.1f} | {accuracy} |")
    lines += ["", f"AID_90 = {s['aid90']}; mean single-task d_int90 = {s['mean_d_int90']}"
              + ratio(s["aid90"], s["mean_d_int90"]) + ".", "",
              "Between the grid points (the 90 % line crossed by interpolating linearly in log dimension): "
              f"AID_90 ~ {rounded(s['aid90_interpolated'])}; mean single-task d_int90 ~ "
              f"{rounded(s['mean_d_int90_interpolated'])}"
              + ratio(s["aid90_interpolated"], s["mean_d_int90_interpolated"]) + ".", ""]
    return "\n".join(lines)


def ratio(aid, d_int) -> str:
    return f"; ratio {aid / d_int:.3f}" if aid and d_int else ""


def rounded(x) -> str:
    return "not reached" if x is None else f"{x:.0f}"


def plot(report, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, tasks, seeds = report["summary"], report["config"]["tasks"], report["config"]["seeds"]
    figure, axis = plt.subplots(figsize=(6, 4))
    dims = sorted(int(d) for d in report["results"]["single"])
    per_seed = [[np.mean([report["results"]["single"][str(d)][str(s_)]["accuracy"][t] for t in tasks]) for s_ in seeds]
                for d in dims]
    axis.errorbar(dims, [100 * np.mean(v) for v in per_seed], yerr=[100 * np.std(v) for v in per_seed],
                  marker="o", capsize=3, label="single-task: d per task")
    # One line per k: joining runs of different k in AID order would draw a zigzag that means nothing.
    for k in sorted({c["k"] for c in s["multi_curve"].values()}, key=lambda k: (k is None, k or 0)):
        multi = sorted((c for c in s["multi_curve"].values() if c["k"] == k), key=lambda c: c["aid"])
        label = "multi-task, hard sharing: AID = l/T" if k is None else f"multi-task columns, k = {k}: AID = lk/T + k"
        axis.errorbar([c["aid"] for c in multi], [100 * c["mean"] for c in multi], yerr=[100 * c["std"] for c in multi],
                      marker="^" if k is None else "s", capsize=3, label=label)
    axis.axhline(90 * s["full_mean"], color="grey", linestyle="--", label="90 % of full")
    axis.set_xscale("log")
    axis.set_xlabel("free parameters per task")
    axis.set_ylabel("mean test accuracy %")
    axis.set_title(f"{report['config']['dataset']}, {len(tasks)} tasks{variant(report['config'])}")
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 tasks, 100 images each, 1 seed, 2 epochs; nothing written")
    parser.add_argument("--dataset", default="permuted_mnist")
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--task-seed", type=int, default=0, help="seed of the task set (permutations and images)")
    parser.add_argument("--pixel-swaps", type=int, default=None,
                        help="permuted_mnist only: each task swaps this many random pixel pairs instead of "
                             "permuting all 784 pixels (Amit & Meir's shuffled-pixels tasks)")
    parser.add_argument("--examples-per-task", type=int, default=1000)
    parser.add_argument("--heldout-per-task", type=int, default=1000, help="validation and test images per task")
    parser.add_argument("--units", type=int, nargs="+", default=[64])
    parser.add_argument("--dims", default="200,400,800", help="single-task subspace dimensions d")
    parser.add_argument("--multi", default="400x4,800x8,1600x8",
                        help="multi-task runs: LxK (columns, l x k) or hard:L (one network)")
    parser.add_argument("--patience", type=int, default=8, help="early-stopping patience, in epochs")
    parser.add_argument("--cost-only", action="store_true", help="measure the step cost only")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-2, help="of the subspace coordinates")
    parser.add_argument("--full-learning-rate", type=float, default=1e-3)
    parser.add_argument("--cost-units", type=int, default=128, help="column width for the step-cost run (D ~ 10^5)")
    parser.add_argument("--cost-dim", default="1000x16", help="l x k of the step-cost run")
    parser.add_argument("--cost-steps", type=int, default=200, help="timed steps per round")
    parser.add_argument("--cost-rounds", type=int, default=9, help="alternating timing rounds; the median is kept")
    parser.add_argument("--out", default=str(RESULTS / "intrinsic_dim"))
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.examples_per_task, args.heldout_per_task, args.seeds, args.epochs = 3, 100, 30, "0", 2
        args.dims, args.multi, args.cost_units, args.cost_steps = "20,80", "40x4,hard:60", 16, 5
    args.units = tuple(args.units)
    args.cost_dim = tuple(int(x) for x in args.cost_dim.split("x"))
    seeds = [int(s) for s in args.seeds.split(",")]
    dataset = load_dataset(args.dataset, num_tasks=args.tasks, examples_per_task=args.examples_per_task,
                           heldout_per_task=args.heldout_per_task, seed=args.task_seed, pixel_swaps=args.pixel_swaps)
    data = {split: dataset.load(split) for split in ("train", "validation", "test")}
    tasks = [t.name for t in dataset.tasks()]
    command = " ".join(["python bench/intrinsic_dim.py", *(argv or sys.argv[1:])])
    if args.cost_only:
        cost = step_cost(dataset, data, args)
        text = cost_markdown(cost, args.batch_size, command)
        print(text)
        if not args.quick:
            results_io.write(args.out, {"machine": results_io.machine(), "batch_size": args.batch_size,
                                        "command": command, "step_cost": cost}, text)
        return 0
    plan = [("full", "")] + [("single", d) for d in args.dims.split(",")] + [("multi", m) for m in args.multi.split(",")]
    results = {"full": {}, "single": {}, "multi": {}}
    for group, key in plan:
        for seed in seeds:
            outcome = run_config(group, key, dataset, data, args, seed)
            target = results[group] if group == "full" else results[group].setdefault(key, {})
            target[str(seed)] = outcome
            mean = np.mean(list(outcome["accuracy"].values()))
            print(f"{group} {key} seed={seed}: mean test accuracy {100 * mean:.2f} % ({outcome['seconds']:.0f} s)",
                  flush=True)
    summary = summarise({"full": results["full"], "single": results["single"], "multi": results["multi"]},
                        tasks, [str(s) for s in seeds])
    summary["column_weights"] = subspace.find_columns(build(dataset, args.units, intrinsic_dim=1)).expansion.size
    report = {"config": {"dataset": args.dataset, "pixel_swaps": args.pixel_swaps, "task_seed": args.task_seed,
                         "tasks": tasks, "examples_per_task": args.examples_per_task,
                         "units": list(args.units), "seeds": seeds, "epochs": args.epochs, "patience": args.patience,
                         "batch_size": args.batch_size,
                         "command": command,
                         "learning_rate": args.learning_rate, "full_learning_rate": args.full_learning_rate},
              "machine": results_io.machine(), "results": results, "summary": summary}
    text = markdown(report)
    print(text)
    if not args.quick:
        results_io.write(args.out, report, text)
        plot(report, Path(args.out).with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
