"""What every benchmark records: the machine it ran on, and its results as JSON plus markdown."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine() -> dict:
    import keras
    import tensorflow as tf

    return {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def write(out: str | os.PathLike, report: dict, markdown: str) -> None:
    """``out``.json and ``out``.md, next to each other."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def publish(out: str | os.PathLike, report: dict, markdown: str, missed: list) -> int:
    """Print and ``write`` the report; the exit code is 1, naming ``missed``, where a goal was missed."""
    print(markdown)
    write(out, report, markdown)
    if missed:
        print(f"GOAL MISSED on {missed}")
        return 1
    return 0


def seconds_per_step(runs: dict, steps: int, *, warm_steps: int = 20, rounds: int = 3) -> dict:
    """Median wall-clock seconds per training step of each ``{name: (model, make_dataset)}``
    (``step_times``)."""
    return {name: times["wall"] for name, times in step_times(runs, steps, warm_steps=warm_steps,
                                                               rounds=rounds).items()}


def step_times(runs: dict, steps: int, *, warm_steps: int = 20, rounds: int = 3) -> dict:
    """``{name: {"wall", "cpu"}}``: median seconds per training step of each ``{name: (model,
    make_dataset)}``, on the wall clock and in CPU time of this process (all threads).

    The models alternate, ``rounds`` times, so that noise on a shared machine hits each alike;
    every turn first fits ``warm_steps`` steps untimed. On a virtual machine whose host is
    busy the wall clock also counts time stolen by other guests; CPU time does not.
    """
    import time

    import numpy as np

    times = {name: {"wall": [], "cpu": []} for name in runs}
    for _ in range(rounds):
        for name, (model, make_dataset) in runs.items():
            model.fit(make_dataset(), steps_per_epoch=warm_steps, epochs=1, verbose=0)
            wall, cpu = time.perf_counter(), time.process_time()
            model.fit(make_dataset(), steps_per_epoch=steps, epochs=1, verbose=0)
            times[name]["wall"].append((time.perf_counter() - wall) / steps)
            times[name]["cpu"].append((time.process_time() - cpu) / steps)
    return {name: {clock: float(np.median(values)) for clock, values in clocks.items()}
            for name, clocks in times.items()}


def summary(values) -> dict:
    """``{"mean", "std" (n - 1), "values"}`` of a list of per-seed numbers."""
    import numpy as np

    values = [float(v) for v in values]
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": values}


def paired(treated, baseline, better: int = 1) -> dict:
    """The per-seed difference ``better * (treated - baseline)`` (positive: treated is better),
    summarised with its two-sided 95 % Student-t interval over the seeds (None from one seed)."""
    import numpy as np
    from scipy import stats

    differences = better * (np.asarray(treated, "float64") - np.asarray(baseline, "float64"))
    result = summary(differences)
    n = len(differences)
    half = stats.t.ppf(0.975, n - 1) * result["std"] / np.sqrt(n) if n > 1 else None
    result["ci95"] = None if half is None else [float(result["mean"] - half), float(result["mean"] + half)]
    return result


def keep_run(directory: str | os.PathLike, name: str, result: dict) -> None:
    """Keep one finished run of a long benchmark as ``directory/name.json``, so that its runs
    can go in separate processes and the table be rebuilt from all of them (``kept_runs``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{name}.json.partial"
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(directory / f"{name}.json")  # never a half-written run in the table


def kept_runs(directory: str | os.PathLike) -> list[dict]:
    """Every run ``keep_run`` kept in ``directory``, in name order; SystemExit if there is none."""
    runs = [json.loads(p.read_text()) for p in sorted(Path(directory).glob("*.json"))]
    if not runs:
        raise SystemExit(f"No runs kept in {directory}: run the benchmark (without --table-only) first.")
    return runs
