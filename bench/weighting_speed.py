"""Step time and peak memory of every weighting method against unitary scalarization.

For T tasks (default 2, 10, 40), one hard-sharing MLP (64 inputs, a shared 256-256 trunk, a
linear regression head per task, batch 128) is built per registered weighting method, from the
same seed, and trained with ``model.fit`` on seeded synthetic data. ``unitary`` is the default
``compile()`` path (no ``weighting`` argument); ``mgda_ub`` is MGDA on the gradients of the
shared representation (``gradients="features"``).

Timing: after an untimed warm-up turn (tracing included), the methods take turns, ``--rounds`` times
(unitary, m1, m2, ..., then the same in a fresh seeded order each round), so that noise on a
shared machine hits them alike. Each turn is
one ``fit`` of ``--warm-steps + --steps`` steps; a callback times each of the last ``--steps``
steps (wall clock between consecutive step ends; every step is synchronised). The report
gives each method's median step time over all timed steps of all rounds (robust to bursts of
load from other processes) and its ratio to unitary's median. For every gradient method the
solver alone (``gradient_weights`` on a random (T, T) Gram matrix, compiled) is timed too, to
tell the cost of the per-task gradients from that of the method.

Memory (``--memory``; ``auto``: ``tf`` on TensorFlow where its allocator keeps statistics,
``device`` on a JAX accelerator, ``process`` otherwise):

- ``tf``: TensorFlow (CPU or GPU): ``tf.config.experimental.get_memory_info(device)['peak']``
  over the timed steps, after ``reset_memory_stats``, minus the bytes in use before them: the
  working memory of a step as TensorFlow's allocator counts it, in the benchmark process. (Not
  every CPU build keeps these statistics: some raise "Allocator stats not available".)
- ``device``: JAX on an accelerator: ``memory_stats()['peak_bytes_in_use']`` of a fresh
  process per (method, T) (build, warm-up and the steps: parameters, optimizer state and step
  buffers), as the peak cannot be reset in-process.
- ``process``: either backend on the CPU without allocator statistics: peak RSS of a fresh process per
  (method, T) above its RSS after the imports (the kernel's high-water mark ``VmHWM``, reset
  through ``/proc/self/clear_refs``; ``ru_maxrss`` where that is unavailable); tracing and
  compiling included.

The analytic size of the per-task gradients (T x shared parameters x 4 bytes; T x batch x
trunk width x 4 with ``gradients="features"``) is always reported beside it.

Goals: loss-based methods within 1.1x of unitary at every T; gradient methods within 1.5x at
T = 2 and 3x at T = 40.

    python bench/weighting_speed.py               # writes bench/results/weighting_speed.{json,md}
    KERAS_BACKEND=jax python bench/weighting_speed.py --out bench/results/weighting_speed_jax
    python bench/weighting_speed.py --quick       # T = 2, 3; unitary, uncertainty, mgda; few steps
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# JAX grabs 75 % of an accelerator at start-up unless told not to; the memory children need room.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402  (tf.data feeds both backends)

import mtlzoo  # noqa: E402
from mtlzoo import weighting as weighting_lib  # noqa: E402
from mtlzoo.models import shared_variables  # noqa: E402
import results_io  # noqa: E402  (bench/, beside this script)

RESULTS = Path(__file__).resolve().parent / "results"
INPUT_DIM = 64
SHARED_UNITS = (256, 256)
EXAMPLES = 4096
LOSS_GOAL = 1.1
GRADIENT_GOALS = {2: 1.5, 40: 3.0}
QUICK = {"tasks": "2,3", "methods": "unitary,uncertainty,mgda", "steps": 3, "warm_steps": 1, "rounds": 2}

warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")


# --------------------------------------------------------------------------------------------
# Model and data


def build(num_tasks: int, method: str, seed: int):
    keras.utils.set_random_seed(seed)
    tasks = [mtlzoo.Task(f"t{i}", "regression") for i in range(num_tasks)]
    model = mtlzoo.create_model("hard_sharing", tasks, {"x": {"shape": (INPUT_DIM,)}}, shared_units=SHARED_UNITS)
    if method == "unitary":
        model.compile(optimizer="adam")  # the default path
    else:
        model.compile(optimizer="adam", weighting=method)
    return model


def dataset(num_tasks: int, batch_size: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(EXAMPLES, INPUT_DIM)).astype("float32")
    mix = rng.normal(size=(INPUT_DIM, num_tasks)).astype("float32") / np.sqrt(INPUT_DIM)
    targets = (np.tanh(x @ mix) + 0.1 * rng.normal(size=(EXAMPLES, num_tasks))).astype("float32")
    y = {f"t{i}": targets[:, i:i + 1] for i in range(num_tasks)}
    return tf.data.Dataset.from_tensor_slices(({"x": x}, y)).repeat().batch(batch_size, drop_remainder=True).prefetch(2)


def describe(method: str) -> dict:
    instance = weighting_lib.get(None if method == "unitary" else method)
    if not instance.uses_gradients:
        return {"kind": "loss", "gradients": None}
    return {"kind": "gradient", "gradients": instance.gradients}


def parameter_counts(model) -> dict:
    flags = shared_variables(model)
    sizes = [int(np.prod(v.shape)) for v in model.trainable_variables]
    shared = sum(s for s, f in zip(sizes, flags) if f)
    return {"total": int(model.count_params()), "shared": shared, "task_specific": sum(sizes) - shared}


def analytic_gradient_bytes(info: dict, num_tasks: int, shared: int, batch_size: int) -> int:
    """Bytes of the per-task gradients a gradient method materialises (float32)."""
    if info["kind"] == "loss":
        return 0
    if info["gradients"] == "features":
        return num_tasks * batch_size * SHARED_UNITS[-1] * 4
    return num_tasks * shared * 4


# --------------------------------------------------------------------------------------------
# Memory


def _accelerator() -> str | None:
    """The accelerator platform the current backend runs on, or None on the CPU."""
    if keras.backend.backend() == "jax":
        import jax

        platform = jax.devices()[0].platform
        return None if platform == "cpu" else platform
    if tf.config.list_physical_devices("GPU"):
        return "gpu"
    return None


def tf_memory_device() -> str:
    return "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"


def tf_allocator_counts() -> bool:
    """Whether TensorFlow's allocator keeps statistics on the device the steps run on."""
    tf.constant(1.0) + 1.0  # some builds report nothing before the first op
    try:
        tf.config.experimental.get_memory_info(tf_memory_device())
    except ValueError:
        return False
    return True


