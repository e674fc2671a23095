"""Hyperparameter search with keras-tuner over a recipe: architecture, its parameters, loss
weights, weighting method and learning rate, scored on per-task validation metrics.

A recipe's ``tuning`` section::

    tuning:
      objective: [{name: val_left_accuracy, direction: max}, {name: val_right_accuracy, direction: max}]
      max_trials: 8
      algorithm: random            # or bayesian
      space:
        architecture: [hard_sharing, cross_stitch]
        learning_rate: {min: 0.0003, max: 0.01, sampling: log}
        params: {shared_units: [[50], [100]], units: [[50], [100]]}   # each applies where accepted
        loss_weights: {left: {min: 0.5, max: 2.0}}
        weighting: [unitary, uncertainty, pcgrad, {name: cagrad, c: 0.4}]

Lists are choices (any YAML value); ``{min, max[, step, sampling]}`` is a numeric range. Several
objectives are summed, each with its direction. The default objective is ``mean_val_loss``, the
mean validation loss of the main tasks (auxiliary and adversarial tasks are not selected on).
``tune`` returns the best trial as a recipe; ``mtlzoo tune RECIPE --out best.yaml`` writes it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from mtlzoo import models
from mtlzoo.architectures import registry
from mtlzoo.errors import TuningError
from mtlzoo.tasks import main_tasks
from mtlzoo.training import callbacks as mtl_callbacks

ALGORITHMS = ("random", "bayesian")




def _draw(hp, name: str, spec):
    """One hyperparameter: a choice (by index, so that any YAML value can be a choice) or a range."""
    if isinstance(spec, list):
        if not spec:
            raise TuningError(f"tuning.space.{name}: an empty list of choices.")
        return spec[hp.Choice(name, list(range(len(spec))))]
    if isinstance(spec, Mapping) and {"min", "max"} <= set(spec):
        low, high = spec["min"], spec["max"]
        if isinstance(low, int) and isinstance(high, int) and not isinstance(spec.get("step", 1), float):
            return hp.Int(name, low, high, step=spec.get("step", 1))
        return hp.Float(name, float(low), float(high), step=spec.get("step"), sampling=spec.get("sampling", "linear"))
    raise TuningError(f"tuning.space.{name}: expected a list of choices or {{min, max}}, got {spec!r}.")


def choose(recipe, space: Mapping[str, Any], hp):
    """The recipe with every searched setting drawn from ``hp``: (recipe, loss weights)."""
    unknown = sorted(set(space) - {"architecture", "learning_rate", "params", "loss_weights", "weighting"})
    if unknown:
        raise TuningError(f"tuning.space: unknown key(s) {unknown}; expected architecture, learning_rate, params, "
                         "loss_weights, weighting.")
    architecture = _draw(hp, "architecture", space["architecture"]) if "architecture" in space else recipe.architecture
    accepted = registry.get_architecture(architecture).parameters()
    params = {k: v for k, v in recipe.params.items() if k in accepted}
    for name, spec in (space.get("params") or {}).items():
        value = _draw(hp, f"params.{name}", spec)
        if name in accepted:
            params[name] = value
    training = recipe.training
    if "weighting" in space:
        training = dataclasses.replace(training, weighting=_draw(hp, "weighting", space["weighting"]))
    if "learning_rate" in space:
        training = dataclasses.replace(training, learning_rate=float(_draw(hp, "learning_rate", space["learning_rate"])))
    task_names = [t.name for t in recipe.tasks]
    weights = {}
    for task, spec in (space.get("loss_weights") or {}).items():
        if task not in task_names:
            raise TuningError(f"tuning.space.loss_weights names unknown task {task!r}; the tasks are {task_names}.")
        weights[task] = float(_draw(hp, f"loss_weights.{task}", spec))
    tasks = tuple(dataclasses.replace(t, weight=weights.get(t.name, t.weight)) for t in recipe.tasks)
    return dataclasses.replace(recipe, architecture=architecture, params=params, training=training, tasks=tasks)


def objectives(spec):
    """keras-tuner objectives from a log key (``"mean_val_loss"``) or ``[{name, direction}, ...]``."""
    import keras_tuner

    if isinstance(spec, str):
        return keras_tuner.Objective(spec, "max" if "accuracy" in spec or "auc" in spec else "min")
    found = []
    for entry in spec:
        if not isinstance(entry, Mapping) or set(entry) != {"name", "direction"} or \
                entry["direction"] not in ("min", "max"):
            raise TuningError(f"tuning.objective: expected entries {{name, direction: min|max}}, got {entry!r}.")
        found.append(keras_tuner.Objective(entry["name"], entry["direction"]))
    return found


def tune(recipe, directory, *, overwrite: bool = False, verbose: int = 0):
    """Search ``recipe.tuning`` and return ``(best recipe, tuner)``; trials live in ``directory``."""
    import keras_tuner

    from mtlzoo.training.trainer import make_optimizer

    settings = dict(recipe.tuning)
    unknown = sorted(set(settings) - {"objective", "max_trials", "algorithm", "space", "seed"})
    if unknown or "space" not in settings:
        raise TuningError(f"tuning: needs 'space' (and takes objective, max_trials, algorithm, seed); got {sorted(settings)}.")
    algorithm = settings.get("algorithm", "random")
    if algorithm not in ALGORITHMS:
        raise TuningError(f"tuning.algorithm: expected one of {list(ALGORITHMS)}, got {algorithm!r}.")
    # Every setting drawn once at its default, so that a bad space fails here, not in a trial
    # (keras-tuner would retry a failing trial before giving up).
    choose(recipe, settings["space"], keras_tuner.HyperParameters())
    objective = objectives(settings.get("objective", mtl_callbacks.DEFAULT_MONITOR))
    dataset = recipe.make_dataset()
    train, val = recipe.load_training_splits(dataset)
    input_spec = dataset.input_spec()

    def build(hp):
        chosen = choose(recipe, settings["space"], hp)
        model = models.create_model(chosen.architecture, chosen.tasks, input_spec, **chosen.params)
        model.compile(optimizer=make_optimizer(chosen.training), weighting=chosen.training.weighting,
                      loss_normalization=chosen.training.loss_normalization)
        return model

    tuner_class = {"random": keras_tuner.RandomSearch, "bayesian": keras_tuner.BayesianOptimization}[algorithm]
    tuner = tuner_class(
        build, objective=objective,
        max_trials=int(settings.get("max_trials", 4)), seed=int(settings.get("seed", recipe.training.seed)),
        directory=str(directory), project_name=recipe.name, overwrite=overwrite,
    )
    batch = recipe.training.batch_size
    # An endless stream, a new order each pass (as in mtlzoo train); every trial starts it afresh.
    stream = train.to_tf_dataset(batch, shuffle=recipe.training.shuffle, seed=recipe.training.seed, repeat=True)
    tuner.search(stream, steps_per_epoch=recipe.training.steps_per_epoch or -(-len(train) // batch),
                 epochs=recipe.training.epochs, validation_data=val.to_tf_dataset(batch), verbose=verbose,
                 callbacks=[mtl_callbacks.MeanTaskMetric([t.name for t in main_tasks(recipe.tasks)])])
    best = choose(recipe, settings["space"], tuner.get_best_hyperparameters(1)[0])
    return dataclasses.replace(best, tuning={}), tuner
