"""``compare``: one recipe trained with several weighting methods over several seeds, side by side.

For every weighting and seed the recipe is trained with ``mtlzoo.train`` (``training.weighting``
and ``training.seed`` swapped in, the data unchanged) and scored on the recipe's evaluation
split with ``mtlzoo.evaluate``::

    RUN_DIR/compare_settings.json         what was asked (written first; marks a compare run)
    RUN_DIR/<weighting>/seed<i>/          a run directory per weighting and seed (seed = recipe seed + i),
                                          with metrics_<split>.json beside run.json
    RUN_DIR/single_task/<task>/seed<i>/   with single-task baselines: the same architecture on each task
                                          alone (weighting unitary), same seeds
    RUN_DIR/single_task.json              their metrics, mean over seeds: {task: {metric: value}}
                                          (reusable with --baselines)
    RUN_DIR/compare.json                  every number: per weighting, seed, task and metric; times; summary
    RUN_DIR/compare.md                    the summary table (one row per weighting) and a per-task table
    RUN_DIR/compare.png                   mean-over-tasks main metric (and delta m) per weighting, ± std

The multi-task gain Δm (``evaluation.delta_m``) of a run is taken over every task and each of
its metrics (``Task.make_metrics`` names, their direction from ``higher_is_better``) against
the single-task baselines (the mean over seeds of the single-task runs, or a saved
``single_task.json``). Means over seeds come with the sample standard deviation (ddof 1).
The three result files are written only once every run has finished, each through a
temporary file and a rename, so a failed comparison leaves none of them half written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mtlzoo import evaluation, io
from mtlzoo.errors import CompareError
from mtlzoo.evaluation.report import write_results
from mtlzoo.recipes.config import Recipe, recipe_from_dict
from mtlzoo.tasks import Task, main_tasks

SETTINGS_FILE = "compare_settings.json"
RESULT_FILES = ("compare.json", "compare.md", "compare.png")
SINGLE_TASK_DIR = "single_task"
SINGLE_TASK_FILE = "single_task.json"
SINGLE_TASK_WEIGHTING = "unitary"



# ---------------------------------------------------------------------------------------------
# Metrics: direction, per task


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (``evaluation.higher_is_better``); a
    ``CompareError`` for a name that does not tell, rather than a guess."""
    up = evaluation.higher_is_better(metric)
    if up is None:
        raise CompareError(
            f"Cannot tell whether a higher or lower {metric!r} is better, so Δm cannot use it; known metric "
            f"names end in {list(evaluation.HIGHER_IS_BETTER)} (higher is better) or "
            f"{list(evaluation.LOWER_IS_BETTER)} (lower is better)."
        )
    return up


def task_metrics(task: Task) -> list[str]:
    """The names of the metrics ``evaluate`` reports for ``task``, its main metric first."""
    return [m.name for m in task.make_metrics()]


def metric_directions(tasks: Sequence[Task]) -> dict[str, dict[str, bool]]:
    """``{task: {metric: higher_is_better}}`` over each task's metrics."""
    return {t.name: {m: higher_is_better(m) for m in task_metrics(t)} for t in tasks}


def delta_m_over_tasks(results: Mapping[str, Mapping[str, float]], baselines: Mapping[str, Mapping[str, float]],
                       directions: Mapping[str, Mapping[str, bool]]) -> float:
    """``evaluation.delta_m`` over every (task, metric) pair, where tasks may have different
    metrics (each task counts with its own): the mean of the per-pair relative changes.
    Equals ``delta_m(results, baselines, metrics)`` when every task has the same ``metrics``."""
    total, pairs = 0.0, 0
    for task, metrics in directions.items():
        value = evaluation.delta_m({task: results[task]}, baselines, dict(metrics))
        total += value * len(metrics)
        pairs += len(metrics)
    return total / pairs


# ---------------------------------------------------------------------------------------------
# Checks