def choose_memory(requested: str) -> str:
    if requested != "auto":
        return requested
    if keras.backend.backend() == "tensorflow" and tf_allocator_counts():
        return "tf"
    return "device" if _accelerator() else "process"


MEMORY_DESCRIPTIONS = {
    "tf": "tf.config.experimental.get_memory_info(device)['peak'] during the timed steps (after "
          "reset_memory_stats) minus the bytes in use before them: the working memory of a training step as "
          "TensorFlow's allocator counts it; the largest over the rounds",
    "device": "jax memory_stats()['peak_bytes_in_use'] of a fresh process per (method, T): build, warm-up and "
              "the timed steps (parameters, optimizer state and step buffers)",
    "process": "peak RSS of a fresh process per (method, T) above its RSS after the imports (VmHWM reset "
               "through /proc/self/clear_refs; ru_maxrss where that is not available): build, tracing, compiling "
               "and the steps; the accelerator's peak_bytes_in_use instead under JAX on one",
    "none": "not measured",
}


class StepClock(keras.callbacks.Callback):
    """Times each of steps ``warm`` .. ``warm + steps`` of one fit, and their peak memory."""

    def __init__(self, warm: int, steps: int, memory: str):
        super().__init__()
        self.warm, self.steps, self.memory = warm, steps, memory
        self.stamps, self.peak_bytes = [], None

    @property
    def step_seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]

    def on_train_batch_end(self, batch, logs=None):
        # Keras hands the logs over as Python numbers (any batch-level callback makes it
        # synchronise every step), so the clock sees finished steps on both backends.
        if batch == self.warm - 1 and self.memory == "tf":
            tf.config.experimental.reset_memory_stats(tf_memory_device())
            self.base = tf.config.experimental.get_memory_info(tf_memory_device())["current"]
        if self.warm - 1 <= batch <= self.warm + self.steps - 1:
            self.stamps.append(time.perf_counter())
        if batch == self.warm + self.steps - 1 and self.memory == "tf":
            self.peak_bytes = tf.config.experimental.get_memory_info(tf_memory_device())["peak"] - self.base


