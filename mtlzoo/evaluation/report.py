"""``compare``'s report as tables, markdown and a plot, written atomically beside the runs."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mtlzoo import io


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _fmt(stats: Mapping[str, float] | None, digits: int = 4, signed: bool = False) -> str:
    if stats is None:
        return "–"
    sign = "+" if signed else ""
    return f"{stats['mean']:{sign}.{digits}f} ± {stats['std']:.{digits}f}"


def summary_metrics(report: Mapping[str, Any]) -> list[str]:
    """The metrics of the summary table: the main metrics first, then the others."""
    mains = list(dict.fromkeys(t["main_metric"] for t in report["tasks"].values()))
    others = sorted({m for t in report["tasks"].values() for m in t["metrics"]} - set(mains))
    return mains + others


def summary_table(report: Mapping[str, Any]) -> str:
    """Markdown: one row per weighting (and the single-task models, when trained)."""
    metrics = summary_metrics(report)
    has_delta = report["single_task"] is not None
    header = ["weighting", *(f"{m} (mean over tasks)" for m in metrics)]
    header += ["Δm %"] if has_delta else []
    header += ["s / epoch"]
    versus = any("vs_unitary" in s for s in report["summary"].values())
    header += ["vs unitary"] if versus else []
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1 - versus)
             + (" --- |" if versus else "")]
    single = (report["single_task"] or {}).get("summary")
    if single:
        cells = [_fmt(single["mean_over_tasks"].get(m)) for m in metrics]
        lines.append("| single task | " + " | ".join(cells) + " | 0 (reference) | "
                     f"{single['seconds_per_epoch']:.2f} (all tasks) |" + (" |" if versus else ""))
    for weighting, s in report["summary"].items():
        cells = [_fmt(s["mean_over_tasks"].get(m)) for m in metrics]
        if has_delta:
            cells.append(_fmt(s["delta_m"], 2, signed=True))
        cells.append(f"{s['seconds_per_epoch']:.2f}")
        if versus:
            cells.append(s["vs_unitary"]["verdict"] if "vs_unitary" in s else "–" if weighting != "unitary" else "reference")
        lines.append(f"| {weighting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_task_table(report: Mapping[str, Any]) -> str:
    """Markdown: one row per task, one column per weighting; the task's main metric."""
    weightings = list(report["summary"])
    single = (report["single_task"] or {})
    header = ["task", "metric", *(["single task"] if single else []), *weightings]
    lines = ["| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * (len(header) - 2)]
    for task, info in report["tasks"].items():
        cells = [task, info["main_metric"]]
        if single:
            per_task = (single.get("summary") or {}).get("per_task")
            cells.append(_fmt(per_task[task]) if per_task else f"{single['baselines'][task][info['main_metric']]:.4f}")
        cells += [_fmt(report["summary"][w]["per_task"][task]) for w in weightings]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(report: Mapping[str, Any]) -> str:
    seeds = report["seeds"]
    machine = report["machine"]
    lines = [
        f"# Weighting methods on {report['recipe']} ({report['dataset']})",
        "",
        f"{report['architecture']} on {report['dataset']} ({len(report['tasks'])} tasks), {_plural(report['epochs'], 'epoch')}, "
        f"{_plural(len(seeds), 'seed')} ({', '.join(map(str, seeds))}; training seed only, the data is the same), metrics on "
        f"the {report['evaluation_split']} split; mean ± sample std over seeds. Seconds per training epoch "
        f"(validation included) on {machine['cpus']} CPU cores"
        + (f" and {machine['gpus']} GPUs" if machine.get("gpus") else "")
        + f", Keras {machine['keras']}" + (f", TF {machine['tensorflow']}" if "tensorflow" in machine else "") + ".",
    ]
    if report.get("command"):
        lines += ["", f"Command: `{report['command']}`"]
    single = report["single_task"]
    if single is None:
        lines += ["", "Δm omitted: no single-task baselines (pass `--single-task` to train them, or "
                  "`--baselines single_task.json` to reuse an earlier run's)."]
    else:
        where = ("trained here (same architecture on each task alone, weighting unitary, same seeds; their mean "
                 "over seeds)" if single.get("runs") else f"from `{single['source']}`")
        directions = sorted({f"{m} {'↑' if up else '↓'}" for t in report["tasks"].values()
                             for m, up in t.get("higher_is_better", {}).items()})
        lines += ["", f"Δm (%, higher is better): the mean relative change over every task and metric "
                  f"({', '.join(directions)}) against single-task baselines {where}."]
    versus = next((s["vs_unitary"]["on"] for s in report["summary"].values() if "vs_unitary" in s), None)
    if versus:
        lines += ["", f"vs unitary: better (worse) when the mean {'Δm' if versus == 'delta_m' else versus[5:]} beats "
                  "(trails) unitary's by more than the larger of the two standard deviations; else tie."]
    lines += ["", "## Summary", "", summary_table(report), "", "## Per task", "",
              "The main metric of each task, mean ± std over seeds.", "", per_task_table(report), ""]
    auxiliary = auxiliary_table(report)
    if auxiliary:
        lines += ["## Auxiliary and adversarial tasks", "",
                  "Trained for the main tasks' sake: not in the means, Δm or the verdicts above, and not exported. "
                  "Each task's first metric, mean ± std over seeds.", "", auxiliary, ""]
    return "\n".join(lines)


def auxiliary_table(report: Mapping[str, Any]) -> str:
    """Markdown: the auxiliary and adversarial tasks' first metric per weighting ('' if none)."""
    weightings = list(report["summary"])
    seeds = {w: list(report["runs"][w].values()) for w in weightings}
    names = list(dict.fromkeys(t for w in weightings for r in seeds[w] for t in r.get("auxiliary", {})))
    if not names:
        return ""
    lines = ["| task | metric | " + " | ".join(weightings) + " |", "| --- | --- |" + " ---: |" * len(weightings)]
    for task in names:
        metric = next(m for r in seeds[weightings[0]] for m in r.get("auxiliary", {}).get(task, {}) if m != "examples")
        cells = []
        for w in weightings:
            values = [r["auxiliary"][task][metric] for r in seeds[w] if task in r.get("auxiliary", {})]
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            cells.append(_fmt({"mean": float(np.mean(values)), "std": std}) if values else "–")
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(report: Mapping[str, Any], path: Path) -> None:
    """Agg (no display): per weighting, the mean-over-tasks main metric and, with baselines, Δm,
    as mean ± std over seeds (points with error bars; dotted: unitary, dashed: single task)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    weightings = list(report["summary"])
    main = summary_metrics(report)[0]
    panels = [(f"{main} (mean over tasks)", [report["summary"][w]["mean_over_tasks"][main] for w in weightings],
               None)]
    single = (report["single_task"] or {})
    if single:
        reference = (single.get("summary") or {}).get("mean_over_tasks", {}).get(main)
        reference = reference["mean"] if reference else float(np.mean(
            [b[main] for b in single["baselines"].values() if main in b]))
        panels[0] = (panels[0][0], panels[0][1], reference)
        panels.append(("Δm % vs single task", [report["summary"][w]["delta_m"] for w in weightings], 0.0))
    fig = Figure(figsize=(max(6.0, 0.55 * len(weightings) + 2), 3.6 * len(panels)), layout="constrained")
    FigureCanvasAgg(fig)
    x = np.arange(len(weightings))
    for k, (title, stats, reference) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, k + 1)
        means = np.array([s["mean"] for s in stats])
        stds = np.array([s["std"] for s in stats])
        colors = ["tab:gray" if w == "unitary" else "tab:blue" for w in weightings]
        ax.errorbar(x, means, yerr=stds, fmt="none", ecolor="black", capsize=4, linewidth=1)
        ax.scatter(x, means, c=colors, s=40, zorder=3)
        if "unitary" in weightings:
            ax.axhline(means[weightings.index("unitary")], color="tab:gray", linestyle=":", linewidth=1)
        if reference is not None:
            ax.axhline(reference, color="tab:red", linestyle="--", linewidth=1,
                       label="single task" if k == 0 else "single task (Δm 0)")
            ax.legend(loc="best", fontsize="small")
        low, high = float(np.min(means - stds)), float(np.max(means + stds))
        if reference is not None:
            low, high = min(low, reference), max(high, reference)
        pad = 0.1 * (high - low) or 0.05 * abs(high) or 1.0
        ax.set_ylim(low - pad, high + pad)
        ax.set_xticks(x, weightings, rotation=45, ha="right")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{report['recipe']}: {_plural(len(report['seeds']), 'seed')}, mean ± std")
    fig.savefig(path, format="png", dpi=110)


def write_results(out_dir: Path, report: Mapping[str, Any]) -> None:
    """compare.png, compare.md, then compare.json, each written atomically; all three are
    rendered before the first is renamed into place."""
    out_dir = Path(out_dir)
    text = markdown(report)
    writers = {
        "compare.json": lambda p: p.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8"),
        "compare.md": lambda p: p.write_text(text, encoding="utf-8"),
        "compare.png": lambda p: plot(report, p),
    }
    with contextlib.ExitStack() as renames:  # they run in reverse order of entry: the json last
        for name, write in writers.items():
            write(renames.enter_context(io.atomic_path(out_dir / name, suffix=Path(name).suffix)))


def summary_text(report: Mapping[str, Any]) -> str:
    """The summary table as printed at the end of ``mtlzoo compare``."""
    note = "" if report["single_task"] is not None else "\n(Δm omitted: no single-task baselines)"
    title = f"{report['recipe']}: {_plural(len(report['seeds']), 'seed')}, {_plural(report['epochs'], 'epoch')}"
    return f"{title}\n{summary_table(report)}{note}"
