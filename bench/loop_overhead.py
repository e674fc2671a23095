"""The zoo's training loop against a hand-written Keras model of the same shape, on the CPU.

``mtlzoo.train`` on the ``multimnist_hard_sharing`` recipe (MultiLeNet: two conv + pool stages,
a shared dense layer, a dense head per task) against the same layers written by hand as a plain
``keras.Model``, compiled with the same losses and accuracy metrics and fed the same
``tf.data`` batches. What the zoo adds is everything around the model: its dataset pipeline
(per-task sample weights), the per-task progress bar, a checkpoint and history after every
epoch, TensorBoard logs.

A steady-state epoch is timed by a callback, from the start of epoch 2 to the start of epoch
K + 2 of one K + 2 epoch run, over K: so the first epoch (tracing) and what happens once after
training are left out, and the end of each timed epoch (the zoo's checkpoint, history and
TensorBoard writes) is in. Both sides alternate ``--rounds`` times in one process and the median
is kept. Goal: the zoo within 5 % of plain Keras.

    python bench/loop_overhead.py           # writes bench/results/loop_overhead.{json,md}
    python bench/loop_overhead.py --quick   # 1000 examples, 1 round; nothing written
"""

from __future__ import annotations

import argparse
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


class EpochClock(keras.callbacks.Callback):
    """The time at the start of every epoch; the mean steady-state epoch from them."""

    def __init__(self):
        super().__init__()
        self.starts = []

    def on_epoch_begin(self, epoch, logs=None):
        self.starts.append(time.perf_counter())

    def seconds_per_epoch(self) -> float:
        timed = self.starts[1:]  # the first epoch traces; the last start closes the last timed epoch
        return (timed[-1] - timed[0]) / (len(timed) - 1)


def run_plain(arrays, timed_epochs: int, batch_size: int) -> float:
    keras.utils.set_random_seed(0)
    model = plain_model()
    data = (tf.data.Dataset.from_tensor_slices((dict(arrays.inputs), dict(arrays.targets)))
            .shuffle(len(arrays), seed=0).batch(batch_size).prefetch(tf.data.AUTOTUNE))
    clock = EpochClock()
    model.fit(data, epochs=timed_epochs + 2, verbose=0, callbacks=[clock])
    return clock.seconds_per_epoch()


def run_zoo(examples: int, timed_epochs: int) -> float:
    out = Path(tempfile.mkdtemp(prefix="mtlzoo-overhead-")) / "run"
    clock = EpochClock()
    try:
        mtlzoo.train(recipe(examples, timed_epochs + 2), out, verbose=0, callbacks=[clock])
        return clock.seconds_per_epoch()
    finally:
        shutil.rmtree(out.parent)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3, help="K: timed epochs (each run trains K + 2)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "loop_overhead"))
    args = parser.parse_args(argv)
    examples, rounds = (1000, 1) if args.quick else (args.examples, args.rounds)
    base = recipe(examples, 1)
    arrays = base.make_dataset().load("train")
    batch_size = base.training.batch_size
    epoch = {"zoo": [], "plain": []}
    for _ in range(rounds):
        epoch["zoo"].append(run_zoo(examples, args.epochs))
        epoch["plain"].append(run_plain(arrays, args.epochs, batch_size))
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