def _status_kib(field: str) -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def memory_child(args) -> int:
    """``--child-memory METHOD``: one (method, T) in this fresh process; prints its peak."""
    try:  # Linux: restart the high-water mark at the current RSS, so the imports' peak is not counted.
        Path("/proc/self/clear_refs").write_text("5")
        base_kib, peak_field = _status_kib("VmRSS"), "VmHWM"
    except OSError:
        base_kib, peak_field = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, None
    num_tasks = int(args.tasks)
    model = build(num_tasks, args.child_memory, args.seed)
    model.fit(dataset(num_tasks, args.batch_size, args.seed), steps_per_epoch=args.warm_steps + args.steps,
              epochs=1, verbose=0)
    peak_kib = _status_kib(peak_field) if peak_field else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"measure": peak_field or "ru_maxrss", "peak_bytes": 1024 * (peak_kib - base_kib)}
    if keras.backend.backend() == "jax":
        import jax

        stats = jax.devices()[0].memory_stats()
        if stats and "peak_bytes_in_use" in stats:
            result = {"measure": "peak_bytes_in_use", "peak_bytes": int(stats["peak_bytes_in_use"])}
    print("MEMORY " + json.dumps(result), flush=True)
    return 0


def memory_in_child(method: str, num_tasks: int, args) -> int | None:
    command = [sys.executable, str(Path(__file__).resolve()), "--child-memory", method, "--tasks", str(num_tasks),
               "--steps", str(args.steps), "--warm-steps", str(args.warm_steps),
               "--batch-size", str(args.batch_size), "--seed", str(args.seed)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("MEMORY ")]
    if proc.returncode != 0 or not lines:
        print(f"memory child {method} T={num_tasks} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len("MEMORY "):])["peak_bytes"]


# --------------------------------------------------------------------------------------------
# Solver alone


def solver_seconds(method: str, num_tasks: int, repeats: int, seed: int) -> float | None:
    """Median seconds of ``gradient_weights`` alone, compiled, on a random (T, T) Gram matrix."""
    instance = weighting_lib.get(method).bind([f"t{i}" for i in range(num_tasks)])
    if not instance.uses_gradients:
        return None
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(num_tasks, 4 * num_tasks + 64)).astype("float32")
    gram = grads @ grads.T
    losses = rng.uniform(0.5, 2.0, size=num_tasks).astype("float32")
    present = np.ones(num_tasks, dtype="float32")
    if keras.backend.backend() == "jax":
        import jax

        variables = instance.variables

        @jax.jit
        def solve(values, gram, losses):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
                weights = instance.gradient_weights(gram, losses, present)
            return weights, [scope.get_current_value(v) if scope.get_current_value(v) is not None else x
                             for v, x in zip(variables, values)]

        values = [v.value for v in variables]

        def call():
            nonlocal values
            weights, values = solve(values, gram, losses)
            jax.block_until_ready(weights)
    else:
        solve = tf.function(instance.gradient_weights, autograph=False)
        gram_t, losses_t, present_t = tf.constant(gram), tf.constant(losses), tf.constant(present)

        def call():
            solve(gram_t, losses_t, present_t).numpy()

    call()  # trace / compile
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


