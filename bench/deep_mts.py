"""DeepMTS on generated PET/CT tumours: Dice, C-index against the oracle, radiomics fusion, step cost.

For each seed (the data and the network), ``deep_mts`` trains on ``tumour_survival`` (segmentation
+ Cox survival, equal weights), keeps the weights of the epoch with the lowest validation loss,
and is scored on the test split: Dice and IoU of the predicted masks, Harrell's C-index of the
deep risk, of the true log hazard (the oracle), and of the radiomics-enhanced risk
(``mtlzoo.radiomics.RadiomicsCoxFusion`` on [deep risk, features of the predicted region of the
PET], fitted on the validation split, which the network never trained on).

The step cost compares, side by side in alternating rounds, one training step of ``deep_mts``
with both tasks and of the same U-Net with the segmentation task alone: with TensorFlow's
default threads (wall clock and this process's CPU time), and again in a child process limited to
one thread, where CPU time is the work itself. With two threads, CPU time also counts the
thread pool's waiting between ops, which grows with the number of small ops the survival branch
adds (the U-Net alone: ~430 ms of CPU a step on two threads, ~390 ms on one).

    python bench/deep_mts.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_io  # noqa: E402

import keras  # noqa: E402

import mtlzoo  # noqa: E402
from mtlzoo import radiomics  # noqa: E402
from mtlzoo.architectures.deep_mts import DENSE_RESOLUTIONS  # noqa: E402
from mtlzoo.data import load_dataset  # noqa: E402
from mtlzoo.evaluation.metrics import evaluate  # noqa: E402
from mtlzoo.survival import concordance_index  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def architecture_params(args) -> dict:
    return {"levels": args.levels, "filters": args.filters, "dense_growth": args.dense_growth,
            "dense_layers": args.dense_layers, "dense_resolution": args.dense_resolution, "dropout": args.dropout}


def run(args, seed: int) -> dict:
    dataset = load_dataset("tumour_survival", seed=seed, size=args.size, num_train=args.train,
                           num_validation=args.validation, num_test=args.test)
    data = {split: dataset.load(split) for split in ("train", "validation", "test")}
    keras.utils.set_random_seed(seed)
    model = mtlzoo.create_model("deep_mts", dataset.tasks(), dataset.input_spec(), **architecture_params(args))
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
    train, validation = data["train"], data["validation"]
    started = time.perf_counter()
    model.fit(train.to_tf_dataset(args.batch_size, shuffle=True, seed=seed), epochs=args.epochs, verbose=0,
              validation_data=validation.to_tf_dataset(args.batch_size),
              callbacks=[keras.callbacks.EarlyStopping(patience=args.patience, restore_best_weights=True),
                         keras.callbacks.ReduceLROnPlateau(factor=0.3, patience=max(2, args.patience // 2))])
    seconds = time.perf_counter() - started
    scores = evaluate(model, data["test"])
    answers = {split: model.predict(dict(data[split].inputs), batch_size=64, verbose=0) for split in ("validation", "test")}
    features = {split: radiomics.feature_table(data[split].inputs["pet"], answers[split]["tumour"] > 0)
                for split in answers}
    target = {split: data[split].targets["survival"] for split in answers}
    fusion = radiomics.RadiomicsCoxFusion(top_k=args.top_k).fit(
        answers["validation"]["survival"][:, 0], features["validation"], target["validation"][:, 0],
        target["validation"][:, 1])
    fused = fusion.predict(answers["test"]["survival"][:, 0], features["test"])
    time_, event = target["test"][:, 0], target["test"][:, 1]
    result = {"dice": scores["tumour"]["dice"], "iou": scores["tumour"]["iou"],
              "c_index": scores["survival"]["c_index"],
              "c_index_interval": [scores["survival"]["c_index_low"], scores["survival"]["c_index_high"]],
              "oracle_c_index": concordance_index(time_, event, dataset.oracle_risk("test")),
              "fused_c_index": concordance_index(time_, event, fused), "fusion_features": fusion.selected_names,
              "train_seconds": seconds}
    print(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items() if isinstance(v, float)), flush=True)
    return result


def step_cost(args) -> dict:
    """Median seconds per training step of deep_mts with and without the survival task."""
    import tensorflow as tf

    dataset = load_dataset("tumour_survival", size=args.size, num_train=args.batch_size * 4, num_validation=2,
                           num_test=2)
    data = dataset.load("train")
    runs = {}
    for name, tasks in (("deep_mts", dataset.tasks()), ("unet_segmentation_only", dataset.tasks()[:1])):
        keras.utils.set_random_seed(0)
        model = mtlzoo.create_model("deep_mts", tasks, dataset.input_spec(), **architecture_params(args))
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
        arrays = data.select([t.name for t in tasks])
        runs[name] = (model, lambda a=arrays: a.to_tf_dataset(args.batch_size, shuffle=True, repeat=True))
    del tf
    times = results_io.step_times(runs, args.cost_steps, rounds=args.cost_rounds)
    seconds = {name: t["wall"] for name, t in times.items()}
    cpu = {name: t["cpu"] for name, t in times.items()}
    return {"seconds_per_step": seconds, "cpu_seconds_per_step": cpu,
            "ratio": seconds["deep_mts"] / seconds["unet_segmentation_only"],
            "cpu_ratio": cpu["deep_mts"] / cpu["unet_segmentation_only"],
            "batch_size": args.batch_size, "rounds": args.cost_rounds, "steps": args.cost_steps,
            "threads": args.cost_threads or "default"}


def results_path(out: str, cost_only: bool) -> str:
    """Where a run writes its report (``.json`` and ``.md``): a cost-only run beside the full one."""
    return out + ("_cost" if cost_only else "")


def one_thread_cost(argv: list[str]) -> dict:
    """``step_cost`` measured in a child process limited to one thread (TensorFlow fixes its
    thread pools when it starts, so this process, having trained, cannot)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "cost")
        subprocess.run([sys.executable, __file__, *argv, "--cost-only", "--cost-threads", "1", "--out", out],
                       check=True)
        return json.loads(Path(results_path(out, True) + ".json").read_text())["cost"]


