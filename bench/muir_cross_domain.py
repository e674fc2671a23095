"""MUiR across domains, data-scarce: a CNN on Fashion-MNIST, an MLP on School and a
Conv1D+LSTM on DNA share one hypermodule bank; 5 seeds, paired against single-task training.

Three architectures for three input domains are reparameterized by one hypermodule bank
(blocks 16 x 16, context size 4, one hypermodule per block to start) and trained jointly on
the sum of their losses with the alignment search of the paper's cross-domain experiment
(lambda = 1 challenger holding half the probability, mixing logits at 100x Adam's learning
rate), keeping the generation with the best joint validation loss. Each domain has few
training examples, drawn afresh for every seed, so that sharing has room to help:

- fashion: 1,000 Fashion-MNIST images (10 classes), conv 16 - conv 32 - dense 64; test accuracy
  on the 10,000 official test images.
- school: 2,000 School students, the 139 schools as one 139-wide output (each student's loss on
  its own school's column), MLP 64 - 64 - 64 on scores standardised with the training mean and
  deviation; test RMSE over all test students, in exam-score points.
- dna: 1,000 sequences of the generated ``dna_motif`` task (a different motif per seed),
  conv1d 32 - conv1d 32 - LSTM 32; test accuracy.

Every variant trains for the same steps with the same optimizer (Adam 1e-3, batch 64 per
domain) and keeps its best validation epoch; nothing is tuned per variant. Variants:

- ``single-task``: each architecture alone, no bank.
- ``muir``: one bank for all three domains, with the alignment search.
- ``random alignment``: one bank, no search; the blocks are dealt at random to as many
  hypermodules as the search ended up using in the same seed (the same amount of sharing,
  without the search's choice of who shares with whom).
- ``separate banks``: one bank per domain, each with its own search (sharing inside a domain
  only, never across).

Reports per domain the mean ± std over seeds and each variant's paired difference from
single-task with its 95 % t-interval (positive = better), and the seconds per training step of
the MUiR model against the three plain models, side by side.

    python bench/muir_cross_domain.py           # writes bench/results/muir_cross_domain.{json,md}
    python bench/muir_cross_domain.py --quick   # a smoke run: 2 seeds, few steps; nothing written
    python bench/muir_cross_domain.py --step-cost-only   # re-time the step cost; updates the report
"""

from __future__ import annotations

import argparse
import json
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
DOMAINS = ("fashion", "school", "dna")
BATCH = 64
TRAIN_EXAMPLES = {"fashion": 1000, "school": 2000, "dna": 1000}
VALIDATION_EXAMPLES = 1000
# Higher is better for accuracy, lower for RMSE: the sign that makes "better" positive.
METRICS = {"fashion": ("test accuracy", 1), "school": ("test RMSE", -1), "dna": ("test accuracy", 1)}
VARIANTS = ("single-task", "muir", "random alignment", "separate banks")


def school_loss(y_true, y_pred):
    """Squared error on each student's own school: ``y_true`` is (score, one-hot school)."""
    score, school = y_true[:, :1], y_true[:, 1:]
    return keras.ops.sum(school * keras.ops.square(y_pred - score), axis=-1)


def fashion_model() -> keras.Model:
    x = keras.Input((28, 28, 1), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_0")(x)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv_1")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Dense(64, activation="relu", name="dense")(keras.layers.Flatten()(h))
    return keras.Model(x, keras.layers.Dense(10, name="logits")(h), name="fashion_net")


def school_model() -> keras.Model:
    x = keras.Input((28,), name="features")
    h = x
    for i in range(3):
        h = keras.layers.Dense(64, activation="relu", name=f"dense_{i}")(h)
    return keras.Model(x, keras.layers.Dense(139, name="scores")(h), name="school_net")