# --------------------------------------------------------------------------------------------
# The benchmark


def run_tasks(num_tasks: int, methods: list[str], args, memory: str) -> dict:
    data = dataset(num_tasks, args.batch_size, args.seed)
    models, info = {}, {}
    for method in methods:
        started = time.perf_counter()
        models[method] = build(num_tasks, method, args.seed)
        # A whole untimed turn, with the clock: the same code path as the timed turns.
        models[method].fit(data, steps_per_epoch=args.warm_steps + args.steps, epochs=1, verbose=0,
                           callbacks=[StepClock(args.warm_steps, args.steps, memory)])
        info[method] = {**describe(method), "build_and_trace_seconds": time.perf_counter() - started}
        print(f"T={num_tasks} {method}: built and traced in {info[method]['build_and_trace_seconds']:.1f} s", flush=True)
    parameters = parameter_counts(models[methods[0]])
    seconds = {m: [] for m in methods}
    peaks = {m: [] for m in methods}
    orders = []
    shuffle = np.random.default_rng(args.seed)
    for round_index in range(args.rounds):
        # A fresh order every round, so no method always runs first or after the same one.
        order = list(methods) if round_index == 0 else [methods[i] for i in shuffle.permutation(len(methods))]
        orders.append(order)
        for method in order:
            model = models[method]
            clock = StepClock(args.warm_steps, args.steps, memory)
            model.fit(data, steps_per_epoch=args.warm_steps + args.steps, epochs=1, verbose=0, callbacks=[clock])
            seconds[method].append(clock.step_seconds)
            peaks[method].append(clock.peak_bytes)
        print(f"T={num_tasks} round {round_index + 1}/{args.rounds} (median ms/step): "
              + ", ".join(f"{m} {1000 * np.median(seconds[m][-1]):.1f}" for m in methods), flush=True)
    del models
    gc.collect()
    keras.backend.clear_session()

    base = float(np.median(seconds["unitary"]))
    rows = {}
    for method in methods:
        median = float(np.median(seconds[method]))  # over every timed step of every round
        row = {
            **info[method],
            "step_seconds": seconds[method],  # [round][step]
            "round_median_seconds": [float(np.median(r)) for r in seconds[method]],
            "median_seconds_per_step": median,
            "ratio": median / base,
            "analytic_gradient_bytes": analytic_gradient_bytes(info[method], num_tasks, parameters["shared"], args.batch_size),
        }
        if memory == "tf":
            row["peak_bytes_per_round"] = peaks[method]
            row["peak_bytes"] = int(max(peaks[method]))
        elif memory in ("device", "process"):
            row["peak_bytes"] = memory_in_child(method, num_tasks, args)
        if info[method]["kind"] == "gradient" and args.solver_repeats:
            row["solver_seconds"] = solver_seconds(method, num_tasks, args.solver_repeats, args.seed)
        rows[method] = row
    if memory != "none" and rows["unitary"].get("peak_bytes") is not None:
        for row in rows.values():
            if row.get("peak_bytes") is not None:
                row["peak_bytes_minus_unitary"] = row["peak_bytes"] - rows["unitary"]["peak_bytes"]
    return {"parameters": parameters, "round_orders": orders, "methods": rows}


def goal(method_row: dict, by_tasks: dict, method: str) -> str:
    ratios = {t: r["methods"][method]["ratio"] for t, r in by_tasks.items()}
    if method == "unitary":
        return "baseline"
    if method_row["kind"] == "loss":
        verdict = "met" if all(r <= LOSS_GOAL for r in ratios.values()) else "not met"
        return f"≤ {LOSS_GOAL}× at every T: {verdict}"
    parts = []
    for t, bound in GRADIENT_GOALS.items():
        if t in ratios:
            parts.append(f"T={t} ≤ {bound:g}×: {'met' if ratios[t] <= bound else 'not met'}")
    return "; ".join(parts) or "n/a (T = 2 or 40 not run)"


