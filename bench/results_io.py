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


def seconds_per_step(runs: dict, steps: int, *, warm_steps: int = 20, rounds: int = 3) -> dict:
    """Median seconds per training step of each ``{name: (model, make_dataset)}``, measured in turns.

    The models alternate, ``rounds`` times, so that noise on a shared machine hits each alike;
    every turn first fits ``warm_steps`` steps untimed.
    """
    import time

    import numpy as np

    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (model, make_dataset) in runs.items():
            model.fit(make_dataset(), steps_per_epoch=warm_steps, epochs=1, verbose=0)
            started = time.perf_counter()
            model.fit(make_dataset(), steps_per_epoch=steps, epochs=1, verbose=0)
            times[name].append((time.perf_counter() - started) / steps)
    return {name: float(np.median(values)) for name, values in times.items()}
