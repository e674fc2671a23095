"""Pretrained presets: a trained model, its config and its model card, in one directory.

A preset directory holds::

    config.json         the model's Keras config (architecture, tasks and their kinds)
    model.weights.h5    the weights
    metadata.json       the model card: the recipe it was trained from (embedded), dataset and
                        split, measured per-task test metrics, parameter count, versions,
                        training time and hardware, and the weights' sha256

``mtlzoo.load(handle)`` takes a built-in name (``mtlzoo.list_pretrained()``), a local
directory, any ``tf.io.gfile`` path (``gs://...``), or an ``https://`` URL of a ``.tar.gz``
archive with ``#sha256=<64 hex digits>`` appended, which is downloaded once into the cache
(``$MTLZOO_CACHE``, default ``~/.cache/mtlzoo``), verified, and unpacked atomically.

Downloads (``mtlzoo.presets.download``) are bounded and verified.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

import keras

from mtlzoo.data.files import file_digest
from mtlzoo.errors import PresetError
from mtlzoo.presets.download import (
    CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE, DownloadLimits, cache_dir, fetch_url,
)

BUILTIN_DIR = Path(__file__).resolve().parent / "pretrained"




def list_pretrained() -> dict[str, dict]:
    """``{name: model card}`` of the presets that ship with mtlzoo."""
    if not BUILTIN_DIR.is_dir():
        return {}
    return {p.name: json.loads((p / METADATA_FILE).read_text()) for p in sorted(BUILTIN_DIR.iterdir())
            if (p / METADATA_FILE).is_file()}


def zoo_table(cards: dict[str, dict] | None = None) -> str:
    """The README's table of shipped presets, from their model cards."""
    cards = list_pretrained() if cards is None else cards
    lines = ["| preset | architecture | data (split) | test metrics (mean over tasks) | Δm | parameters | trained |",
             "| --- | --- | --- | --- | ---: | ---: | --- |"]
    for name, card in cards.items():
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in card["mean_metrics"].items())
        delta = f"{card['delta_m']['percent']:+.2f} %" if card.get("delta_m") else "–"
        training = card["training"]
        lines.append(
            f"| `{name}` | `{card['recipe']['architecture']['name']}` | `{card['dataset']}` ({card['split']}, "
            f"{card['examples']} examples) | {metrics} | {delta} | {card['parameters']:,} | {training['epochs']} epochs, "
            f"{training['seconds']:.0f} s on {training['cpus']} CPUs ({training['backend']}) |"
        )
    return "\n".join(lines) + "\n"


def sync_readme(readme) -> bool:
    """Rewrite the table between the README's preset markers; True if it changed."""
    readme = Path(readme)
    text = readme.read_text()
    begin, end = "<!-- presets:begin -->\n", "<!-- presets:end -->"
    if begin not in text or end not in text:
        raise ValueError(f"{readme} lacks the {begin.strip()} / {end} markers.")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    updated = head + begin + zoo_table() + end + tail
    readme.write_text(updated)
    return updated != text


def save_preset(run_dir, preset_dir, *, split: str | None = None, baselines: Mapping | None = None) -> Path:
    """Write the trained run in ``run_dir`` as a preset, its card measured on ``split``.

    ``baselines`` (``{"source": "...", "metrics": {task: {metric: value}}}``, single-task
    results on the same split) adds the card's Δm. The directory appears complete or not at all
    (written aside, then renamed).
    """
    from mtlzoo import evaluation
    from mtlzoo.training.trainer import load_run

    run_dir, preset_dir = Path(run_dir), Path(preset_dir)
    if preset_dir.exists():
        raise FileExistsError(f"Preset directory {str(preset_dir)!r} already exists.")
    recipe, model = load_run(run_dir)
    split = split or recipe.evaluation_split
    data = recipe.make_dataset().load_tasks(split, model.tasks)
    metrics = evaluation.evaluate(model, data)
    run = json.loads((run_dir / "run.json").read_text())
    return _write_preset(model, preset_dir, {
        "name": preset_dir.name,
        "recipe": recipe.to_dict(),
        "recipe_yaml": (run_dir / "recipe.yaml").read_text(),
        "dataset": recipe.dataset,
        "data_options": dict(recipe.data_options),
        "split": split,
        "examples": len(data),
        "metrics": metrics,
        "mean_metrics": evaluation.mean_over_tasks(metrics),
        "delta_m": _delta_m(metrics, baselines) if baselines else None,
        "parameters": int(model.count_params()),
        "versions": _versions(),
        # The epochs trained: fewer than the recipe's when early stopping ended the run.
        "training": {"seconds": run.get("train_seconds"), "epochs": run.get("epochs_done", run.get("epochs")),
                     "backend": run.get("backend"), "strategy": run.get("strategy"),
                     "machine": run.get("machine"), "cpus": os.cpu_count()},
    })


