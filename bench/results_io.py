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
