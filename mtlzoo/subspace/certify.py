"""From a trained subspace model to a generalisation bound: quantise, fine-tune, code, bound.

``certify(model, train, test)`` quantises Q and alpha (the free parameters) to a learned codebook
of ``levels`` values, fine-tunes with the quantisation in the forward pass, arithmetic-codes the
level indices (``compression.message_length``) and bounds the average test error over the tasks
(``bounds.occam_bound``, n = every task's training examples together). For a model with nothing
shared (``task_dim=None`` columns: T single-task subspace models) it also codes each task's own
coordinates and gives the T single-task bounds, each at confidence delta / T.
"""

from __future__ import annotations

import keras
import numpy as np

from mtlzoo.data.base import MultiTaskArrays
from mtlzoo.subspace import bounds
from mtlzoo.subspace.columns import SubspaceColumns, find_columns
from mtlzoo.subspace.compression import kmeans_codebook, message_length
from mtlzoo.validation import positive_int


def quantized_copy(model: keras.Model, levels: int) -> keras.Model:
    """A copy of a subspace model whose free values pass through a codebook of ``levels`` values
    (``SubspaceColumns(levels=...)``), started from k-means on those values."""
    source = find_columns(model)

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, SubspaceColumns):
            config["levels"] = levels
        return type(layer).from_config(config)

    copy = keras.models.clone_model(keras.Model(model.input, model.output), clone_function=clone)
    for layer in model.layers:
        if layer.weights and not isinstance(layer, SubspaceColumns):
            copy.get_layer(layer.name).set_weights(layer.get_weights())
    target = find_columns(copy)
    target.column.set_weights(source.column.get_weights())
    for mine, theirs in zip(target.free_variables(), source.free_variables(), strict=True):
        mine.assign(theirs)
    values = np.concatenate([keras.ops.convert_to_numpy(v).ravel() for v in source.free_variables()])
    target.codebook.assign(kmeans_codebook(values, levels))
    if hasattr(model, "tasks"):
        copy = type(model)(inputs=copy.input, outputs=copy.output, tasks=model.tasks, name=model.name)
    return copy


def task_errors(model: keras.Model, data: MultiTaskArrays, batch_size: int = 512) -> dict[str, tuple[float, int]]:
    """``{task: (0-1 error on its labelled examples, how many)}``; classification and binary tasks only."""
    predictions = model.predict(dict(data.inputs), batch_size=batch_size, verbose=0)
    errors = {}
    for task in model.tasks:
        if task.kind not in ("classification", "binary"):
            raise ValueError(f"certify: task {task.name!r} is {task.kind}; a 0-1 error bound needs "
                             "classification or binary tasks.")
        mine = np.asarray(data.weights[task.name]) > 0
        output, target = predictions[task.name][mine], np.asarray(data.targets[task.name])[mine].reshape(-1)
        guess = output.argmax(axis=-1) if task.kind == "classification" else (output[:, 0] > 0).astype(int)
        errors[task.name] = (float(np.mean(guess != target.astype(int))) if mine.any() else 0.0, int(mine.sum()))
    return errors