def dna_model() -> keras.Model:
    x = keras.Input((101, 4), name="sequence")
    h = keras.layers.Conv1D(32, 9, padding="same", activation="relu", name="conv_0")(x)
    h = keras.layers.Conv1D(32, 5, padding="same", activation="relu", name="conv_1")(h)
    h = keras.layers.MaxPooling1D(4)(h)
    h = keras.layers.LSTM(32, name="lstm")(h)
    return keras.Model(x, keras.layers.Dense(1, name="logit")(h), name="dna_net")


BUILDERS = {"fashion": fashion_model, "school": school_model, "dna": dna_model}
LOSSES = {
    "fashion": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "school": school_loss,
    "dna": keras.losses.BinaryCrossentropy(from_logits=True),
}


def load_data(seed: int, quick: bool = False) -> dict:
    """``{domain: {split: (inputs, targets)}}`` as numpy arrays; the training examples (and the
    validation ones, from the official validation parts) are a random draw of ``seed``."""
    rng = np.random.default_rng([seed, 20])
    sizes = {d: n // 4 if quick else n for d, n in TRAIN_EXAMPLES.items()}
    validation_size = VALIDATION_EXAMPLES // 4 if quick else VALIDATION_EXAMPLES

    def draw(count: int, n: int) -> np.ndarray:
        return np.sort(rng.choice(n, size=min(count, n), replace=False))

    images, labels = read_images("fashion_mnist", "train")
    test_images, test_labels = read_images("fashion_mnist", "test")
    train, validation = holdout_indices(len(images))
    train, validation = train[draw(sizes["fashion"], len(train))], validation[draw(validation_size, len(validation))]

    def fashion(i_images, i_labels):
        return (i_images[..., None] / np.float32(255)).astype("float32"), i_labels.astype("int64")

    data = {"fashion": {"train": fashion(images[train], labels[train]),
                        "validation": fashion(images[validation], labels[validation]),
                        "test": fashion(test_images, test_labels)}}
    school = mtlzoo.data.load_dataset("school")
    data["school"] = {}
    for split in ("train", "validation", "test"):
        arrays = school.load(split)
        one_hot = np.stack([arrays.weights[t] for t in SCHOOL_TASKS], axis=1)
        score = sum(arrays.targets[t][:, 0] for t in SCHOOL_TASKS)
        features = arrays.inputs["features"]
        if split != "test":
            keep = draw(sizes["school"] if split == "train" else validation_size, len(score))
            features, one_hot, score = features[keep], one_hot[keep], score[keep]
        if split == "train":
            mean, std = score.mean(), score.std()
        standard = ((score - mean) / std).astype("float32")
        data["school"][split] = (features, np.concatenate([standard[:, None], one_hot], 1))
    data["school_score_std"] = float(std)
    dna = mtlzoo.data.load_dataset("dna_motif", seed=seed, num_train=sizes["dna"],
                                   num_validation=validation_size, num_test=500 if quick else 2000)
    data["dna"] = {split: (arrays.inputs["sequence"], arrays.targets["binding"])
                   for split in ("train", "validation", "test") for arrays in [dna.load(split)]}
    return data


def stream(data, domains, seed: int) -> tf.data.Dataset:
    """Shuffled training batches of ``domains`` zipped together, forever."""
    def one(domain, offset):
        x, y = data[domain]["train"]
        return (tf.data.Dataset.from_tensor_slices((x, y)).repeat()
                .shuffle(min(len(x), 10000), seed=seed + offset).batch(BATCH, drop_remainder=True))
    zipped = tf.data.Dataset.zip(tuple(one(d, i) for i, d in enumerate(domains)))
    return zipped.map(lambda *pairs: ({d: p[0] for d, p in zip(domains, pairs)},
                                      {d: p[1] for d, p in zip(domains, pairs)})).prefetch(2)


def validation(data, domains):
    """The validation split of every domain, cut to the shortest, as ({domain: x}, {domain: y})."""
    n = min(len(data[d]["validation"][0]) for d in domains)
    return {d: data[d]["validation"][0][:n] for d in domains}, {d: data[d]["validation"][1][:n] for d in domains}


def score(data, domain: str, predictions: np.ndarray) -> float:
    targets = data[domain]["test"][1]
    if domain == "school":
        school = targets[:, 1:]
        error = np.sum(school * (predictions - targets[:, :1]) ** 2, axis=1)
        return float(np.sqrt(error.mean()) * data["school_score_std"])
    if domain == "fashion":
        return float(np.mean(predictions.argmax(-1) == targets))
    return float(np.mean((predictions[:, 0] > 0) == (targets[:, 0] > 0.5)))


def joint_plain(domains) -> keras.Model:
    """The plain architectures of ``domains`` side by side, inputs and outputs keyed by domain."""
    plain = {d: BUILDERS[d]() for d in domains}
    inputs = {d: keras.Input(plain[d].input_shape[1:], name=d) for d in domains}
    model = keras.Model(inputs, {d: plain[d](inputs[d]) for d in domains})
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss={d: LOSSES[d] for d in domains})
    return model