def _mib(value) -> str:
    return "—" if value is None else f"{value / 2 ** 20:.1f}"


def markdown(report: dict) -> str:
    by_tasks = {int(t): r for t, r in report["results"].items()}
    ts = sorted(by_tasks)
    methods = report["methods"]
    first = by_tasks[ts[0]]["methods"]
    params = ", ".join(f"T={t}: {r['parameters']['total']:,} ({r['parameters']['shared']:,} shared)"
                       for t, r in sorted(by_tasks.items()))
    cfg = report["config"]
    lines = [
        "# Weighting methods: step time and memory against unitary scalarization",
        "",
        f"Hard-sharing MLP ({INPUT_DIM} inputs, shared {'-'.join(map(str, SHARED_UNITS))} trunk, a linear regression "
        f"head per task), batch {cfg['batch_size']}, Adam, `model.fit` on synthetic data; {report['backend']} backend on "
        f"{report['device']}, {report['machine']['cpus']} CPU cores. Parameters: {params}. "
        f"Median time of a step over {cfg['rounds']} interleaved rounds (methods in a fresh order each round) "
        f"of {cfg['steps']} individually timed steps "
        f"(after {cfg['warm_steps']} untimed ones per turn); ratio to unitary's median, ms per step in brackets. "
        f"Reproduce: `{report['command']}`.",
        "",
        "| method | kind | " + " | ".join(f"T={t}" for t in ts) + " | goal |",
        "| --- | --- | " + " | ".join("---:" for _ in ts) + " | --- |",
    ]
    for m in methods:
        kind = first[m]["kind"] + (f" ({first[m]['gradients']})" if first[m]["gradients"] else "")
        cells = [f"{by_tasks[t]['methods'][m]['ratio']:.2f}× ({1000 * by_tasks[t]['methods'][m]['median_seconds_per_step']:.1f})"
                 for t in ts]
        lines.append(f"| {m} | {kind} | " + " | ".join(cells) + f" | {goal(first[m], by_tasks, m)} |")
    spread = "; ".join(
        f"T={t}: {1000 * min(r['methods']['unitary']['round_median_seconds']):.1f}–"
        f"{1000 * max(r['methods']['unitary']['round_median_seconds']):.1f} ms" for t, r in sorted(by_tasks.items()))
    lines += ["", f"Noise gauge, unitary's per-round medians: {spread}."]
    gradient = [m for m in methods if first[m]["kind"] == "gradient"]
    if gradient and any("solver_seconds" in by_tasks[t]["methods"][m] for t in ts for m in gradient):
        lines += [
            "",
            "## Where the time goes",
            "",
            "Per gradient method: its step time minus unitary's, and the solver alone (`gradient_weights` on a random "
            "(T, T) Gram matrix, compiled; median of "
            f"{cfg['solver_repeats']} calls), in ms. The rest is getting the per-task gradients (TensorFlow: each "
            "task's own head backward, then the trunk's vectorised with pfor; JAX: vmap of one VJP), their Gram "
            "matrix and the combined update.",
            "",
            "| method | " + " | ".join(f"T={t} step − unitary | T={t} solver" for t in ts) + " |",
            "| --- | " + " | ".join("---: | ---:" for _ in ts) + " |",
        ]
        for m in gradient:
            cells = []
            for t in ts:
                row, base = by_tasks[t]["methods"][m], by_tasks[t]["methods"]["unitary"]
                extra = 1000 * (row["median_seconds_per_step"] - base["median_seconds_per_step"])
                solver = row.get("solver_seconds")
                cells += [f"{extra:.1f}", "—" if solver is None else f"{1000 * solver:.2f}"]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "## Memory", "", f"Measure: `{report['memory']}`"
              + (f" on {report['memory_device']}" if report.get("memory_device") else "")
              + f": {MEMORY_DESCRIPTIONS[report['memory']]}.", ""]
    if report["memory"] != "none":
        lines += [
            "MiB; in brackets the difference to unitary. The analytic column is the size of the per-task gradients "
            "the method materialises (T × shared parameters × 4 bytes; T × batch × trunk width × 4 for "
            "`gradients=\"features\"`).",
            "",
            "| method | " + " | ".join(f"T={t} peak | T={t} analytic" for t in ts) + " |",
            "| --- | " + " | ".join("---: | ---:" for _ in ts) + " |",
        ]
        for m in methods:
            cells = []
            for t in ts:
                row = by_tasks[t]["methods"][m]
                diff = row.get("peak_bytes_minus_unitary")
                peak = _mib(row.get("peak_bytes")) + ("" if diff is None or m == "unitary" else f" ({diff / 2 ** 20:+.1f})")
                cells += [peak, _mib(row["analytic_gradient_bytes"])]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def device_name() -> str:
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}: {device.device_kind}"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"gpu: {details.get('device_name', gpus[0].name)}"
    return "cpu"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="2,10,40", help="comma-separated task counts T")
    parser.add_argument("--methods", default=None, help="comma-separated weighting names (default: all registered)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per turn")
    parser.add_argument("--warm-steps", type=int, default=3, help="untimed steps at the start of every turn")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory", default="auto", choices=["auto", *MEMORY_DESCRIPTIONS])
    parser.add_argument("--solver-repeats", type=int, default=30, help="calls of each solver alone (0: skip)")
    parser.add_argument("--quick", action="store_true",
                        help="T = 2, 3; unitary, uncertainty, mgda; 3 steps, 2 rounds; writes only with --out")
    parser.add_argument("--out", default=None, help="results path without suffix (default bench/results/weighting_speed)")
    parser.add_argument("--child-memory", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_memory:
        return memory_child(args)
    if args.quick:
        for key, value in QUICK.items():
            if parser.get_default(key) == getattr(args, key):
                setattr(args, key, value)
        args.solver_repeats = min(args.solver_repeats, 3)
    if args.warm_steps < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--steps, --warm-steps and --rounds must be at least 1")
    task_counts = [int(t) for t in args.tasks.split(",")]
    # Every method but gradient-similarity gating, which needs auxiliary tasks (its cost is PCGrad's: one Gram matrix).
    methods = args.methods.split(",") if args.methods else [
        m for m in weighting_lib.list_weightings() if m != "gradient_similarity"]
    unknown = sorted(set(methods) - set(weighting_lib.list_weightings()))
    if unknown:
        parser.error(f"unknown weighting(s) {unknown}; registered: {weighting_lib.list_weightings()}")
    methods = ["unitary"] + [m for m in dict.fromkeys(methods) if m != "unitary"]
    memory = choose_memory(args.memory)

    results = {}
    for num_tasks in task_counts:
        results[num_tasks] = run_tasks(num_tasks, methods, args, memory)
    command = "python bench/weighting_speed.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    if keras.backend.backend() != "tensorflow":
        command = f"KERAS_BACKEND={keras.backend.backend()} " + command
    report = {
        "backend": keras.backend.backend(),
        "device": device_name(),
        "methods": methods,
        "config": {"tasks": task_counts, "steps": args.steps, "warm_steps": args.warm_steps, "rounds": args.rounds,
                   "batch_size": args.batch_size, "seed": args.seed, "input_dim": INPUT_DIM,
                   "shared_units": list(SHARED_UNITS), "examples": EXAMPLES, "optimizer": "adam",
                   "solver_repeats": args.solver_repeats},
        "memory": memory,
        "memory_description": MEMORY_DESCRIPTIONS[memory],
        "memory_device": tf_memory_device() if memory == "tf" else None,
        "goals": {"loss_methods_max_ratio": LOSS_GOAL, "gradient_methods_max_ratio": GRADIENT_GOALS},
        "results": results,
        "command": command,
        "machine": results_io.machine(),
    }
    text = markdown(report)
    print(text)
    if args.out or not args.quick:
        results_io.write(args.out or RESULTS / "weighting_speed", report, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
