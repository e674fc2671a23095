"""MUiR across domains: a CNN on MNIST, an MLP on School and a Conv1D+LSTM on DNA share one bank.

Three architectures for three input domains are reparameterized by one hypermodule bank
(blocks 16 x 16, context size 4, one hypermodule per block to start), trained jointly on the
sum of their losses with the alignment search of the paper's cross-domain experiment (lambda = 1
challenger holding half the probability, mixing logits at learning rate 0.1, 1000 steps per
generation), keeping the generation with the best joint validation loss. Each architecture is
also trained on its own, without a bank, for the same steps (its best validation epoch kept):
the single-task baseline.

- digits: MNIST (10 classes), conv 16 - conv 32 - dense 64; test accuracy.
- school: the 139 School regression tasks as one 139-wide output (each student's loss on its
  own school's column), MLP 64 - 64 - 64, trained on scores standardised with the training
  mean and deviation (so its loss is on the scale of the others); test RMSE over all test
  students, in exam-score points.
- dna: the generated ``dna_motif`` binding task, conv1d 32 - conv1d 32 - LSTM 32; test accuracy.

Reports each task with sharing against its baseline, which hypermodules ended up generating
blocks of more than one domain, parameter counts, and seconds per training step of the MUiR
model against the same three models without reparameterization, side by side.

    python bench/muir_cross_domain.py           # writes bench/results/muir_cross_domain.{json,md}
    python bench/muir_cross_domain.py --quick   # a smoke run on small data; nothing written
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
import tensorflow as tf  # noqa: E402

import mtlzoo  # noqa: E402
from mtlzoo import muir  # noqa: E402
from mtlzoo.data.multi_mnist import holdout_indices, read_images  # noqa: E402
from mtlzoo.data.school import TASK_NAMES as SCHOOL_TASKS  # noqa: E402
import results_io  # noqa: E402  (bench/, beside this script)

RESULTS = REPO / "bench" / "results"
DOMAINS = ("digits", "school", "dna")
BATCH = 64
# Higher is better for accuracy, lower for RMSE: the sign that makes "better" positive.
METRICS = {"digits": ("test accuracy", 1), "school": ("test RMSE", -1), "dna": ("test accuracy", 1)}


def school_loss(y_true, y_pred):
    """Squared error on each student's own school: ``y_true`` is (score, one-hot school)."""
    score, school = y_true[:, :1], y_true[:, 1:]
    return keras.ops.sum(school * keras.ops.square(y_pred - score), axis=-1)


def digits_model() -> keras.Model:
    x = keras.Input((28, 28, 1), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_0")(x)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv_1")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Dense(64, activation="relu", name="dense")(keras.layers.Flatten()(h))
    return keras.Model(x, keras.layers.Dense(10, name="logits")(h), name="digits")


def school_model() -> keras.Model:
    x = keras.Input((28,), name="features")
    h = x
    for i in range(3):
        h = keras.layers.Dense(64, activation="relu", name=f"dense_{i}")(h)
    return keras.Model(x, keras.layers.Dense(139, name="scores")(h), name="school")


def dna_model() -> keras.Model:
    x = keras.Input((101, 4), name="sequence")
    h = keras.layers.Conv1D(32, 9, padding="same", activation="relu", name="conv_0")(x)
    h = keras.layers.Conv1D(32, 5, padding="same", activation="relu", name="conv_1")(h)
    h = keras.layers.MaxPooling1D(4)(h)
    h = keras.layers.LSTM(32, name="lstm")(h)
    return keras.Model(x, keras.layers.Dense(1, name="logit")(h), name="dna")


BUILDERS = {"digits": digits_model, "school": school_model, "dna": dna_model}
LOSSES = {
    "digits": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "school": school_loss,
    "dna": keras.losses.BinaryCrossentropy(from_logits=True),
}


def load_data(quick: bool) -> dict:
    """``{domain: {split: (inputs, targets)}}`` as numpy arrays."""
    images, labels = read_images("mnist", "train")
    test_images, test_labels = read_images("mnist", "test")
    train, validation = holdout_indices(len(images))

    def digits(i_images, i_labels):
        return (i_images[..., None] / np.float32(255)).astype("float32"), i_labels.astype("int64")

    data = {"digits": {"train": digits(images[train], labels[train]),
                       "validation": digits(images[validation], labels[validation]),
                       "test": digits(test_images, test_labels)}}
    school = mtlzoo.data.load_dataset("school")
    data["school"] = {}
    for split in ("train", "validation", "test"):
        arrays = school.load(split)
        one_hot = np.stack([arrays.weights[t] for t in SCHOOL_TASKS], axis=1)
        score = sum(arrays.targets[t][:, 0] for t in SCHOOL_TASKS)
        if split == "train":
            mean, std = score.mean(), score.std()
        standard = ((score - mean) / std).astype("float32")
        data["school"][split] = (arrays.inputs["features"], np.concatenate([standard[:, None], one_hot], 1))
    data["school_score_std"] = float(std)
    dna = mtlzoo.data.load_dataset("dna_motif")
    data["dna"] = {split: (arrays.inputs["sequence"], arrays.targets["binding"])
                   for split in ("train", "validation", "test") for arrays in [dna.load(split)]}
    if quick:
        data.update({d: {s: (x[:512], y[:512]) for s, (x, y) in data[d].items()} for d in DOMAINS})
    return data


