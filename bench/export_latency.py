"""Serving latency: one multi-task SavedModel vs model.predict vs T single-task SavedModels.

For T tasks, the same request (batch 1 or 64) is answered three ways:

- ``multitask_savedmodel``: the mtlzoo export's ``serving_default`` signature, one call for all T tasks;
- ``keras_predict``: ``model.predict`` on the Keras model (what notebooks call);
- ``keras_call``: calling the Keras model directly (``model(x)``, no predict loop);
- ``separate_savedmodels``: T exports of single-task models of the same shape, called one after another
  (what a deployment without multi-task models runs).

The variants are timed round-robin in one process, so machine noise hits all of them alike, and
the report gives p50 / p99 latency, throughput and ratios to the multi-task export.

    python bench/export_latency.py                 # writes bench/results/export_latency.{json,md}
    python bench/export_latency.py --quick         # fewer repetitions, for a smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import mtlzoo  # noqa: E402
import results_io  # noqa: E402  (bench/, beside this script)

RESULTS = Path(__file__).resolve().parent / "results"
INPUT_DIM = 64
SHARED_UNITS = [256, 256]
HEAD_UNITS = [64]


def tasks_for(num_tasks: int) -> list[mtlzoo.Task]:
    """Alternating classification and regression tasks, so the export has derived outputs too."""
    return [
        mtlzoo.Task(f"t{i:02d}", "classification", num_classes=10) if i % 2 == 0 else mtlzoo.Task(f"t{i:02d}", "regression")
        for i in range(num_tasks)
    ]


def build(tasks) -> keras.Model:
    return mtlzoo.create_model(
        "hard_sharing", tasks, {"features": (INPUT_DIM,)}, shared_units=SHARED_UNITS, head_units=HEAD_UNITS
    )


def load_signature(path: Path):
    return tf.saved_model.load(str(path), tags=["serve"]).signatures["serving_default"]


def variants(num_tasks: int, workdir: Path) -> dict:
    """The three ways of answering all tasks, as callables taking a numpy batch."""
    keras.utils.set_random_seed(0)
    tasks = tasks_for(num_tasks)
    model = build(tasks)
    multi = load_signature(mtlzoo.export_saved_model(model, workdir / f"multi_{num_tasks}"))
    separate = [
        load_signature(mtlzoo.export_saved_model(build([task]), workdir / f"single_{num_tasks}_{task.name}"))
        for task in tasks
    ]
    return {
        "multitask_savedmodel": lambda x: multi(features=tf.constant(x)),
        "keras_predict": lambda x: model.predict({"features": x}, verbose=0, batch_size=len(x)),
        "keras_call": lambda x: model({"features": tf.constant(x)}, training=False),
        "separate_savedmodels": lambda x: [fn(features=tf.constant(x)) for fn in separate],
        "_params": {"multitask": model.count_params(), "separate": sum(build([t]).count_params() for t in tasks)},
    }


def measure(fns: dict, batch: int, repeats: int, warmup: int = 5) -> dict:
    x = np.random.default_rng(batch).normal(size=(batch, INPUT_DIM)).astype("float32")
    names = [n for n in fns if not n.startswith("_")]
    for name in names:
        for _ in range(warmup):
            fns[name](x)
    times = {name: [] for name in names}
    for i in range(repeats):
        # Rotate the order every repetition so no variant always runs first or last.
        for name in names[i % len(names):] + names[: i % len(names)]:
            start = time.perf_counter()
            fns[name](x)
            times[name].append(time.perf_counter() - start)
    stats = {}
    for name, values in times.items():
        values = np.asarray(values)
        stats[name] = {
            "p50_ms": float(np.percentile(values, 50) * 1e3),
            "p99_ms": float(np.percentile(values, 99) * 1e3),
            "throughput_examples_per_s": float(batch / values.mean()),
        }
    for name in names:
        stats[name]["p50_vs_multitask"] = stats[name]["p50_ms"] / stats["multitask_savedmodel"]["p50_ms"]
    return stats


def markdown(report: dict) -> str:
    lines = [
        "# Serving latency: multi-task export vs model.predict vs separate single-task exports",
        "",
        f"CPU: {report['machine']['cpus']} cores, {report['machine']['processor']}; TF {report['machine']['tensorflow']}, "
        f"Keras {report['machine']['keras']}. Model: hard sharing, input {INPUT_DIM}, shared {SHARED_UNITS}, "
        f"heads {HEAD_UNITS}. Reproduce: `{report['command']}`.",
        "",
        "| T | batch | variant | p50 ms | p99 ms | examples/s | p50 / multi-task export |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in report["results"]:
        for name, s in row["variants"].items():
            lines.append(
                f"| {row['tasks']} | {row['batch']} | {name} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} | "
                f"{s['throughput_examples_per_s']:.0f} | {s['p50_vs_multitask']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="2,8,32", help="comma-separated task counts")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="30 repeats, T=2,4; results not written")
    parser.add_argument("--out", default=str(RESULTS / "export_latency"))
    args = parser.parse_args(argv)
    task_counts = [2, 4] if args.quick else [int(t) for t in args.tasks.split(",")]
    repeats = 30 if args.quick else args.repeats
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for num_tasks in task_counts:
            fns = variants(num_tasks, Path(tmp))
            for batch in (1, 64):
                stats = measure(fns, batch, repeats)
                results.append({"tasks": num_tasks, "batch": batch, "parameters": fns["_params"], "variants": stats})
                summary = ", ".join(f"{n} {s['p50_ms']:.2f} ms" for n, s in stats.items())
                print(f"T={num_tasks:<3} batch={batch:<3} p50: {summary}", flush=True)
    report = {
        "command": "python bench/export_latency.py" + (f" --tasks {args.tasks}" if args.tasks != "2,8,32" else ""),
        "repeats": repeats,
        "machine": results_io.machine(),
        "results": results,
    }
    slower = [r for r in results if r["variants"]["separate_savedmodels"]["p50_vs_multitask"] <= 1.0]
    if not args.quick:
        results_io.write(args.out, report, markdown(report))
    if slower:
        print(f"GOAL MISSED: the multi-task export is not faster than separate exports for {len(slower)} rows")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
