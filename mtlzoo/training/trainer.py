"""``train``: a recipe in, a run directory out.

A run directory holds everything later commands need::

    RUN_DIR/recipe.yaml          the resolved recipe (evaluate and export read it)
    RUN_DIR/model.keras          the trained model, with its optimizer state
    RUN_DIR/history.json         per-epoch training and validation logs, with the task means
                                 mean_val_<metric> (e.g. mean_val_loss)
    RUN_DIR/run.json             backend, strategy, replicas, weighting, epochs done, early
                                 stopping, time, parameter count, versions
    RUN_DIR/checkpoints/         last.keras + state.json after every epoch (for --resume), and
                                 best-NNNN.npz (the best weights) with early stopping
    RUN_DIR/logs/                TensorBoard logs: every log value once per epoch (train/, validation/)
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import keras

from mtlzoo import io, models
from mtlzoo.recipes.config import Recipe, TrainingConfig, dump_recipe, load_recipe, weighting_name
from mtlzoo.errors import RunDirError
from mtlzoo.tasks import main_tasks
from mtlzoo.muir import AlignmentSearch
from mtlzoo.training import callbacks as mtl_callbacks
from mtlzoo.training import multi_worker
from mtlzoo.training.strategies import fit_scope, make_strategy, num_replicas, strategy_scope

RECIPE_FILE = "recipe.yaml"
MODEL_FILE = "model.keras"




def make_optimizer(config: TrainingConfig) -> keras.optimizers.Optimizer:
    """The recipe's optimizer, with its learning rate and weight decay.

    ``weight_decay`` 0 means no decay: ``adam``, ``sgd`` and ``rmsprop`` then get Keras's
    ``weight_decay=None`` (exactly as without the option) and ``adamw`` gets 0.0 rather than
    its Keras default of 0.004. Keras applies a weight decay decoupled from the gradient
    (``w -= learning_rate * weight_decay * w`` each step) in every optimizer.
    """
    classes = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    decay = config.weight_decay or (0.0 if config.optimizer == "adamw" else None)
    return classes[config.optimizer](learning_rate=config.learning_rate, weight_decay=decay)


@contextlib.contextmanager
def precision(policy: str):
    """Build (or load) models under the dtype policy ``policy``, restoring the global one after.

    Under ``mixed_float16`` or ``mixed_bfloat16`` the layers compute in half precision with
    float32 weights; task outputs stay float32, and ``compile`` adds loss scaling for float16
    (also when a checkpoint is loaded to resume).
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(recipe: Recipe, input_spec) -> keras.Model:
    """The recipe's architecture for its tasks, compiled with each task's defaults, the recipe's
    optimizer and weighting, and its precision."""
    with precision(recipe.training.precision):
        model = models.create_model(recipe.architecture, recipe.tasks, input_spec, **recipe.params)
        model.compile(optimizer=make_optimizer(recipe.training), weighting=recipe.training.weighting,
                      loss_normalization=recipe.training.loss_normalization)
    return model


def make_early_stopping(recipe: Recipe, verbose: int = 0) -> mtl_callbacks.TaskEarlyStopping | None:
    """The recipe's ``training.early_stopping`` as a callback (None when it has none), its
    ``mode: auto`` resolved from the monitored key (``min`` for losses and errors)."""
    options = recipe.training.early_stopping
    if options is None:
        return None
    options = dict(options)
    mode = mtl_callbacks.resolve_mode(options["monitor"], options.pop("mode", "auto"), recipe.tasks)
    return mtl_callbacks.TaskEarlyStopping(**options, mode=mode, verbose=verbose)


def _check_resumable(recipe: Recipe, run_dir: Path) -> None:
    saved = load_recipe(run_dir / RECIPE_FILE).to_dict()
    given = recipe.to_dict()
    # Only the number of epochs may change between a run and its resumption.
    saved["training"].pop("epochs")
    given["training"].pop("epochs")
    given.pop("description"), saved.pop("description")
    if saved != given:
        raise RunDirError(
            f"Cannot resume {str(run_dir)!r}: its recipe differs from {recipe.source!r} "
            "(only training.epochs may change)."
        )