def muir_model(domains, num_candidates: int, num_hypermodules: int | None = None) -> muir.MuirModel:
    model = muir.reparameterize({d: BUILDERS[d]() for d in domains}, block_shape=(16, 16), context_size=4,
                                num_hypermodules=num_hypermodules, num_candidates=num_candidates,
                                mix_lr_multiplier=100.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss={d: LOSSES[d] for d in domains})
    return model


def train(model, data, domains, seed: int, steps: int, generations: int, callbacks) -> float:
    """Fits ``generations`` epochs of ``steps`` steps; returns the seconds it took."""
    started = time.perf_counter()
    model.fit(stream(data, domains, seed), steps_per_epoch=steps, epochs=generations,
              validation_data=validation(data, domains), callbacks=callbacks, verbose=0)
    return time.perf_counter() - started


def run_single_task(data, seed: int, steps: int, generations: int) -> dict:
    scores, seconds = {}, 0.0
    for domain in DOMAINS:
        keras.utils.set_random_seed(seed)
        model = joint_plain((domain,))
        stop = keras.callbacks.EarlyStopping(patience=generations, restore_best_weights=True)
        seconds += train(model, data, (domain,), seed, steps, generations, [stop])
        predictions = model.predict({domain: data[domain]["test"][0]}, verbose=0, batch_size=256)
        scores[domain] = score(data, domain, predictions[domain])
    return {"scores": scores, "seconds": seconds}


def scored(model: muir.MuirModel, data) -> dict:
    """Test scores through the frozen components, the models that would be exported."""
    frozen = model.freeze()
    return {d: score(data, d, frozen[d].predict(data[d]["test"][0], verbose=0, batch_size=256))
            for d in model.components}


def run_muir(data, seed: int, steps: int, generations: int, domains=DOMAINS) -> dict:
    keras.utils.set_random_seed(seed)
    model = muir_model(domains, num_candidates=2)
    search = muir.AlignmentSearch(challenger_share=0.5, location_fraction=0.5, fresh_probability=1e-4, seed=seed)
    seconds = train(model, data, domains, seed, steps, generations, [search])
    summary = model.sharing_summary()
    return {
        "scores": scored(model, data),
        "seconds": seconds,
        "blocks": summary["blocks"],
        "hypermodules_in_use": summary["hypermodules_in_use"],
        "cross_domain_hypermodules": len(summary["cross_component"]),
        "best_generation": search.best_generation,
    }


def run_random_alignment(data, seed: int, steps: int, generations: int, num_hypermodules: int) -> dict:
    keras.utils.set_random_seed(seed)
    model = muir_model(DOMAINS, num_candidates=1, num_hypermodules=num_hypermodules)
    bank = model.bank
    # Every hypermodule is used, by as many blocks as the others give or take one.
    dealt = np.random.default_rng([seed, 21]).permutation(np.arange(bank.num_blocks) % num_hypermodules)
    bank.assignment.assign(dealt[:, None].astype("int32"))
    stop = keras.callbacks.EarlyStopping(patience=generations, restore_best_weights=True)
    seconds = train(model, data, DOMAINS, seed, steps, generations, [stop])
    summary = model.sharing_summary()
    return {"scores": scored(model, data), "seconds": seconds, "hypermodules_in_use": summary["hypermodules_in_use"],
            "cross_domain_hypermodules": len(summary["cross_component"])}


