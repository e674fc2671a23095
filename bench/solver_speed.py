"""Per-call time and iterations of the iterative gradient-combination solvers, on the CPU.

For T = 2, 10, 40, a random conflicting Gram matrix: task gradients of 5000 parameters, each a
mix of a Gaussian and a shared direction taken along or against it (so about half the pairs
conflict), with norms spread over one order of magnitude. Each solver (MGDA, CAGrad, UPGrad,
Nash-MTL) runs inside a ``tf.function``; after warm-up calls the median over ``--calls`` calls
is reported, with the iterations the solver actually used (through the private
``_*_solve`` helpers of ``mtlzoo.weighting.solvers``; a module without them ran its maximum).

``--baseline FILE`` times another version of ``solvers.py`` alongside (for example
``git show HEAD:mtlzoo/weighting/solvers.py > /tmp/old.py``), alternating the two per call so
that noise on a shared machine hits both alike, and adds the speed-up (baseline time / current
time). The table goes to stdout; nothing is written.

    python bench/solver_speed.py [--baseline /tmp/old.py] [--calls 50]
    python bench/solver_speed.py --quick   # T = 2, 3; 3 calls
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtlzoo.weighting import solvers  # noqa: E402

SIZES = (2, 10, 40)
PARAMETERS = 5000
# (name, public function, private helper returning (weights, iterations), maximum iterations).
SOLVERS = (
    ("mgda", "min_norm_weights", "_min_norm_solve", 250),
    ("cagrad", "cagrad_weights", "_cagrad_solve", 50),
    ("upgrad", "upgrad_weights", "_upgrad_solve", 100),
    ("nash_mtl", "nash_mtl_weights", "_nash_mtl_solve", 20),
)


def conflicting_gram(num_tasks: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    signs = np.where(np.arange(num_tasks) % 2 == 0, 1.0, -1.0)[:, None]  # every other task opposes
    grads = 0.6 * signs * rng.normal(size=PARAMETERS) + 0.4 * rng.normal(size=(num_tasks, PARAMETERS))
    grads *= 10.0 ** rng.uniform(-0.5, 0.5, size=(num_tasks, 1))
    return (grads @ grads.T).astype("float32")


def load(path: str):
    spec = importlib.util.spec_from_file_location("baseline_solvers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compiled(module, public: str, private: str, maximum: int):
    """A tf.function returning (weights, iterations used) for one solver of ``module``."""
    if hasattr(module, private):
        solve = getattr(module, private)
        return tf.function(lambda gram: solve(gram, iterations=maximum))
    function = getattr(module, public)
    # Fixed-count version: its maximum, except MGDA's closed form at T = 2.
    closed = public == "min_norm_weights"

    def run(gram):
        return function(gram), tf.constant(0 if closed and gram.shape[0] == 2 else maximum)

    return tf.function(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="another solvers.py to time alongside")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="T = 2, 3 and 3 calls: a smoke test")
    args = parser.parse_args()
    sizes = (2, 3) if args.quick else SIZES
    if args.quick:
        args.calls, args.warmup = 3, 1
    versions = [("current", solvers)] + ([("baseline", load(args.baseline))] if args.baseline else [])

    rows = []
    for name, public, private, maximum in SOLVERS:
        for num_tasks in sizes:
            gram = tf.constant(conflicting_gram(num_tasks))
            functions = {label: compiled(module, public, private, maximum) for label, module in versions}
            iterations, times = {}, {label: [] for label in functions}
            for label, function in functions.items():
                for _ in range(args.warmup):
                    _, used = function(gram)
                iterations[label] = int(used)
            for _ in range(args.calls):
                for label, function in functions.items():
                    start = time.perf_counter()
                    weights, _ = function(gram)
                    weights.numpy()
                    times[label].append(time.perf_counter() - start)
            rows.append((name, num_tasks, {label: (1e3 * statistics.median(times[label]), iterations[label])
                                           for label in functions}))

    labels = [label for label, _ in reversed(versions)]
    header = "| solver | T | " + " | ".join(f"{label} ms | {label} iters" for label in labels) + " |"
    if len(labels) == 2:
        header += " speed-up |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, num_tasks, results in rows:
        cells = " | ".join(f"{results[label][0]:.3f} | {results[label][1]}" for label in labels)
        line = f"| {name} | {num_tasks} | {cells} |"
        if len(labels) == 2:
            line += f" {results['baseline'][0] / results['current'][0]:.1f}x |"
        print(line)


if __name__ == "__main__":
    main()
