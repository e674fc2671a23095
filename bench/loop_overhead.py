"""The zoo's training loop against a hand-written Keras model of the same shape, on the CPU.

``mtlzoo.train`` on the ``multimnist_hard_sharing`` recipe (MultiLeNet: two conv + pool stages,
a shared dense layer, a dense head per task) against the same layers written by hand as a plain
``keras.Model``, compiled with the same losses and accuracy metrics and fed the same
``tf.data`` batches. What the zoo adds is everything around the model: its dataset pipeline
(per-task sample weights), the per-task progress bar, a checkpoint and history after every
epoch, TensorBoard logs.

A steady-state epoch is measured as (time of a 1 + K epoch run - time of a 1 epoch run) / K, so
that data loading, building and tracing cancel out; both sides alternate ``--rounds`` times in
one process and the median is kept. Goal: the zoo within 5 % of plain Keras.

    python bench/loop_overhead.py           # writes bench/results/loop_overhead.{json,md}
    python bench/loop_overhead.py --quick   # 1000 examples, 1 round; nothing written
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MTLZOO_DATA_DIR", str(REPO.parent / "shared" / "data"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import yaml  # noqa: E402

import mtlzoo  # noqa: E402
from mtlzoo.recipes.config import recipe_from_dict  # noqa: E402
import results_io  # noqa: E402  (bench/, beside this script)

RESULTS = REPO / "bench" / "results"
RECIPE = REPO / "zoo_configs" / "multimnist_hard_sharing.yaml"
GOAL = 1.05


def recipe(examples: int, epochs: int):
    raw = yaml.safe_load(RECIPE.read_text())
    raw["data"]["max_examples"] = examples
    raw["training"]["epochs"] = epochs
    return recipe_from_dict(raw, source=str(RECIPE))


def plain_model() -> keras.Model:
    """MultiLeNet written by hand with plain Keras layers: what the recipe builds."""
    image = keras.Input((36, 36, 1), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255)(image)
    for filters in (10, 20):
        x = keras.layers.Conv2D(filters, 5, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Dense(50, activation="relu")(keras.layers.Flatten()(x))
    outputs = {task: keras.layers.Dense(10, name=task)(keras.layers.Dense(50, activation="relu")(x))
               for task in ("left", "right")}
    model = keras.Model({"image": image}, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss={t: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for t in outputs},
                  metrics={t: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")] for t in outputs})
    return model


def run_plain(arrays, epochs: int, batch_size: int) -> float:
    keras.utils.set_random_seed(0)
    model = plain_model()
    data = (tf.data.Dataset.from_tensor_slices((dict(arrays.inputs), dict(arrays.targets)))
            .shuffle(len(arrays), seed=0).batch(batch_size).prefetch(tf.data.AUTOTUNE))
    started = time.perf_counter()
    model.fit(data, epochs=epochs, verbose=0)
    return time.perf_counter() - started


def run_zoo(examples: int, epochs: int) -> float:
    out = Path(tempfile.mkdtemp(prefix="mtlzoo-overhead-")) / "run"
    try:
        mtlzoo.train(recipe(examples, epochs), out, verbose=0)
        return float(json.loads((out / "run.json").read_text())["train_seconds"])
    finally:
        shutil.rmtree(out.parent)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3, help="K: timed epochs after the first")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "loop_overhead"))
    args = parser.parse_args(argv)
    examples, rounds = (1000, 1) if args.quick else (args.examples, args.rounds)
    base = recipe(examples, 1)
    arrays = base.make_dataset().load("train")
    batch_size = base.training.batch_size
    epoch = {"zoo": [], "plain": []}
    for _ in range(rounds):
        # run.json's train_seconds is the fit alone, as the plain side's clock is.
        epoch["zoo"].append((run_zoo(examples, 1 + args.epochs) - run_zoo(examples, 1)) / args.epochs)
        epoch["plain"].append((run_plain(arrays, 1 + args.epochs, batch_size)
                               - run_plain(arrays, 1, batch_size)) / args.epochs)
    seconds = {k: float(np.median(v)) for k, v in epoch.items()}
    report = {
        "examples": len(arrays), "batch_size": batch_size, "timed_epochs": args.epochs, "rounds": rounds,
        "seconds_per_epoch": seconds, "all_rounds": epoch, "ratio": seconds["zoo"] / seconds["plain"],
        "goal": GOAL, "command": "python bench/loop_overhead.py", "machine": results_io.machine(),
    }
    markdown = "\n".join([
        "# Training-loop overhead: mtlzoo.train against plain Keras",
        "",
        f"MultiLeNet (`multimnist_hard_sharing`) on {report['examples']} MultiMNIST examples, batch {batch_size}, "
        f"TensorFlow backend, {report['machine']['cpus']} CPUs; steady-state seconds per epoch, median of {rounds} "
        f"alternating rounds. Reproduce: `{report['command']}`.",
        "",
        "| loop | seconds per epoch | ratio |",
        "| --- | ---: | ---: |",
        f"| plain Keras (hand-written model, `fit`) | {seconds['plain']:.3f} | 1.00 |",
        f"| `mtlzoo.train` (recipe, checkpoints, history, TensorBoard) | {seconds['zoo']:.3f} | {report['ratio']:.3f} |",
        "",
        f"Goal: within {100 * (GOAL - 1):.0f} % ({'met' if report['ratio'] <= GOAL else 'MISSED'}).",
    ]) + "\n"
    print(markdown)
    if not args.quick:
        results_io.write(args.out, report, markdown)
    return 0 if args.quick or report["ratio"] <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