def run_separate_banks(data, seed: int, steps: int, generations: int) -> dict:
    runs = {d: run_muir(data, seed, steps, generations, domains=(d,)) for d in DOMAINS}
    return {"scores": {d: r["scores"][d] for d, r in runs.items()},
            "seconds": sum(r["seconds"] for r in runs.values()),
            "hypermodules_in_use": sum(r["hypermodules_in_use"] for r in runs.values())}


def step_cost(data, steps: int) -> dict:
    """Seconds per training step, MUiR (no search) against the three plain models, side by side."""
    keras.utils.set_random_seed(0)
    plain = joint_plain(DOMAINS)
    reparameterized = muir_model(DOMAINS, num_candidates=1)
    # 32 batches cached and repeated: the input pipeline is the same for both, and should not
    # set the pace of either on a busy machine.
    batches = stream(data, DOMAINS, seed=1).take(32).cache()
    times = results_io.step_times(
        {name: (model, lambda: batches.repeat()) for name, model in (("plain", plain), ("muir", reparameterized))},
        steps, rounds=5,
    )
    return {
        "seconds_per_step": {name: t["wall"] for name, t in times.items()},
        "cpu_seconds_per_step": {name: t["cpu"] for name, t in times.items()},
        "ratio": times["muir"]["wall"] / times["plain"]["wall"],
        "cpu_ratio": times["muir"]["cpu"] / times["plain"]["cpu"],
        "parameters": {name: int(sum(np.prod(w.shape) for w in m.trainable_weights))
                       for name, m in (("plain", plain), ("muir", reparameterized))},
    }


def summarise(runs: dict) -> dict:
    """Per variant and domain: mean ± std over seeds, and the paired difference from single-task."""
    table = {}
    for variant in VARIANTS:
        table[variant] = {}
        for domain in DOMAINS:
            values = [seed_runs[variant]["scores"][domain] for seed_runs in runs.values()]
            entry = {"score": results_io.summary(values)}
            if variant != "single-task":
                baseline = [seed_runs["single-task"]["scores"][domain] for seed_runs in runs.values()]
                entry["paired_gain"] = results_io.paired(values, baseline, better=METRICS[domain][1])
            table[variant][domain] = entry
    return table


def verdict(gain: dict) -> str:
    if gain["ci95"] is None:
        return "one seed, no interval"
    low, high = gain["ci95"]
    return "better" if low > 0 else "worse" if high < 0 else "no significant difference"