def stream(data, domains, seed: int) -> tf.data.Dataset:
    """Shuffled training batches of ``domains`` zipped together, forever."""
    def one(domain, offset):
        x, y = data[domain]["train"]
        return (tf.data.Dataset.from_tensor_slices((x, y)).repeat()
                .shuffle(min(len(x), 10000), seed=seed + offset).batch(BATCH, drop_remainder=True))
    if len(domains) == 1:
        return one(domains[0], 0).prefetch(2)
    zipped = tf.data.Dataset.zip(tuple(one(d, i) for i, d in enumerate(domains)))
    return zipped.map(lambda *pairs: ({d: p[0] for d, p in zip(domains, pairs)},
                                      {d: p[1] for d, p in zip(domains, pairs)})).prefetch(2)


def validation(data, domains, split: str = "validation"):
    """The split of every domain, cut to the shortest, as ({domain: x}, {domain: y})."""
    n = min(len(data[d][split][0]) for d in domains)
    return {d: data[d][split][0][:n] for d in domains}, {d: data[d][split][1][:n] for d in domains}


def score(data, domain: str, predictions: np.ndarray) -> float:
    targets = data[domain]["test"][1]
    if domain == "school":
        school = targets[:, 1:]
        error = np.sum(school * (predictions - targets[:, :1]) ** 2, axis=1)
        return float(np.sqrt(error.mean()) * data["school_score_std"])
    if domain == "digits":
        return float(np.mean(predictions.argmax(-1) == targets))
    return float(np.mean((predictions[:, 0] > 0) == (targets[:, 0] > 0.5)))


def single_task(data, domain: str, generations: int, steps: int) -> dict:
    keras.utils.set_random_seed(0)
    model = BUILDERS[domain]()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSSES[domain])
    stop = keras.callbacks.EarlyStopping(patience=generations, restore_best_weights=True)
    x_val, y_val = data[domain]["validation"]
    started = time.perf_counter()
    model.fit(stream(data, (domain,), seed=0), steps_per_epoch=steps, epochs=generations,
              validation_data=(x_val, y_val), callbacks=[stop], verbose=0)
    x_test, y_test = data[domain]["test"]
    return {"score": score(data, domain, model.predict(x_test, verbose=0, batch_size=256)),
            "parameters": int(model.count_params()), "seconds": time.perf_counter() - started}


def muir_model(num_candidates: int) -> muir.MuirModel:
    keras.utils.set_random_seed(0)
    model = muir.reparameterize({d: BUILDERS[d]() for d in DOMAINS}, block_shape=(16, 16), context_size=4,
                                num_candidates=num_candidates, mix_lr_multiplier=100.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSSES)
    return model


def run_muir(data, generations: int, steps: int) -> dict:
    model = muir_model(num_candidates=2)
    search = muir.AlignmentSearch(challenger_share=0.5, location_fraction=0.5, fresh_probability=1e-4, seed=0)
    started = time.perf_counter()
    model.fit(stream(data, DOMAINS, seed=0), steps_per_epoch=steps, epochs=generations,
              validation_data=validation(data, DOMAINS), callbacks=[search], verbose=0)
    seconds = time.perf_counter() - started
    # Scored through the frozen components, the models that would be exported.
    frozen = model.freeze()
    scores = {d: score(data, d, frozen[d].predict(data[d]["test"][0], verbose=0, batch_size=256)) for d in DOMAINS}
    summary = model.sharing_summary()
    domains_of = summary["cross_component"]
    bank = model.bank
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights if w is not bank.mix_logits)
    unused = (bank.num_hypermodules - summary["hypermodules_in_use"]) * int(np.prod(bank.hypermodules.shape[1:]))
    return {
        "scores": scores,
        "parameters_in_use": trainable - unused,  # what the frozen models need, plus contexts
        "blocks": {d: sum(s.count for s in model.slots if s.component == d) for d in DOMAINS},
        "blocks_total": summary["blocks"],
        "hypermodules_in_use": summary["hypermodules_in_use"],
        "shared_hypermodules": summary["shared_hypermodules"],
        "cross_domain_hypermodules": {str(k): v for k, v in domains_of.items()},
        "cross_domain_counts": {
            " + ".join(combo): sum(1 for v in domains_of.values() if tuple(v) == combo)
            for combo in sorted({tuple(v) for v in domains_of.values()})
        },
        "not_reparameterized": model.skipped,
        "best_generation": search.best_generation,
        "history": search.history,
        "seconds": seconds,
    }