def certify(model: keras.Model, train: MultiTaskArrays, test: MultiTaskArrays | None = None, *, levels: int = 16,
            epochs: int = 3, learning_rate: float = 1e-3, batch_size: int = 128, delta: float = 0.05,
            searched: int = 1, seed: int = 0) -> dict:
    """The bound report of a subspace model (module docstring); ``epochs=0`` skips fine-tuning.

    ``searched``: how many configurations (widths, dimensions, codebook sizes, ...) were bounded on
    these training examples before this one was picked. The message then also names the pick,
    ceil(log2(searched)) bits (a union bound over the configurations), so that the bound still
    holds with probability 1 - delta after the search.

    Returns a JSON-ready dict: per-task train (and test) errors, the message length (header,
    payload, the bits naming the configuration, entropy, bits for Q and for each alpha_t), n, delta
    and the bound, plus ``"single_task"`` bounds when the model has no shared basis.
    """
    choice = bounds.search_bits(positive_int("certify", "searched", searched))
    keras.utils.set_random_seed(seed)
    quantized = quantized_copy(model, levels)
    if epochs:
        quantized.compile(optimizer=keras.optimizers.Adam(learning_rate))
        quantized.fit(train.to_tf_dataset(batch_size, shuffle=True, seed=seed), epochs=epochs, shuffle=False, verbose=0)
    layer = find_columns(quantized)
    symbols = layer.symbols()
    message = message_length(symbols, levels)
    message["choice"] = choice
    message["total"] += choice
    train_errors = task_errors(quantized, train)
    n = sum(count for _, count in train_errors.values())
    train_error = sum(e * count for e, count in train_errors.values()) / n
    report = {
        "tasks": {name: {"train_error": e, "train_examples": count} for name, (e, count) in train_errors.items()},
        "levels": levels, "codebook": keras.ops.convert_to_numpy(layer.codebook).tolist(),
        "free_parameters": layer.free_parameters(), "bits": message, "n": n, "delta": delta,
        "train_error": train_error, "bound": bounds.occam_bound(train_error, message["total"], n, delta),
    }
    # Each symbol's share of the payload: its ideal code length under the coded counts.
    counts = np.bincount(symbols, minlength=levels)
    cost = -np.log2(counts[symbols] / len(symbols))
    counts_by_kind = layer.free_parameters()
    shared = counts_by_kind["shared"]
    own = symbols[shared:].reshape(layer.num_tasks, counts_by_kind["per_task"])  # each task's alpha_t (or w_t)
    report["bits"]["shared_basis"] = float(cost[:shared].sum())
    for name, task_cost in zip(report["tasks"], cost[shared:].reshape(own.shape).sum(axis=1)):
        report["tasks"][name]["bits"] = float(task_cost)
    if not shared:  # T independent single-task models
        report["single_task"] = {}
        for t, name in enumerate(report["tasks"]):
            bits = message_length(own[t], levels)["total"] + choice
            e, count = train_errors[name]
            report["single_task"][name] = {"bits": bits, "bound": bounds.occam_bound(e, bits, count, delta / layer.num_tasks)}
        report["single_task_mean_bound"] = float(np.mean([r["bound"] for r in report["single_task"].values()]))
    if test is not None:
        test_errors = task_errors(quantized, test)
        for name, (e, count) in test_errors.items():
            report["tasks"][name].update(test_error=e, test_examples=count)
        report["test_error"] = sum(e * c for e, c in test_errors.values()) / sum(c for _, c in test_errors.values())
    return report


def format_report(report: dict) -> str:
    """The bound table: per task its errors and the bits of its coordinates, then Q, the
    header, the total, and the bound next to the measured test error."""
    test = "test_error" in report
    lines = [f"{'task':<12} {'train err':>9} {'test err':>9} {'bits':>9}"]
    for name, row in report["tasks"].items():
        test_text = f"{row['test_error']:>9.4f}" if test else f"{'-':>9}"
        lines.append(f"{name:<12} {row['train_error']:>9.4f} {test_text} {row['bits']:>9.1f}")
    bits = report["bits"]
    if report["free_parameters"]["shared"]:
        name = "shared w (one network)" if report["free_parameters"]["per_task"] == 0 else "shared basis Q"
        lines.append(f"{name:<32} {bits['shared_basis']:>9.1f}")
    lines.append(f"{'header (L levels, counts)':<32} {bits['header']:>9d}")
    if bits["choice"]:
        lines.append(f"{'configuration (of those tried)':<32} {bits['choice']:>9d}")
    lines.append(f"{'message (arithmetic code)':<32} {bits['total']:>9d}")
    summary = (f"n = {report['n']}, delta = {report['delta']}: average train error {report['train_error']:.4f}, "
               f"bound {report['bound']:.4f}")
    if test:
        summary += f", test error {report['test_error']:.4f}"
    lines.append(summary)
    if "single_task_mean_bound" in report:
        lines.append(f"single-task bounds (each at delta / T), mean {report['single_task_mean_bound']:.4f}")
    return "\n".join(lines)