def markdown(report: dict) -> str:
    table, seeds = report["table"], len(report["seeds"])
    lines = [
        "# MUiR across domains, data-scarce: Fashion-MNIST CNN, School MLP and DNA Conv1D+LSTM share one bank",
        "",
        f"Training examples per domain: {', '.join(f'{d} {n}' for d, n in report['train_examples'].items())} (drawn "
        f"per seed); {report['generations']} epochs (search generations) of {report['steps_per_generation']} steps, "
        f"batch {BATCH} per domain, Adam 1e-3, best validation epoch kept; blocks 16x16, c = 4, lambda = 1. "
        f"{seeds} seeds ({', '.join(map(str, report['seeds']))}). CPU, TF {report['machine']['tensorflow']}. "
        f"Reproduce: `{report['command']}`.",
        "",
        "Mean ± std over seeds; in brackets the paired difference from single-task (positive = better) and its "
        "95 % t-interval.",
        "",
        "| domain | metric | " + " | ".join(VARIANTS) + " |",
        "| --- | --- |" + " ---: |" * len(VARIANTS),
    ]
    for domain in DOMAINS:
        cells = []
        for variant in VARIANTS:
            entry = table[variant][domain]
            cell = f"{entry['score']['mean']:.4f} ± {entry['score']['std']:.4f}"
            if "paired_gain" in entry:
                g = entry["paired_gain"]
                interval = f" [{g['ci95'][0]:+.4f}, {g['ci95'][1]:+.4f}]" if g["ci95"] else ""
                cell += f" ({g['mean']:+.4f}{interval})"
            cells.append(cell)
        lines.append(f"| {domain} | {METRICS[domain][0]} | " + " | ".join(cells) + " |")
    verdicts = {d: verdict(table["muir"][d]["paired_gain"]) for d in DOMAINS}
    muir_runs = [r["muir"] for r in report["runs"].values()]
    lines += [
        "",
        "MUiR against single-task: " + "; ".join(f"{d}: {v}" for d, v in verdicts.items()) + ".",
        "",
        f"The search's best generations used {results_io.summary([r['hypermodules_in_use'] for r in muir_runs])['mean']:.0f} "
        f"hypermodules on average for {muir_runs[0]['blocks']} blocks, "
        f"{results_io.summary([r['cross_domain_hypermodules'] for r in muir_runs])['mean']:.0f} of them generating blocks "
        "of more than one domain; the random alignment uses the same number of hypermodules per seed.",
    ]
    cost = report["step_cost"]
    lines += [
        "",
        f"Cost of reparameterization (no search, {cost['parameters']['muir']} trainable parameters against "
        f"{cost['parameters']['plain']}): {1e3 * cost['seconds_per_step']['muir']:.1f} ms per step against "
        f"{1e3 * cost['seconds_per_step']['plain']:.1f} ms for the three plain models, ratio {cost['ratio']:.2f} "
        f"(CPU time: ratio {cost['cpu_ratio']:.2f}); median of 5 alternating rounds.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--steps-per-generation", type=int, default=100)
    parser.add_argument("--step-cost-only", action="store_true", help="only time MUiR against the plain models")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 2 generations of 10 steps, small data")
    parser.add_argument("--out", default=str(RESULTS / "muir_cross_domain"))
    args = parser.parse_args(argv)
    seeds = [0, 1] if args.quick else [int(s) for s in args.seeds.split(",")]
    generations, steps = (2, 10) if args.quick else (args.generations, args.steps_per_generation)
    if args.step_cost_only:
        cost = step_cost(load_data(0, args.quick), steps=20 if args.quick else 300)
        print(cost)
        saved = Path(args.out).with_suffix(".json")
        if not args.quick and saved.is_file():  # re-measured on a quiet machine: update the report
            report = json.loads(saved.read_text())
            report["step_cost"] = cost
            results_io.write(args.out, report, markdown(report))
        return 0
    report = {"generations": generations, "steps_per_generation": steps, "seeds": seeds,
              "train_examples": TRAIN_EXAMPLES, "runs": {}}
    for seed in seeds:
        data = load_data(seed, args.quick)
        runs = {"single-task": run_single_task(data, seed, steps, generations),
                "muir": run_muir(data, seed, steps, generations)}
        runs["random alignment"] = run_random_alignment(data, seed, steps, generations,
                                                        runs["muir"]["hypermodules_in_use"])
        runs["separate banks"] = run_separate_banks(data, seed, steps, generations)
        report["runs"][str(seed)] = runs
        print(f"seed {seed}: " + "; ".join(f"{v} {r['scores']}" for v, r in runs.items()), flush=True)
    report["table"] = summarise(report["runs"])
    report["step_cost"] = step_cost(load_data(0, args.quick), steps=20 if args.quick else 300)
    report["command"] = "python bench/muir_cross_domain.py"
    report["machine"] = results_io.machine()
    print(markdown(report))
    if not args.quick:
        results_io.write(args.out, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