def parse_weightings(text: str | Sequence[str]) -> list[str]:
    """``"unitary,pcgrad"`` (or a list) -> the names, each registered, none repeated."""
    from mtlzoo.weighting import list_weightings

    names = [n.strip() for n in text.split(",")] if isinstance(text, str) else [str(n).strip() for n in text]
    names = [n for n in names if n]
    registered = list_weightings()
    if not names:
        raise CompareError(f"No weighting to compare; name some of {registered}.")
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise CompareError(f"Unknown weighting(s) {unknown}; registered weightings: {registered}.")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CompareError(f"Weighting(s) {repeated} listed more than once.")
    return names


def read_baselines(path, tasks: Sequence[Task], directions: Mapping[str, Mapping[str, bool]]) -> dict:
    """A ``{task: {metric: value}}`` JSON file (e.g. an earlier run's single_task.json), checked
    to cover every task and Δm metric with a finite, non-zero number."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CompareError(f"Baselines file {str(path)!r} not found.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CompareError(f"Cannot read the baselines file {str(path)!r}: {e}") from None
    return check_baselines(raw, tasks, directions, source=str(path))


def check_baselines(raw, tasks: Sequence[Task], directions: Mapping[str, Mapping[str, bool]], *,
                    source: str = "baselines") -> dict[str, dict[str, float]]:
    if not isinstance(raw, Mapping):
        raise CompareError(f"{source}: expected {{task: {{metric: value}}}}, got {type(raw).__name__}.")
    baselines = {}
    for task in tasks:
        scores = raw.get(task.name)
        if not isinstance(scores, Mapping):
            raise CompareError(f"{source}: no baseline for task {task.name!r} (it has {sorted(raw)}).")
        baselines[task.name] = {}
        for metric in directions[task.name]:
            value = scores.get(metric)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value == 0:
                raise CompareError(
                    f"{source}: task {task.name!r} needs a finite, non-zero {metric!r} baseline; got {value!r}."
                )
            baselines[task.name][metric] = float(value)
    return baselines


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out_dir`` unless ``overwrite`` and it is an earlier comparison."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise CompareError(f"{str(out_dir)!r} exists and is not a directory.")
    if not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise CompareError(f"Output directory {str(out_dir)!r} is not empty; choose another --out or pass --overwrite.")
    if not any((out_dir / name).exists() for name in (SETTINGS_FILE, *RESULT_FILES)):
        raise CompareError(
            f"Refusing to overwrite {str(out_dir)!r}: it does not look like a comparison (no {SETTINGS_FILE})."
        )


def _with(recipe: Recipe, *, weighting, seed: int, tasks: Sequence[str] | None = None) -> Recipe:
    raw = recipe.to_dict()
    raw["training"]["weighting"] = weighting
    raw["training"]["seed"] = seed
    if tasks is not None:
        raw["tasks"] = [t for t in raw["tasks"] if t["name"] in tasks]
        fractions = raw["data"].get("label_fraction", {})
        for name in [n for n in fractions if n not in tasks]:
            del fractions[name]
    return recipe_from_dict(raw, source=recipe.source)


# ---------------------------------------------------------------------------------------------
# The comparison


def _stats(values: Sequence[float]) -> dict[str, float]:
    values = [float(v) for v in values]
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "n": len(values)}


def _score(run_dir: Path, model, recipe: Recipe, eval_data) -> dict[str, Any]:
    names = [t.name for t in recipe.tasks if t.name in eval_data.targets]
    results, auxiliary = evaluation.by_role(evaluation.evaluate(model, eval_data.select(names)), recipe.tasks)
    mean = evaluation.mean_over_tasks(results)
    io.write_json(run_dir / f"metrics_{recipe.evaluation_split}.json",
                  {"split": recipe.evaluation_split, "tasks": results, "mean": mean,
                   **({"auxiliary": auxiliary} if auxiliary else {})})
    run = json.loads((run_dir / "run.json").read_text())
    epochs = int(run.get("epochs_done") or run["epochs"])
    for task, scores in results.items():
        bad = [m for m, v in scores.items() if not math.isfinite(v)]
        if bad:
            print(f"warning: {run_dir}: task {task} has non-finite {bad}", file=sys.stderr, flush=True)
    return {
        "seed": recipe.training.seed,
        "metrics": results,
        **({"auxiliary": auxiliary} if auxiliary else {}),
        "mean": mean,
        "train_seconds": float(run["train_seconds"]),
        "epochs": epochs,
        "seconds_per_epoch": float(run["train_seconds"]) / max(epochs, 1),
        "parameters": int(run["parameters"]),
    }


def compare(
    recipe: Recipe,
    out_dir,
    weightings: str | Sequence[str],
    *,
    seeds: int = 3,
    epochs: int | None = None,
    strategy: str | None = None,
    single_task: bool = False,
    baselines: str | os.PathLike | Mapping | None = None,
    overwrite: bool = False,
    verbose: int = 0,
    command: str | None = None,
    log: Callable[..., None] = print,
) -> dict[str, Any]:
    """Train ``recipe`` with each of ``weightings`` for ``seeds`` seeds into ``out_dir``; return
    the report written to ``out_dir/compare.json``.

    Args:
        weightings: registered weighting names (a list, or comma-separated), each used with its
            default options.
        seeds: runs per weighting; run ``i`` trains with ``training.seed`` = the recipe's + ``i``.
        epochs, strategy: override the recipe's (for the single-task runs too).
        single_task: also train every task alone (the same architecture, weighting unitary, the
            same seeds) for the Δm baselines, and write ``single_task.json``.
        baselines: instead, the baselines as ``{task: {metric: value}}`` or a JSON file of it.
            With neither, the report has no Δm.
        overwrite: replace an earlier comparison in ``out_dir``.
        verbose: Keras ``fit`` verbosity of each run (0: one progress line per run).
        command: the command line, recorded in the report.

    Everything is checked before the first run trains: the weighting names (each is also
    validated against the recipe), ``seeds >= 1``, the output directory and the baselines.
    """
    started_all = time.perf_counter()
    out_dir = Path(out_dir)
    names = parse_weightings(weightings)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise CompareError(f"seeds must be an integer >= 1, got {seeds!r}.")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise CompareError(f"epochs must be a positive integer, got {epochs!r}.")
    if single_task and baselines is not None:
        raise CompareError("Pass either single_task (train the baselines) or baselines (reuse them), not both.")
    # Δm, baselines and the per-task table are over the main tasks; the others train along.
    tasks = main_tasks(recipe.tasks)
    want_delta = single_task or baselines is not None
    directions = metric_directions(tasks) if want_delta else None
    baseline_source = None
    if isinstance(baselines, (str, os.PathLike)):
        baseline_source = os.fspath(baselines)
        baselines = read_baselines(baselines, tasks, directions)
    elif baselines is not None:
        baseline_source = "given"
        baselines = check_baselines(baselines, tasks, directions)
    check_out_dir(out_dir, overwrite)
    base_seed = recipe.training.seed
    seed_values = [base_seed + i for i in range(seeds)]
    # Every recipe is validated before anything trains (a weighting that does not suit the recipe fails here).
    plans = [(w, i, _with(recipe, weighting=w, seed=s)) for w in names for i, s in enumerate(seed_values)]
    single_plans = []
    if single_task:
        single_plans = [(t.name, i, _with(recipe, weighting=SINGLE_TASK_WEIGHTING, seed=s, tasks=[t.name]))
                        for t in tasks for i, s in enumerate(seed_values)]

    if out_dir.exists() and any(out_dir.iterdir()):
        shutil.rmtree(out_dir)  # check_out_dir allowed it: overwrite of an earlier comparison
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "recipe": recipe.name,
        "source": recipe.source,
        "weightings": names,
        "seeds": seed_values,
        "epochs": epochs if epochs is not None else recipe.training.epochs,
        "strategy": strategy or recipe.training.strategy,
        "single_task": single_task,
        "baselines": baseline_source,
        "command": command,
    }
    io.write_json(out_dir / SETTINGS_FILE, settings)

    eval_data = recipe.make_dataset().load_tasks(recipe.evaluation_split, recipe.tasks)
    total = len(plans) + len(single_plans)
    done = 0

    def run(label: str, run_recipe: Recipe, run_dir: Path) -> dict[str, Any]:
        nonlocal done
        import keras

        from mtlzoo.training import trainer

        done += 1
        prefix = f"[{done}/{total}] {label}"
        if verbose:
            log(f"{prefix} ...", flush=True)
        else:
            log(f"{prefix} ...", end="", flush=True)
        began = time.perf_counter()
        model = trainer.train(run_recipe, run_dir, strategy=strategy, epochs=epochs, verbose=verbose)
        result = _score(run_dir, model, run_recipe, eval_data)
        result["run_dir"] = run_dir.relative_to(out_dir).as_posix()
        seconds = time.perf_counter() - began
        elapsed = time.perf_counter() - started_all
        left = elapsed / done * (total - done)
        main = task_metrics(main_tasks(run_recipe.tasks)[0])[0]
        summary = f"{seconds:.1f} s, mean {main} {result['mean'][main]:.4g}"
        eta = f" (elapsed {elapsed:.0f} s, about {left:.0f} s left)" if done < total else ""
        log(f"{prefix} done: {summary}{eta}" if verbose else f" {summary}{eta}", flush=True)
        del model
        keras.backend.clear_session()
        return result

    with _quiet_tensorflow(verbose == 0):
        runs, single_runs, baselines, baseline_source = _run_all(
            run, out_dir, plans, single_plans, tasks, baselines, baseline_source, directions)
    report = _report(recipe, settings, tasks, runs, single_runs, baselines, baseline_source, directions)
    report["wall_seconds"] = round(time.perf_counter() - started_all, 1)
    write_results(out_dir, report)
    return report


@contextlib.contextmanager
def _quiet_tensorflow(enabled: bool):
    """Keep TensorFlow's Python warnings (retracing notices: every run builds a new model)
    out of the one-line progress."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    if enabled:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _run_all(run, out_dir, plans, single_plans, tasks, baselines, baseline_source, directions):
    single_runs: dict[str, dict[str, Any]] = {}
    if single_plans:
        for task, i, task_recipe in single_plans:
            single_runs.setdefault(task, {})[f"seed{i}"] = run(
                f"single-task {task} seed {i}", task_recipe, out_dir / SINGLE_TASK_DIR / task / f"seed{i}")
        baselines = {
            t.name: {m: float(np.mean([r["metrics"][t.name][m] for r in single_runs[t.name].values()]))
                     for m in task_metrics(t)}
            for t in tasks
        }
        baselines = check_baselines(baselines, tasks, directions, source="the single-task runs")
        baseline_source = SINGLE_TASK_FILE
        io.write_json(out_dir / SINGLE_TASK_FILE, baselines)

    runs: dict[str, dict[str, Any]] = {}
    for weighting, i, run_recipe in plans:
        result = run(f"{weighting} seed {i}", run_recipe, out_dir / weighting / f"seed{i}")
        result["delta_m"] = (delta_m_over_tasks(result["metrics"], baselines, directions)
                             if baselines is not None else None)
        runs.setdefault(weighting, {})[f"seed{i}"] = result
    return runs, single_runs, baselines, baseline_source