def save_model_preset(model: keras.Model, preset_dir) -> Path:
    """Write ``model`` (any Keras model, e.g. one fine-tuned in a notebook) as a preset.

    Its card holds what the model itself knows (parameters, versions, the weights' sha256), not
    measured metrics or a recipe: ``mtlzoo preset RUN_DIR`` writes those for a trained run.
    """
    preset_dir = Path(preset_dir)
    if preset_dir.exists():
        raise FileExistsError(f"Preset directory {str(preset_dir)!r} already exists.")
    return _write_preset(model, preset_dir, {"name": preset_dir.name, "parameters": int(model.count_params()),
                                             "versions": _versions()})


def _write_preset(model: keras.Model, preset_dir: Path, card: dict) -> Path:
    """Config, weights and ``card`` (with the weights' sha256) into ``preset_dir``, all or nothing."""
    preset_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{preset_dir.name}.", dir=preset_dir.parent))
    try:
        (staging / CONFIG_FILE).write_text(json.dumps(keras.saving.serialize_keras_object(model), indent=1))
        model.save_weights(staging / WEIGHTS_FILE)
        card = {**card, "weights_sha256": file_digest(staging / WEIGHTS_FILE)}
        (staging / METADATA_FILE).write_text(json.dumps(card, indent=1) + "\n")
        staging.chmod(0o755)  # mkdtemp made it private
        os.replace(staging, preset_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return preset_dir


def _versions() -> dict:
    return {"mtlzoo": _mtlzoo_version(), "keras": keras.__version__, "tensorflow": _tf_version(),
            "python": platform.python_version()}


def _delta_m(metrics, baselines: Mapping) -> dict:
    from mtlzoo import evaluation

    shared = sorted({m for scores in baselines["metrics"].values() for m in scores}
                    & {m for scores in metrics.values() for m in scores})
    higher = {m: bool(evaluation.higher_is_better(m)) for m in shared}
    return {"percent": evaluation.delta_m(metrics, baselines["metrics"], higher),
            "metrics": shared, "baselines": dict(baselines["metrics"]), "source": baselines.get("source", "")}


def load(handle: str | os.PathLike, *, compile: bool = False,
         limits: DownloadLimits | None = None) -> keras.Model:
    """The pretrained model named by ``handle``, its weights verified against its card.

    ``compile=True`` compiles it with each task's default loss and metrics (Adam), ready for
    ``fit``; otherwise compile it yourself. ``limits`` bound a URL's download (default:
    ``DownloadLimits.from_env()``).
    """
    directory = resolve(handle, limits=limits)
    card = read_card(directory)
    weights = directory / WEIGHTS_FILE
    if file_digest(weights) != card.get("weights_sha256"):
        raise PresetError(
            f"Preset {str(handle)!r}: the sha256 of {WEIGHTS_FILE} does not match its model card; the file is "
            "corrupt or was replaced."
        )
    try:
        model = keras.saving.deserialize_keras_object(json.loads((directory / CONFIG_FILE).read_text()))
        model.load_weights(weights)
    except (ValueError, TypeError, KeyError, OSError, json.JSONDecodeError) as e:
        raise PresetError(f"Preset {str(handle)!r} cannot be built from its files: {e}") from e
    if compile:
        model.compile(optimizer="adam")
    return model


def read_card(directory) -> dict:
    """The model card of the preset in ``directory``, after checking its files are there."""
    directory = Path(directory)
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE) if not (directory / f).is_file()]
    if missing:
        raise PresetError(f"{str(directory)!r} is not a preset: it lacks {missing}.")
    try:
        return json.loads((directory / METADATA_FILE).read_text())
    except json.JSONDecodeError as e:
        raise PresetError(f"{str(directory / METADATA_FILE)!r} is not valid JSON: {e}") from None


def resolve(handle, *, limits: DownloadLimits | None = None) -> Path:
    """A local directory holding the preset ``handle`` names (fetched into the cache if remote)."""
    text = os.fspath(handle)
    if text.startswith(("https://", "http://")):
        return fetch_url(text, DownloadLimits.from_env() if limits is None else limits)
    if "://" in text:
        return _copy_gfile(text)
    if (BUILTIN_DIR / text).is_dir() and os.sep not in text:
        return BUILTIN_DIR / text
    if Path(text).is_dir():
        return Path(text)
    raise PresetError(
        f"No preset {text!r}: not a built-in name ({sorted(list_pretrained())}), a directory, a gfile path "
        "(scheme://...) or an https:// URL."
    )


def _copy_gfile(path: str) -> Path:
    """The preset at a gfile path, copied into the cache (replaced whole on every load)."""
    import tensorflow as tf

    if not tf.io.gfile.isdir(path):
        raise PresetError(f"No preset directory at {path!r}.")
    target = cache_dir() / "gfile" / hashlib.sha256(path.encode()).hexdigest()[:32]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".copy.", dir=target.parent))
    try:
        for name in (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE):
            source = f"{path.rstrip('/')}/{name}"
            if not tf.io.gfile.exists(source):
                raise PresetError(f"{path!r} is not a preset: it lacks {name}.")
            tf.io.gfile.copy(source, str(staging / name), overwrite=True)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _mtlzoo_version() -> str:
    import mtlzoo

    return mtlzoo.__version__


def _tf_version() -> str | None:
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf.__version__
