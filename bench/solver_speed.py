"""Per-call time and iterations of the gradient-combination solvers, on the CPU.

Two parts, each solver inside a ``tf.function`` (as a train step runs it), the median over
``--calls`` calls after warm-up:

- **typical**: T = 2, 10, 40 on a random conflicting Gram matrix (task gradients of 5000
  parameters, each a mix of a Gaussian and a shared direction taken along or against it, so
  about half the pairs conflict, with norms spread over one order of magnitude);
- **hard**: T = 10 and 40 on every hard input family of ``tests/solver_references.py`` (nearly
  parallel, rank-deficient, one gradient 1000x larger, norms over 1e-2 ... 1e2, a zero row, an
  exactly opposite pair, ...): the worst iterations and time per solver, i.e. the bounded
  worst-case cost of stopping on a certificate.

Iterations come from the private ``_*_solve`` helpers of ``mtlzoo.weighting.solvers``
(closed-form solvers report 0). ``--baseline FILE`` times another version of ``solvers.py``
alongside (for example ``git show HEAD~1:mtlzoo/weighting/solvers.py > /tmp/old.py``), at its
own default iteration maxima, alternating the two per call so that noise on a shared machine
hits both alike, and adds the speed-up (baseline time / current time).

    python bench/solver_speed.py [--baseline /tmp/old.py] [--calls 50]   # writes bench/results/solver_speed.*
    python bench/solver_speed.py --quick   # T = 2, 3; 3 calls; two families; prints only
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
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import results_io  # noqa: E402
import solver_references  # noqa: E402
from mtlzoo.weighting import solvers  # noqa: E402

SIZES = (2, 10, 40)
HARD_SIZES = (10, 40)
PARAMETERS = 5000
# (name, public function, private helper returning (weights, iterations) or None).
SOLVERS = (
    ("mgda", "min_norm_weights", "_min_norm_solve"),
    ("cagrad", "cagrad_weights", "_cagrad_solve"),
    ("upgrad", "upgrad_weights", "_upgrad_solve"),
    ("nash_mtl", "nash_mtl_weights", "_nash_mtl_solve"),
    ("imtl_g", "imtl_g_weights", None),
    ("aligned_mtl", "aligned_mtl_weights", None),
    ("pcgrad", "pcgrad_weights", None),
)


def conflicting_gram(num_tasks: int) -> np.ndarray:
    return solver_references.gram_of(solver_references.typical_conflicting(num_tasks, PARAMETERS))


def load(path: str):
    spec = importlib.util.spec_from_file_location("baseline_solvers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compiled(module, public: str, private: str | None):
    """A tf.function of the Gram matrix alone returning (weights, iterations used) for one solver
    of ``module``, at its default maximum (one argument for every version, as tf.function's
    per-call cost grows with the arguments of the function it wraps; a train step pays none)."""
    if public == "pcgrad_weights":
        function = module.pcgrad_weights

        def run(gram):
            num = gram.shape[0]
            orders = tf.tile(tf.range(num)[None, :], (num, 1))
            return function(gram, orders), tf.constant(0)

        return tf.function(run)
    if private is None:  # a closed form
        function = getattr(module, public)
        return tf.function(lambda gram: (function(gram), tf.constant(0)))
    if hasattr(module, private):
        solve = getattr(module, private)
        return tf.function(lambda gram: solve(gram))
    function = getattr(module, public)
    return tf.function(lambda gram: (function(gram), tf.constant(-1)))


def median_ms(functions: dict, gram, calls: int, warmup: int) -> tuple[dict, dict]:
    """Per version: median milliseconds per call, and the iterations it used."""
    iterations, times = {}, {label: [] for label in functions}
    for label, function in functions.items():
        for _ in range(warmup):
            _, used = function(gram)
        iterations[label] = int(used)
    for _ in range(calls):
        for label, function in functions.items():
            start = time.perf_counter()
            weights, _ = function(gram)
            weights.numpy()
            times[label].append(time.perf_counter() - start)
    return {label: 1e3 * statistics.median(t) for label, t in times.items()}, iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="another solvers.py to time alongside")
    parser.add_argument("--baseline-name", default="the file given",
                        help="what the baseline is, for the markdown (e.g. 'solvers.py of commit abc123')")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="T = 2, 3, 3 calls, two families: a smoke test")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "solver_speed"),
                        help="where the JSON and markdown go (not written with --quick)")
    args = parser.parse_args()
    sizes, hard_sizes, families = SIZES, HARD_SIZES, solver_references.FAMILIES
    if args.quick:
        args.calls, args.warmup = 3, 1
        sizes, hard_sizes, families = (2, 3), (3,), ("random", "opposite_pair")
    versions = [("current", solvers)] + ([("baseline", load(args.baseline))] if args.baseline else [])
    labels = [label for label, _ in versions]

    typical = []
    for name, public, private in SOLVERS:
        functions = {label: compiled(module, public, private) for label, module in versions}
        for num_tasks in sizes:
            ms, used = median_ms(functions, tf.constant(conflicting_gram(num_tasks)), args.calls, args.warmup)
            typical.append({"solver": name, "tasks": num_tasks, "ms": ms, "iterations": used})
            print(f"typical {name} T={num_tasks}: " + ", ".join(f"{k} {ms[k]:.3f} ms / {used[k]} it" for k in ms),
                  flush=True)

    hard = []
    hard_calls = max(3, args.calls // 5)
    for name, public, private in SOLVERS:
        functions = {label: compiled(module, public, private) for label, module in versions}
        for num_tasks in hard_sizes:
            worst = {label: {"ms": 0.0, "iterations": 0, "family": ""} for label in labels}
            for family in families:
                gram = tf.constant(solver_references.gram_of(solver_references.family(family, num_tasks)))
                ms, used = median_ms(functions, gram, hard_calls, 1)
                for label in labels:
                    if ms[label] > worst[label]["ms"]:
                        worst[label] = {"ms": ms[label], "iterations": used[label], "family": family}
            hard.append({"solver": name, "tasks": num_tasks, "worst": worst})
            print(f"hard {name} T={num_tasks}: " + ", ".join(
                f"{k} {w['ms']:.3f} ms / {w['iterations']} it ({w['family']})" for k, w in worst.items()), flush=True)

    markdown = render(typical, hard, labels, args)
    print(markdown)
    if not args.quick:
        report = {"machine": results_io.machine(), "command": command_line(args), "calls": args.calls,
                  "parameters": PARAMETERS, "versions": labels, "typical": typical, "hard": hard,
                  "maxima": {"mgda": solvers._MGDA_ITERATIONS, "cagrad": solvers._CAGRAD_ITERATIONS,
                             "upgrad": solvers._UPGRAD_ITERATIONS, "nash_mtl": solvers._NASH_ITERATIONS}}
        results_io.write(args.out, report, markdown)


def command_line(args) -> str:
    return "python bench/solver_speed.py" + (" --baseline BASELINE_SOLVERS.py" if args.baseline else "")


def render(typical, hard, labels, args) -> str:
    two = len(labels) == 2
    lines = [
        "# Solver time per call",
        "",
        f"`{command_line(args)}`; each solver inside a `tf.function`, median of {args.calls} calls "
        "(hard inputs: of a fifth as many), 2 CPU cores, TensorFlow."
        + (f" Baseline: {args.baseline_name}, timed alternately with the current solvers." if two else ""),
        "",
        f"Typical: a random conflicting Gram matrix ({PARAMETERS} parameters, about half the task pairs in "
        "conflict, norms over one decade). Iterations: the steps an iterative solver took before its "
        "certificate of optimality held (0: a closed form; -1: not reported by that version).",
        "",
    ]
    header = "| solver | T | " + " | ".join(f"{label} ms | {label} iters" for label in reversed(labels)) + " |"
    header += " speed-up |" if two else ""
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for row in typical:
        cells = " | ".join(f"{row['ms'][k]:.3f} | {row['iterations'][k]}" for k in reversed(labels))
        extra = f" {row['ms']['baseline'] / row['ms']['current']:.2f}x |" if two else ""
        lines.append(f"| {row['solver']} | {row['tasks']} | {cells} |{extra}")
    lines += [
        "",
        "Hard inputs: the slowest family per solver and T (every family of `tests/solver_references.py`: "
        "random, conflicting, nearly parallel, duplicated, one gradient 1000x larger, norms over "
        "1e-2 ... 1e2, rank-deficient, a zero row, an exactly opposite pair). The iterative solvers "
        f"stop at a certificate or at their maximum (MGDA {solvers._MGDA_ITERATIONS}, CAGrad "
        f"{solvers._CAGRAD_ITERATIONS} (plus one dual-cone projection where 0 is in the hull), UPGrad "
        f"{solvers._UPGRAD_ITERATIONS}, Nash-MTL {solvers._NASH_ITERATIONS} Newton steps), which bounds "
        "the worst case.",
        "",
    ]
    header = "| solver | T | " + " | ".join(f"{label} worst ms | iters | family" for label in reversed(labels)) + " |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for row in hard:
        cells = " | ".join(f"{row['worst'][k]['ms']:.3f} | {row['worst'][k]['iterations']} | {row['worst'][k]['family']}"
                           for k in reversed(labels))
        lines.append(f"| {row['solver']} | {row['tasks']} | {cells} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