def _report(recipe, settings, tasks, runs, single_runs, baselines, baseline_source, directions) -> dict[str, Any]:
    main_metrics = {t.name: task_metrics(t)[0] for t in tasks}
    summary = {}
    for weighting, by_seed in runs.items():
        seeds = list(by_seed.values())
        metrics = sorted({m for r in seeds for m in r["mean"]})
        deltas = [r["delta_m"] for r in seeds if r["delta_m"] is not None]
        summary[weighting] = {
            "mean_over_tasks": {m: _stats([r["mean"][m] for r in seeds]) for m in metrics},
            "delta_m": _stats(deltas) if deltas else None,
            "seconds_per_epoch": float(np.mean([r["seconds_per_epoch"] for r in seeds])),
            "train_seconds": float(np.sum([r["train_seconds"] for r in seeds])),
            "parameters": seeds[0]["parameters"],
            "per_task": {t: _stats([r["metrics"][t][m] for r in seeds]) for t, m in main_metrics.items()},
        }
    _versus_unitary(summary, main_metrics)
    single = None
    if baselines is not None:
        single = {"source": baseline_source, "baselines": baselines}
        if single_runs:
            per_seed = [{t: single_runs[t][k]["metrics"][t] for t in single_runs} for k in next(iter(single_runs.values()))]
            metrics = sorted({m for scores in per_seed[0].values() for m in scores if m != "examples"})
            single.update(
                runs=single_runs,
                summary={
                    "mean_over_tasks": {m: _stats([evaluation.mean_over_tasks(s)[m] for s in per_seed]) for m in metrics},
                    "per_task": {t: _stats([s[t][m] for s in per_seed]) for t, m in main_metrics.items()},
                    # every task's model, one after another
                    "seconds_per_epoch": float(np.mean([
                        sum(single_runs[t][k]["seconds_per_epoch"] for t in single_runs)
                        for k in next(iter(single_runs.values()))
                    ])),
                    "parameters": sum(next(iter(r.values()))["parameters"] for r in single_runs.values()),
                },
            )
    return {
        "recipe": recipe.name,
        "description": recipe.description,
        "source": recipe.source,
        "architecture": recipe.architecture,
        "dataset": recipe.dataset,
        "data_options": dict(recipe.data_options),
        "evaluation_split": recipe.evaluation_split,
        **{k: settings[k] for k in ("command", "weightings", "seeds", "epochs", "strategy")},
        "tasks": {t.name: {"main_metric": main_metrics[t.name], "metrics": task_metrics(t),
                           **({"higher_is_better": directions[t.name]} if directions else {})} for t in tasks},
        "std": "sample standard deviation over seeds (ddof 1)",
        "delta_m": ("Δm in % (Maninis et al. 2019) over every task and metric, per seed, against the "
                    "single-task baselines" if baselines is not None else None),
        "runs": runs,
        "single_task": single,
        "summary": summary,
        "machine": _machine(),
    }