def step_cost(data, steps: int) -> dict:
    """Seconds per training step, MUiR (no search) against the three plain models, side by side."""
    keras.utils.set_random_seed(0)
    plain = {d: BUILDERS[d]() for d in DOMAINS}
    inputs = {d: keras.Input(plain[d].input_shape[1:], name=f"{d}_input") for d in DOMAINS}
    joint = keras.Model(inputs, {d: plain[d](inputs[d]) for d in DOMAINS})
    joint.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSSES)
    reparameterized = muir_model(num_candidates=1)
    per_step = results_io.seconds_per_step(
        {name: (model, lambda: stream(data, DOMAINS, seed=1)) for name, model in (("plain", joint),
                                                                                ("muir", reparameterized))},
        steps,
    )
    return {
        "seconds_per_step": per_step,
        "ratio": per_step["muir"] / per_step["plain"],
        "parameters": {name: int(sum(np.prod(w.shape) for w in m.trainable_weights))
                       for name, m in (("plain", joint), ("muir", reparameterized))},
    }


def markdown(report: dict) -> str:
    r = report["muir"]
    lines = [
        "# MUiR across domains: MNIST CNN, School MLP and DNA Conv1D+LSTM share one bank",
        "",
        f"{report['generations']} generations of {report['steps_per_generation']} steps (batch {BATCH} per domain), "
        f"blocks 16x16, c = 4, lambda = 1; baselines train the same architectures alone for the same steps. "
        f"CPU, TF {report['machine']['tensorflow']}. Reproduce: `{report['command']}`.",
        "",
        "| task | metric | single-task | MUiR (shared bank) | blocks in the bank |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for domain in DOMAINS:
        metric, _ = METRICS[domain]
        lines.append(f"| {domain} | {metric} | {report['single_task'][domain]['score']:.4f} | "
                     f"{r['scores'][domain]:.4f} | {r['blocks'][domain]} |")
    cost = report["step_cost"]
    counts = "; ".join(f"{k}: {v}" for k, v in r["cross_domain_counts"].items()) or "none"
    lines += [
        "",
        f"Alignment after the best generation ({r['best_generation']}): {r['blocks_total']} blocks use "
        f"{r['hypermodules_in_use']} hypermodules, {r['shared_hypermodules']} of them generating more than one block. "
        f"Hypermodules generating blocks of several domains: {counts}. The bank and the components then hold "
        f"{r['parameters_in_use']} trainable parameters in use, against "
        f"{sum(report['single_task'][d]['parameters'] for d in DOMAINS)} for the three single-task models.",
        "",
        f"Cost of reparameterization (no search): {1e3 * cost['seconds_per_step']['muir']:.1f} ms per step against "
        f"{1e3 * cost['seconds_per_step']['plain']:.1f} ms for the three plain models (ratio {cost['ratio']:.2f}); "
        f"trainable parameters {cost['parameters']['muir']} against {cost['parameters']['plain']}.",
        "",
        "Not reparameterized (kernels that do not divide into 16x16 blocks): " + ", ".join(r["not_reparameterized"]),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--steps-per-generation", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="3 generations of 20 steps on 512 examples")
    parser.add_argument("--out", default=str(RESULTS / "muir_cross_domain"))
    args = parser.parse_args(argv)
    generations, steps = (3, 20) if args.quick else (args.generations, args.steps_per_generation)
    data = load_data(args.quick)
    report = {"generations": generations, "steps_per_generation": steps, "single_task": {}}
    for domain in DOMAINS:
        report["single_task"][domain] = single_task(data, domain, generations, steps)
        print(f"single-task {domain}: {report['single_task'][domain]}", flush=True)
    report["muir"] = run_muir(data, generations, steps)
    print(f"MUiR: {report['muir']['scores']} in {report['muir']['seconds']:.0f} s", flush=True)
    report["step_cost"] = step_cost(data, steps=20 if args.quick else 200)
    report["command"] = "python bench/muir_cross_domain.py"
    report["machine"] = results_io.machine()
    print(markdown(report))
    if not args.quick:
        results_io.write(args.out, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
