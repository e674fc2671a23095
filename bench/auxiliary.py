"""Auxiliary and adversarial tasks, measured over seeds (issue 19's goals).

Data-scarce main task: MultiFashion's left item labelled on 1,000 training examples
(``zoo_configs/multifashion_auxiliary.yaml``). Four arms, the same seeds (the seed picks the
1,000 labels, the pairing and the initialisation), test accuracy of ``left``:

- ``left alone``: the left task trained on its 1,000 labels only (more epochs: 4 steps each);
- ``+ right (auxiliary)``: the recipe as shipped;
- ``+ reconstruction``: an input-reconstruction head instead of the right item;
- ``+ right, gated``: the right item under gradient-similarity gating (Du et al. 2018).

Adversarial: MultiMNIST's left digit with the right digit adversarial
(``zoo_configs/multimnist_adversarial.yaml``: a confusion loss) against ``left`` alone and against
the same recipe with gradient reversal; afterwards a probe (a 64-unit MLP, Adam, 20 epochs on the
50,000 training representations) is trained on the frozen shared representation of each model to
predict the right digit, scored on the test split.

Every arm's early stopping watches the left task's validation accuracy. Paired differences are
per seed. Writes ``bench/results/auxiliary.{json,md}``; a run of one study keeps the other
study's committed results (each study records its own command)::

    python bench/auxiliary.py                 # 3 seeds, both studies
    python bench/auxiliary.py --studies adversarial
    python bench/auxiliary.py --quick         # 2,000 examples, 1 seed, short: a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MTLZOO_DATA_DIR", str(REPO.parent / "shared" / "data"))

import keras  # noqa: E402
import yaml  # noqa: E402

import mtlzoo  # noqa: E402
import results_io  # noqa: E402  (bench/, beside this script)

RESULTS = REPO / "bench" / "results"
RECIPES = REPO / "zoo_configs"
CHANCE = 0.10
STUDIES = ("fashion", "adversarial")


def recipe(name: str) -> dict:
    return yaml.safe_load((RECIPES / f"{name}.yaml").read_text())


def fashion_arms() -> dict[str, dict]:
    base = recipe("multifashion_auxiliary")
    alone = copy.deepcopy(base)
    alone["tasks"] = ["left"]
    # 1,000 examples make 4 steps an epoch: more epochs, and more patience, for the same budget of passes.
    alone["training"].update(epochs=150, early_stopping={"monitor": "mean_val_accuracy", "patience": 15})
    reconstruction = copy.deepcopy(base)
    # A linear decoder: the shared features themselves must hold the image, not a hidden layer after them.
    reconstruction["tasks"] = ["left", {"name": "image_rec", "kind": "reconstruction", "input": "image", "head_units": []}]
    gated = copy.deepcopy(base)
    gated["training"]["weighting"] = "gradient_similarity"
    return {"left alone": alone, "+ right (auxiliary)": base, "+ reconstruction": reconstruction,
            "+ right, gated": gated}


def adversarial_arms() -> dict[str, dict]:
    base = recipe("multimnist_adversarial")
    alone = copy.deepcopy(base)
    alone["tasks"] = ["left"]
    reversal = copy.deepcopy(base)
    reversal["tasks"][1]["adversary"] = "reversal"
    return {"left alone": alone, "+ right (gradient reversal)": reversal, "+ right (confusion)": base}


def with_seed(raw: dict, seed: int, quick: bool) -> dict:
    raw = copy.deepcopy(raw)
    raw["data"]["seed"] = seed
    if "label_fraction" in raw["data"]:
        raw["data"]["label_seed"] = seed
    raw["training"]["seed"] = seed
    if quick:
        raw["data"]["max_examples"] = 2000
        raw["training"]["epochs"] = min(raw["training"]["epochs"], 3)
    return raw


def train(raw: dict, run_dir: Path):
    run = mtlzoo.recipe_from_dict(raw, source=f"bench:{raw['name']}")
    model = mtlzoo.train(run, run_dir, overwrite=True, verbose=0)
    info = json.loads((run_dir / "run.json").read_text())
    return run, model, info


def probe_accuracy(model, train_data, test_data, task: str, seed: int, epochs: int) -> float:
    """Test accuracy of an MLP trained on the frozen shared representation to predict ``task``."""
    trunk = keras.Model(model.inputs, model.shared_representation)
    features = {split: trunk.predict(dict(d.inputs), batch_size=1024, verbose=0)
                for split, d in (("train", train_data), ("test", test_data))}
    keras.utils.set_random_seed(10_000 + seed)
    probe = keras.Sequential([keras.Input(features["train"].shape[1:]), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10)])
    probe.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    probe.fit(features["train"], train_data.targets[task], epochs=epochs, batch_size=256, verbose=0)
    return float(probe.evaluate(features["test"], test_data.targets[task], verbose=0)[1])


def run_fashion(seeds, quick: bool, workdir: Path) -> dict:
    arms = fashion_arms()
    scores = {arm: [] for arm in arms}
    seconds = {arm: [] for arm in arms}
    for seed in seeds:
        for arm, raw in arms.items():
            started = time.perf_counter()
            run, model, info = train(with_seed(raw, seed, quick), workdir / f"fashion-{seed}-{len(scores[arm])}-{arm[:6]}")
            test = run.make_dataset().load_tasks("test", run.tasks)
            results = mtlzoo.evaluate(model, test)
            scores[arm].append(results["left"]["accuracy"])
            seconds[arm].append(time.perf_counter() - started)
            print(f"fashion seed={seed} {arm}: left {scores[arm][-1]:.4f} ({info['epochs_done']} epochs, "
                  f"{seconds[arm][-1]:.0f} s)", flush=True)
            keras.backend.clear_session()
    base = scores["left alone"]
    return {arm: {"left_accuracy": results_io.summary(v), "seconds": results_io.summary(seconds[arm]),
                  **({"paired_gain": results_io.paired(v, base)} if arm != "left alone" else {})}
            for arm, v in scores.items()}


def run_adversarial(seeds, quick: bool, workdir: Path, probe_epochs: int) -> dict:
    arms = adversarial_arms()
    left = {arm: [] for arm in arms}
    probe = {arm: [] for arm in arms}
    for seed in seeds:
        for arm, raw in arms.items():
            run, model, info = train(with_seed(raw, seed, quick), workdir / f"mnist-{seed}-{arm[:6]}")
            dataset = run.make_dataset()
            full = {split: dataset.load(split) for split in ("train", "test")}
            left[arm].append(mtlzoo.evaluate(model, full["test"].select(["left"]))["left"]["accuracy"])
            probe[arm].append(probe_accuracy(model, full["train"], full["test"], "right", seed, probe_epochs))
            print(f"mnist seed={seed} {arm}: left {left[arm][-1]:.4f}, probe on right {probe[arm][-1]:.4f}", flush=True)
            keras.backend.clear_session()
    base = left["left alone"]
    reversal, confusion = "+ right (gradient reversal)", "+ right (confusion)"
    return {
        "arms": {arm: {"left_accuracy": results_io.summary(left[arm]),
                       "probe_right_accuracy": results_io.summary(probe[arm]),
                       **({"paired_left_change": results_io.paired(left[arm], base)} if arm != "left alone" else {})}
                 for arm in arms},
        # The recipe's adversary against the other kind (a lower probe is better).
        "confusion_vs_reversal": {"paired_probe": results_io.paired(probe[confusion], probe[reversal], better=-1),
                                  "paired_left": results_io.paired(left[confusion], left[reversal])},
    }


def pct(s: dict, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{100 * s['mean']:{sign}.2f} ± {100 * s['std']:.2f}"


def markdown(report: dict) -> str:
    n = len(report["seeds"])
    lines = ["# Auxiliary and adversarial tasks", "",
             f"{n} seeds ({', '.join(map(str, report['seeds']))}); mean ± sample std over seeds; paired differences per "
             f"seed. {report['machine']['cpus']} CPU cores, TF {report['machine']['tensorflow']}."]
    if "fashion" in report:
        goal = report["goals"]["auxiliary_gain_points"]
        lines += ["", "## Data-scarce main task: MultiFashion, left item on 1,000 labels", "",
                  "Test accuracy of `left` (%); the gain is paired against `left alone` on the same seed "
                  f"(goal: at least +{goal:.0f} points). Reproduce: `{report['commands']['fashion']}`.", "",
                  "| arm | left accuracy % | gain vs left alone (points) | met | s / run |",
                  "| --- | ---: | ---: | --- | ---: |"]
        for arm, s in report["fashion"].items():
            gain = s.get("paired_gain")
            met = "–" if gain is None else ("yes" if 100 * gain["mean"] >= goal else "no")
            lines.append(f"| {arm} | {pct(s['left_accuracy'])} | {pct(gain, True) if gain else '0 (reference)'} | "
                         f"{met} | {s['seconds']['mean']:.0f} |")
    if "adversarial" in report:
        goals = report["goals"]
        lines += ["", "## Adversarial: MultiMNIST, right digit adversarial", "",
                  f"Probe: a 64-unit MLP trained on the frozen shared representation to predict the right digit "
                  f"(chance {100 * CHANCE:.0f} %; goal: at most {100 * CHANCE + goals['probe_above_chance_points']:.0f} %). "
                  f"Left accuracy: goal within {goals['left_within_points']:.0f} point of `left alone`. "
                  f"Reproduce: `{report['commands']['adversarial']}`.", "",
                  "| arm | left accuracy % | left change (points) | probe: right accuracy % |",
                  "| --- | ---: | ---: | ---: |"]
        for arm, s in report["adversarial"]["arms"].items():
            change = s.get("paired_left_change")
            lines.append(f"| {arm} | {pct(s['left_accuracy'])} | {pct(change, True) if change else '0 (reference)'} | "
                         f"{pct(s['probe_right_accuracy'])} |")
        versus = report["adversarial"]["confusion_vs_reversal"]
        lines += ["", "Confusion against gradient reversal, paired per seed: the probe reads the right digit "
                  f"{pct(versus['paired_probe'], True)} points less, left accuracy {pct(versus['paired_left'], True)} "
                  "points."]
    return "\n".join(lines) + "\n"


def keep_other_studies(report: dict, previous: Path) -> dict:
    """``report`` plus the studies it did not run, with their commands, from ``previous``."""
    if not previous.exists():
        return report
    old = json.loads(previous.read_text())
    if old.get("seeds") != report["seeds"]:
        return report  # other seeds: not comparable side by side
    old_commands = old.get("commands") or {study: old["command"] for study in STUDIES}
    kept = {study: old[study] for study in STUDIES if study not in report and study in old}
    commands = {**{study: old_commands[study] for study in kept}, **report["commands"]}
    return {**report, **kept, "commands": {s: commands[s] for s in STUDIES if s in commands}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--studies", default=",".join(STUDIES))
    parser.add_argument("--probe-epochs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="2,000 examples, 1 seed, at most 3 epochs; nothing written")
    parser.add_argument("--out", default=str(RESULTS / "auxiliary"))
    args = parser.parse_args(argv)
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    asked = args.studies.split(",")
    studies = [s for s in STUDIES if s in asked]
    if not studies or set(asked) - set(STUDIES):
        parser.error(f"--studies takes a comma-separated subset of {','.join(STUDIES)}; got {args.studies!r}")
    report = {"seeds": seeds, "goals": {"auxiliary_gain_points": 2.0, "probe_above_chance_points": 5.0,
                                        "left_within_points": 1.0}}
    with tempfile.TemporaryDirectory() as tmp:
        if "fashion" in studies:
            report["fashion"] = run_fashion(seeds, args.quick, Path(tmp))
        if "adversarial" in studies:
            report["adversarial"] = run_adversarial(seeds, args.quick, Path(tmp), 2 if args.quick else args.probe_epochs)
    extra = "".join(f" --{k} {v}" for k, v in (("seeds", args.seeds), ("studies", ",".join(studies)))
                    if v != parser.get_default(k))
    report.update(commands={study: f"python bench/auxiliary.py{extra}" for study in studies},
                  machine=results_io.machine())
    if not args.quick:
        report = keep_other_studies(report, Path(args.out).with_suffix(".json"))
    print(markdown(report))
    if not args.quick:
        results_io.write(args.out, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