def _versus_unitary(summary: dict[str, Any], main_metrics: Mapping[str, str]) -> None:
    """Mark each weighting ``better``, ``worse`` or ``tie`` against ``unitary``: better when its
    mean Δm (without baselines: its mean-over-tasks main metric, in the metric's direction) beats
    unitary's by more than the larger of the two standard deviations over seeds (at least 2 seeds)."""
    if "unitary" not in summary:
        return
    main = list(main_metrics.values())[0]
    with_delta = summary["unitary"]["delta_m"] is not None
    if with_delta:
        key, higher = "delta_m", True
    else:
        try:
            key, higher = main, higher_is_better(main)
        except CompareError:
            return
    for weighting, s in summary.items():
        mine = s["delta_m"] if with_delta else s["mean_over_tasks"].get(key)
        ref = summary["unitary"]["delta_m"] if with_delta else summary["unitary"]["mean_over_tasks"].get(key)
        if weighting == "unitary" or mine is None or ref is None or min(mine["n"], ref["n"]) < 2:
            continue  # one seed has no spread to judge a difference by
        gain = (mine["mean"] - ref["mean"]) * (1 if higher else -1)
        margin = max(mine["std"], ref["std"])
        s["vs_unitary"] = {"on": "delta_m" if with_delta else f"mean {key}", "gain": gain, "margin": margin,
                           "verdict": "better" if gain > margin else "worse" if gain < -margin else "tie"}


def _machine() -> dict[str, Any]:
    import platform

    import keras

    info = {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "keras": keras.__version__, "backend": keras.backend.backend()}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["gpus"] = len(tf.config.list_physical_devices("GPU"))
    return info