def summarise(runs: dict) -> dict:
    keys = ["dice", "iou", "c_index", "oracle_c_index", "fused_c_index"]
    values = {k: np.array([r[k] for r in runs.values()]) for k in keys}
    summary = {k: {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
               for k, v in values.items()}
    for name, (a, b) in {"oracle_minus_deep": ("oracle_c_index", "c_index"),
                         "fused_minus_deep": ("fused_c_index", "c_index")}.items():
        diff = values[a] - values[b]
        summary[name] = {"mean": float(diff.mean()), "std": float(diff.std(ddof=1)) if len(diff) > 1 else 0.0}
    return summary


def markdown(report: dict) -> str:
    config, summary = report["config"], report["summary"]
    cell = lambda s: f"{s['mean']:.3f} ± {s['std']:.3f}"  # noqa: E731
    lines = ["# DeepMTS on generated PET/CT tumours", "",
             f"`{config['command']}`", "",
             f"{config['size']}x{config['size']} images, {config['train']} training / {config['validation']} "
             f"validation / {config['test']} test examples per seed; DenseNet at {config['dense_resolution']} "
             f"resolution; seeds {config['seeds']} (data and network); mean ± std over seeds; differences paired per seed.", "",
             "| Dice | IoU | deep C-index | oracle C-index | oracle − deep | radiomics-fused C-index | fused − deep |",
             "|---|---|---|---|---|---|---|",
             "| " + " | ".join(cell(summary[k]) for k in ("dice", "iou", "c_index", "oracle_c_index")) + " | "
             + f"{summary['oracle_minus_deep']['mean']:+.3f} ± {summary['oracle_minus_deep']['std']:.3f} | "
             + cell(summary["fused_c_index"]) + " | "
             + f"{summary['fused_minus_deep']['mean']:+.3f} ± {summary['fused_minus_deep']['std']:.3f} |", "",
             "| seed | Dice | deep C-index (95 % bootstrap) | oracle | fused | fusion features |", "|---|---|---|---|---|---|"]
    for seed, r in report["runs"].items():
        low, high = r["c_index_interval"]
        lines.append(f"| {seed} | {r['dice']:.3f} | {r['c_index']:.3f} ({low:.3f}–{high:.3f}) | "
                     f"{r['oracle_c_index']:.3f} | {r['fused_c_index']:.3f} | {', '.join(r['fusion_features'])} |")
    if "cost" in report:
        lines += ["", cost_markdown(report["cost"])]
    lines += ["", f"{report['seconds']:.0f} s on {report['machine']['cpus']} CPUs.", ""]
    return "\n".join(lines)


def cost_markdown(cost: dict) -> str:
    def ms(times, name):
        return f"{times[name] * 1e3:.0f}"

    def measured(c):
        wall, cpu = c["seconds_per_step"], c["cpu_seconds_per_step"]
        return (f"wall clock {ms(wall, 'deep_mts')} vs {ms(wall, 'unet_segmentation_only')} ms, "
                f"**{c['ratio']:.2f}×**; CPU time {ms(cpu, 'deep_mts')} vs {ms(cpu, 'unet_segmentation_only')} ms, "
                f"**{c['cpu_ratio']:.2f}×**")

    threads = "TensorFlow's default threads" if cost["threads"] == "default" else f"{cost['threads']} thread(s)"
    text = (f"Step cost (batch {cost['batch_size']}, medians of {cost['rounds']} alternating rounds of "
            f"{cost['steps']} steps), deep_mts against the same U-Net trained for segmentation alone "
            f"(goal: at most 1.3×). {threads}: {measured(cost)}.")
    if "one_thread" in cost:
        text += (" One thread (a child process; CPU time is then the work alone, without the thread pool's "
                 f"waiting): {measured(cost['one_thread'])}.")
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--train", type=int, default=4096)
    parser.add_argument("--validation", type=int, default=256)
    parser.add_argument("--test", type=int, default=512)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument("--dense-growth", type=int, default=8)
    parser.add_argument("--dense-layers", type=int, default=2)
    parser.add_argument("--dense-resolution", default="quarter", choices=list(DENSE_RESOLUTIONS))
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--cost-steps", type=int, default=20)
    parser.add_argument("--cost-rounds", type=int, default=5)
    parser.add_argument("--cost-only", action="store_true", help="only the step cost")
    parser.add_argument("--cost-threads", type=int, default=0,
                        help="with --cost-only: TensorFlow's intra- and inter-op threads (0: its default)")
    parser.add_argument("--no-one-thread-cost", dest="one_thread_cost", action="store_false",
                        help="skip measuring the step cost again in a one-thread child process")
    parser.add_argument("--quick", action="store_true", help="1 seed, 32x32, 2 epochs; nothing written")
    parser.add_argument("--out", default=str(RESULTS / "deep_mts"))
    args = parser.parse_args(argv)
    if args.cost_threads and not args.cost_only:
        # Training would run on those threads too, and the cost would not be measured as labelled.
        parser.error("--cost-threads needs --cost-only (the full run measures one thread in a child process)")
    if args.quick:
        args.seeds, args.size, args.train, args.validation, args.test = "0", 32, 64, 48, 48
        args.epochs, args.cost_steps, args.cost_rounds, args.batch_size = 2, 2, 1, 16
    if args.cost_threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.cost_threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.cost_threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    report = {"config": {**{k: v for k, v in vars(args).items() if k not in ("out", "quick")}, "seeds": seeds,
                         "command": " ".join(["python bench/deep_mts.py", *(argv or sys.argv[1:])])},
              "machine": results_io.machine()}
    if not args.cost_only:
        report["runs"] = {str(seed): run(args, seed) for seed in seeds}
        report["summary"] = summarise(report["runs"])
    report["cost"] = step_cost(args)
    if args.one_thread_cost and not args.cost_threads and not args.quick:
        report["cost"]["one_thread"] = one_thread_cost(argv or sys.argv[1:])
    report["seconds"] = time.perf_counter() - started
    text = markdown(report) if not args.cost_only else (
        f"# DeepMTS step cost\n\n`{report['config']['command']}`\n\n{cost_markdown(report['cost'])}\n")
    print(text)
    if not args.quick:
        results_io.write(results_path(args.out, args.cost_only), report, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