def train(
    recipe: Recipe,
    run_dir,
    *,
    strategy: str | None = None,
    epochs: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    verbose="auto",
    start_from: keras.Model | None = None,
    callbacks=(),
) -> keras.Model:
    """Train ``recipe`` into ``run_dir`` and return the trained model.

    Args:
        strategy: overrides ``training.strategy`` (``auto``, ``one_device``, ``mirrored``,
            ``multi_worker``: run the same command on every worker of ``TF_CONFIG``, with a
            ``run_dir`` on storage all of them see; only the chief writes it, and a resumed run
            restarts every worker from the chief's checkpoint).
        epochs: overrides ``training.epochs`` (the total, also when resuming).
        resume: continue from ``run_dir/checkpoints`` (optimizer state included).
        overwrite: delete an existing run in ``run_dir`` first (only if it holds a recipe.yaml).
        verbose: Keras ``fit`` verbosity (1: progress bar, 2: a line per epoch, 0: silent).
        start_from: a model to train instead of building the recipe's architecture (fine-tuning
            a preset); it is compiled with the recipe's optimizer and weighting. Ignored when
            resuming.
        callbacks: more Keras callbacks for ``fit``; they run after the zoo's own, so at the
            end of an epoch they see its checkpoint written and its task means in the logs.

    With ``training.early_stopping`` the run may end before ``epochs``; its state is in every
    checkpoint, so a resumed run stops where an uninterrupted one would, and resuming a run
    that already stopped early trains no further (it only writes the model and run.json again).
    """
    run_dir = Path(run_dir)
    config = recipe.training
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}.")
    total_epochs = epochs if epochs is not None else config.epochs
    callbacks = list(callbacks)
    for callback in callbacks:
        if not isinstance(callback, keras.callbacks.Callback):
            raise TypeError(f"callbacks must be keras.callbacks.Callback instances, got {callback!r}.")
    strategy_name = strategy or config.strategy
    writer = strategy_name != "multi_worker" or multi_worker.is_chief()
    recorder = mtl_callbacks.RunRecorder(run_dir, writes=writer)
    replaces = False
    if resume:
        state = read_state(recorder.state_path)
        _check_resumable(recipe, run_dir)
    elif writer and run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise RunDirError(
                f"Run directory {str(run_dir)!r} is not empty; choose another --out, or pass "
                "--resume to continue it or --overwrite to replace it."
            )
        if not (run_dir / RECIPE_FILE).is_file():
            raise RunDirError(
                f"Refusing to overwrite {str(run_dir)!r}: it does not look like a run directory "
                f"(no {RECIPE_FILE})."
            )
        replaces = True  # once the new run is known to start: data and model are checked first

    keras.utils.set_random_seed(config.seed)
    dataset = recipe.make_dataset()
    names = [t.name for t in recipe.tasks]
    train_data, val_data = recipe.load_training_splits(dataset)

    tf_strategy = make_strategy(strategy_name)
    initial_epoch = 0
    stopper = make_early_stopping(recipe, verbose=0 if verbose == 0 else 1)
    if stopper is not None:
        recorder.extra_state["early_stopping"] = stopper
    with strategy_scope(tf_strategy):
        if resume:
            initial_epoch = state["epochs_done"]
            recorder.history = state["history"]
            with precision(config.precision):
                model = load_model(recorder.checkpoint_path)
            try:
                if stopper is not None:
                    stopper.restore_state(state.get("early_stopping"), recorder.state_path.parent)
                if "random_state" in state:  # older runs lack it; they resume with fresh generators
                    mtl_callbacks.restore_random_state(model, state["random_state"])
            except (ValueError, TypeError, KeyError, OSError) as e:
                raise RunDirError(f"{str(recorder.state_path)!r} does not fit its checkpoint "
                                  f"{str(recorder.checkpoint_path)!r}: it {e}.") from None
        elif start_from is not None:
            model = start_from
            model.compile(optimizer=make_optimizer(config), weighting=config.weighting,
                          loss_normalization=config.loss_normalization)
        else:
            model = build_model(recipe, dataset.input_spec())
    # A run that stopped early is finished: resuming it trains no further epoch.
    last_epoch = initial_epoch if stopper is not None and stopper.already_stopped else total_epochs

    # The guard first, so that nothing records or checkpoints an epoch whose loss is not finite;
    # the task means next, so that early stopping, the records and TensorBoard see them.
    # The task means (what early stopping watches by default) are over the main tasks only.
    main_names = [t.name for t in main_tasks(recipe.tasks)]
    loop_callbacks = [mtl_callbacks.MeanTaskMetric(main_names), recorder]
    if verbose:
        # Silent, it would still make fit wait for every batch's logs.
        loop_callbacks.append(mtl_callbacks.TaskProgbar(names))
    if stopper is not None:
        loop_callbacks.insert(1, stopper)  # before the recorder, which checkpoints its state
    if config.alignment_search is not None:
        # MUiR: one epoch is one generation; the best (by val_loss) is restored when the search ends.
        loop_callbacks.insert(0, AlignmentSearch(**config.alignment_search))
    loop_callbacks.insert(0, mtl_callbacks.StopOnNonFiniteLoss())
    if writer and keras.backend.backend() == "tensorflow":
        loop_callbacks.append(mtl_callbacks.EpochTensorBoard(str(run_dir / "logs")))
    loop_callbacks += callbacks

    # batch_size is the global batch: each step splits it over all replicas of all workers. The
    # stream of batches is endless and a function of the seed alone, so a resumed run starts
    # at the very batch an uninterrupted one would be at.
    steps = config.steps_per_epoch or -(-len(train_data) // config.batch_size)
    train_batches = train_data.to_tf_dataset(config.batch_size, shuffle=config.shuffle, seed=config.seed,
                                             repeat=True, first_batch=initial_epoch * steps)
    val_batches = val_data.to_tf_dataset(config.batch_size)
    if strategy_name == "multi_worker":
        train_batches, val_batches = multi_worker.shard_by_data(train_batches), multi_worker.shard_by_data(val_batches)
    with _replacing(run_dir, recorder.state_path) if replaces else contextlib.nullcontext():
        if writer:
            run_dir.mkdir(parents=True, exist_ok=True)
            dump_recipe(recipe, run_dir / RECIPE_FILE)
        started = time.perf_counter()
        with fit_scope(tf_strategy):
            model.fit(
                train_batches,
                steps_per_epoch=steps,
                validation_data=val_batches,
                epochs=max(last_epoch, initial_epoch),
                initial_epoch=initial_epoch,
                callbacks=loop_callbacks,
                verbose=verbose,
                shuffle=False,  # the stream is shuffled already (seeded, per pass)
            )
    seconds = time.perf_counter() - started
    if not writer:
        return model
    io.save_model(model, run_dir / MODEL_FILE)
    io.write_json(
        run_dir / "run.json",
        {
            "recipe": recipe.name,
            "architecture": recipe.architecture,
            "backend": keras.backend.backend(),
            "strategy": strategy_name,
            "replicas": num_replicas(tf_strategy),
            "weighting": weighting_name(config.weighting),
            "epochs": total_epochs,
            "epochs_done": len(recorder.history.get("loss", [])),
            "initial_epoch": initial_epoch,
            **({"early_stopping": stopper.summary()} if stopper is not None else {}),
            "train_seconds": round(seconds, 3),
            "parameters": int(model.count_params()),
            "keras": keras.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
    )
    return model


def load_run(run_dir) -> tuple[Recipe, keras.Model]:
    """The recipe and trained model of a finished run."""
    run_dir = Path(run_dir)
    model_path = run_dir / MODEL_FILE
    if not model_path.exists():
        raise RunDirError(f"{str(run_dir)!r} holds no trained model ({MODEL_FILE}); run `mtlzoo train` first.")
    return load_recipe(run_dir / RECIPE_FILE), load_model(model_path)


def load_model(path) -> keras.Model:
    """``keras.saving.load_model`` (safe mode: no code in the file runs), with one
    ``RunDirError`` naming the file when it is damaged or holds what safe mode refuses."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise RunDirError(f"{str(path)!r} is damaged: not a .keras (zip) archive; it may be truncated.")
    try:
        return keras.saving.load_model(path)
    except (ValueError, TypeError, KeyError, AttributeError, OSError, EOFError, zipfile.BadZipFile) as e:
        lines = str(e).strip().splitlines() or [type(e).__name__]
        if "safe_mode" in str(e):
            raise RunDirError(
                f"{str(path)!r} holds Python code (e.g. a Lambda layer) that safe mode refuses to run; "
                f"rebuild the model from registered layers. Keras says: {lines[0]}"
            ) from None
        raise RunDirError(f"{str(path)!r} is damaged or not an mtlzoo model: {lines[0]}") from None


def read_state(path) -> dict[str, Any]:
    """A checkpoint's ``state.json``, checked, or one ``RunDirError`` naming the file."""
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"Nothing to resume: {str(path)!r} does not exist.")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDirError(f"{str(path)!r} is damaged: not readable JSON ({e}); train afresh with --overwrite.") from None

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    checks = (
        ("epochs_done", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
        ("history", lambda v: isinstance(v, dict) and all(isinstance(x, list) and all(map(number, x))
                                                           for x in v.values()), "{log key: [numbers]}"),
        ("random_state", lambda v: isinstance(v, list) and all(isinstance(x, list) for x in v), "a list of lists"),
        ("early_stopping", lambda v: v is None or isinstance(v, dict), "null or a mapping"),
    )
    if not isinstance(state, dict):
        raise RunDirError(f"{str(path)!r} is damaged: expected a JSON object, got {type(state).__name__}.")
    for key, check, expected in checks:
        required = key in ("epochs_done", "history")
        if (key in state or required) and not check(state.get(key)):
            raise RunDirError(f"{str(path)!r} is damaged: {key!r} should be {expected}, got {state.get(key)!r:.80}.")
    return state


@contextlib.contextmanager
def _replacing(run_dir: Path, state_path: Path):
    """Move the earlier run in ``run_dir`` aside while a new one starts there: it comes back if
    the new run fails before its first checkpoint, and is deleted once there is one."""
    aside = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.replaced.", dir=run_dir.parent))
    aside.rmdir()
    os.replace(run_dir, aside)
    try:
        yield
    except BaseException:
        if not state_path.exists():
            shutil.rmtree(run_dir, ignore_errors=True)
            os.replace(aside, run_dir)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
