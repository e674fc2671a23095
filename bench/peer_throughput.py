"""Training throughput of zoo models against the same models written in PyTorch, side by side.

Three MultiMNIST-shaped models (36x36x1 images, two 10-class tasks), each built from its zoo
recipe by ``mtlzoo.create_model`` and written again as a plain ``torch.nn.Module`` with the same
layers, parameter count and initialiser family (Glorot-uniform kernels, zero biases):

- ``hard_sharing``: MultiLeNet (``zoo_configs/multimnist_hard_sharing.yaml``);
- ``cross_stitch``: two LeNet columns, cross-stitch units after each stage
  (``multimnist_cross_stitch.yaml``);
- ``mmoe``: a LeNet conv stem, 3 dense experts, a softmax gate per task (``multimnist_mmoe.yaml``).

LibMTL's PyPI release (1.1.5, 2021) is not used: its ``LibMTL.Trainer`` wants its own data
loaders and config parser, and its architectures wrap an encoder the user writes anyway; the
modules below are what its HPS and cross-stitch compute, checked against the zoo's models by
``tests/test_peer_throughput.py`` (same parameter count; same outputs to 1e-5 given the same
weights). MUiR has no PyTorch peer here (no faithful port exists to compare with).

mtlzoo runs on Keras's TensorFlow backend as compiled by default (``jit_compile="auto"``, which
leaves XLA off on a machine without a GPU), on TensorFlow with XLA (``keras-tensorflow-xla``:
``compile(jit_compile=True)``) and on the JAX backend (always XLA); PyTorch eager, and
``torch.compile`` (inductor) where asked for.

Every side trains with plain SGD (learning rate 0.01) on the sum of the two tasks'
cross-entropies, on the same in-memory arrays, in order: mtlzoo through ``MultiTaskModel.fit``
as a user calls it (its default per-task accuracy metrics included), PyTorch through the usual
loop (``zero_grad``, forward, ``backward``, ``step``; batches moved to the device as they are
used). Each framework, model and precision runs in a fresh process that goes through the batch sizes
in increasing order: for each, the first call (tracing, XLA or inductor compilation) is timed
apart, then ``--epochs`` epochs of at least ``--seconds`` each; the steady throughput is the
median of all but the first. Frameworks alternate in every round, ``--rounds`` rounds,
and the table gives medians and the ratio to PyTorch eager. Peak memory is the device
allocator's peak on a GPU; on the CPU, how far the process's peak RSS rises during the timed
epochs above its size with the data loaded (what training itself holds: activations, gradients,
the input pipeline's buffers).

    python bench/peer_throughput.py                   # CPU: bench/results/peer_throughput_cpu.*
    python bench/peer_throughput.py --quick           # one small round, nothing written
    bash bench/peer_gpu.sh                            # GPU, KERAS_BACKEND=jax, no TensorFlow

PyTorch is this benchmark's own requirement (``pip install -r bench/requirements-peer.txt``),
never part of mtlzoo's install.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
MODELS = ("hard_sharing", "cross_stitch", "mmoe")
RECIPES = {name: REPO / "zoo_configs" / f"multimnist_{name}.yaml" for name in MODELS}
FRAMEWORKS = ("keras-tensorflow", "keras-tensorflow-xla", "keras-jax", "torch-eager", "torch-compile")
TASKS = ("left", "right")
IMAGE = (36, 36, 1)
LEARNING_RATE = 0.01
MEMORY = {"gpu": "the device allocator's peak",
          "cpu": "how far the peak RSS rose during the timed epochs, the data already loaded"}
GOALS = {"cpu": {"hard_sharing": 1.0, "other": 0.8}, "gpu": {"hard_sharing": 1.5, "other": 1.0}}


def recipe_params(model: str) -> dict:
    """The architecture parameters of the model's zoo recipe."""
    import yaml

    return dict(yaml.safe_load(RECIPES[model].read_text())["architecture"]["params"])


# ---------------------------------------------------------------------------------------------
# The zoo side (Keras on TensorFlow or JAX).

def keras_model(model: str):
    import mtlzoo

    tasks = [mtlzoo.Task(t, "classification", num_classes=10) for t in TASKS]
    return mtlzoo.create_model(model, tasks, {"image": IMAGE}, **recipe_params(model))


# ---------------------------------------------------------------------------------------------
# The PyTorch side: the same layers, written as a PyTorch user would.

def torch_model(model: str):
    """The PyTorch module of ``model``; its ``forward(images NCHW)`` returns (left, right) logits."""
    import torch
    from torch import nn

    params = recipe_params(model)
    filters, size = params["filters"], params["kernel_size"]
    side = IMAGE[0] // 2 ** len(filters)
    flat = filters[-1] * side * side

    def conv(in_channels, out_channels):
        return nn.Conv2d(in_channels, out_channels, size, padding=size // 2)

    def head():
        widths = [*params.get("head_units", []), 10]
        layers, width = [], None
        for i, units in enumerate(widths):
            layers.append(nn.LazyLinear(units) if width is None else nn.Linear(width, units))
            width = units
            if i < len(widths) - 1:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    def stem():
        layers, channels = [], IMAGE[2]
        for f in filters:
            layers += [conv(channels, f), nn.ReLU(), nn.MaxPool2d(2)]
            channels = f
        return nn.Sequential(*layers, nn.Flatten())

    class HardSharing(nn.Module):
        def __init__(self):
            super().__init__()
            (units,) = params["shared_units"]
            self.trunk = nn.Sequential(stem(), nn.Linear(flat, units), nn.ReLU())
            self.heads = nn.ModuleList(head() for _ in TASKS)

        def forward(self, x):
            shared = self.trunk(x)
            return tuple(h(shared) for h in self.heads)

    class CrossStitch(nn.Module):
        def __init__(self):
            super().__init__()
            (units,) = params["units"]
            channels = [IMAGE[2], *filters]
            self.convs = nn.ModuleList(
                nn.ModuleList(conv(channels[i], channels[i + 1]) for _ in TASKS) for i in range(len(filters)))
            self.dense = nn.ModuleList(nn.Linear(flat, units) for _ in TASKS)
            # alphas[s][i, j, c] * multiplier: how much task i takes of column j's channel c after
            # stage s. Stored divided by the multiplier, as the zoo's CrossStitch does, so that
            # they learn that much faster.
            self.multiplier = params.get("alpha_lr_multiplier", 1.0)
            mix = torch.full((len(TASKS), len(TASKS)), 0.1) + torch.eye(len(TASKS)) * 0.8
            self.alphas = nn.ParameterList(
                nn.Parameter(mix[:, :, None].repeat(1, 1, c) / self.multiplier) for c in [*filters, units])
            self.heads = nn.ModuleList(head() for _ in TASKS)
            self.pool = nn.MaxPool2d(2)

        def stitch(self, alpha, xs, spatial):
            a = alpha * self.multiplier
            a = a[:, :, :, None, None] if spatial else a
            return [sum(a[i, j] * x for j, x in enumerate(xs)) for i in range(len(xs))]

        def forward(self, x):
            xs = [x] * len(TASKS)
            for s, layer in enumerate(self.convs):
                xs = [self.pool(torch.relu(c(v))) for c, v in zip(layer, xs)]
                xs = self.stitch(self.alphas[s], xs, spatial=True)
            xs = [torch.relu(d(v.flatten(1))) for d, v in zip(self.dense, xs)]
            xs = self.stitch(self.alphas[-1], xs, spatial=False)
            return tuple(h(v) for h, v in zip(self.heads, xs))

    class MMoE(nn.Module):
        def __init__(self):
            super().__init__()
            (units,) = params["expert_units"]
            self.stem = stem()
            self.experts = nn.ModuleList(
                nn.Sequential(nn.Linear(flat, units), nn.ReLU()) for _ in range(params["num_experts"]))
            self.gates = nn.ModuleList(nn.Linear(flat, params["num_experts"]) for _ in TASKS)
            self.heads = nn.ModuleList(head() for _ in TASKS)

        def forward(self, x):
            x = self.stem(x)
            experts = torch.stack([e(x) for e in self.experts], dim=1)  # (batch, E, units)
            return tuple(h((torch.softmax(g(x), -1)[:, :, None] * experts).sum(1))
                         for g, h in zip(self.gates, self.heads))

    module = {"hard_sharing": HardSharing, "cross_stitch": CrossStitch, "mmoe": MMoE}[model]()
    with torch.no_grad():
        module(torch.zeros(1, IMAGE[2], *IMAGE[:2]))  # materialise the lazy head layers
        for layer in module.modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
    return module


def copy_keras_weights(model: str, source, target) -> None:
    """Give the PyTorch module ``target`` the weights of the zoo model ``source``.

    Keras kernels are (in, out) and (kh, kw, in, out) with channels-last flattening; PyTorch's
    are (out, in) and (out, in, kh, kw), flattening channels first, so the first dense layer
    after the convolutions has its input rows reordered.
    """
    import torch

    filters = recipe_params(model)["filters"]
    side = IMAGE[0] // 2 ** len(filters)

    def dense(layer, kernel, bias, after_convs=False):
        kernel = np.asarray(kernel)
        if after_convs:  # rows in (h, w, c) order -> (c, h, w)
            kernel = kernel.reshape(side, side, filters[-1], -1).transpose(2, 0, 1, 3).reshape(kernel.shape)
        layer.weight.copy_(torch.from_numpy(kernel.T.copy()))
        layer.bias.copy_(torch.from_numpy(np.asarray(bias)))

    def conv(layer, kernel, bias):
        layer.weight.copy_(torch.from_numpy(np.asarray(kernel).transpose(3, 2, 0, 1).copy()))
        layer.bias.copy_(torch.from_numpy(np.asarray(bias)))

    def weights(name):
        return [np.asarray(w) for w in source.get_layer(name).get_weights()]

    def heads(modules):
        for task, head in zip(TASKS, modules):
            linear = [m for m in head if isinstance(m, torch.nn.Linear)]
            names = [f"{task}_head_dense_{i}" for i in range(len(linear) - 1)] + [task]
            for layer, name in zip(linear, names):
                dense(layer, *weights(name))

    with torch.no_grad():
        if model == "hard_sharing":
            convs = [m for m in target.trunk[0] if isinstance(m, torch.nn.Conv2d)]
            for i, layer in enumerate(convs):
                conv(layer, *weights(f"shared_conv_{i}"))
            dense(target.trunk[1], *weights("shared_dense_0"), after_convs=True)
        elif model == "cross_stitch":
            for i, layer in enumerate(target.convs):
                kernel, bias = weights(f"columns_conv_{i}")
                for t, column in enumerate(layer):
                    conv(column, kernel[t], bias[t])
            kernel, bias = weights("columns_dense_0")
            for t, column in enumerate(target.dense):
                dense(column, kernel[t], bias[t], after_convs=True)
            stages = [f"cross_stitch_conv_{i}" for i in range(len(filters))] + ["cross_stitch_dense_0"]
            for alpha, name in zip(target.alphas, stages):
                alpha.copy_(torch.from_numpy(np.asarray(source.get_layer(name).kernel)))
        else:
            convs = [m for m in target.stem if isinstance(m, torch.nn.Conv2d)]
            for i, layer in enumerate(convs):
                conv(layer, *weights(f"stem_conv_{i}"))
            moe = source.get_layer("mixture_of_experts")
            for e, expert in enumerate(target.experts):
                (keras_dense,) = moe.expert(e)
                dense(expert[0], *[np.asarray(w) for w in keras_dense.get_weights()], after_convs=True)
            for gate, keras_gate in zip(target.gates, moe.gates):
                dense(gate, *[np.asarray(w) for w in keras_gate.get_weights()], after_convs=True)
        heads(target.heads)


# ---------------------------------------------------------------------------------------------
# One measurement, in its own process.

def arrays(examples: int, seed: int = 0):
    """Random images in [0, 1) and labels; rows repeat a block of 4,096 to keep making them cheap."""
    rng = np.random.default_rng(seed)
    block = min(examples, 4096)
    images = np.resize(rng.random((block, *IMAGE), dtype=np.float32), (examples, *IMAGE))
    labels = {t: np.resize(rng.integers(0, 10, block).astype("int32"), examples) for t in TASKS}
    return images, labels


def _status_bytes(field: str) -> int:
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024  # reported in kB


def start_memory_watch() -> int:
    """Reset the process's peak RSS (Linux's clear_refs) and return its RSS now."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def memory_growth(start: int) -> int:
    """How far the peak RSS rose above ``start`` since ``start_memory_watch``."""
    return _status_bytes("VmHWM") - start


def measure_keras(model: str, batches, precision: str, epochs: int, seconds: float, device: str,
                  jit_compile="auto") -> list[dict]:
    import keras

    if precision == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    net = keras_model(model)
    net.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), jit_compile=jit_compile)

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    def fit(images, labels, batch, epochs=1, callbacks=()):
        started = time.perf_counter()
        net.fit({"image": images}, labels, batch_size=batch, epochs=epochs, shuffle=False, verbose=0,
                callbacks=list(callbacks))
        return time.perf_counter() - started

    results = []
    for batch in batches:
        images, labels = arrays(batch * 3)
        first_call = fit(images[:batch], {t: v[:batch] for t, v in labels.items()}, batch)
        steps = max(3, math.ceil(seconds / (fit(images, labels, batch) / 3)))
        images, labels = arrays(batch * steps)
        timer = EpochTimer()
        base = start_memory_watch()
        fit(images, labels, batch, epochs, [timer])
        results.append({"batch": batch, "first_call_s": first_call, "steps_per_epoch": steps,
                        "epoch_s": timer.seconds, "peak_memory_bytes": keras_peak_memory(device, base),
                        "parameters": int(net.count_params())})
    return results


def keras_peak_memory(device: str, base_rss: int) -> int | None:
    import keras

    if device == "gpu" and keras.backend.backend() == "jax":
        import jax

        # JAX keeps one peak for the process: batches run in increasing size, so it is this one's.
        return int(jax.devices()[0].memory_stats().get("peak_bytes_in_use", 0)) or None
    return memory_growth(base_rss)


def measure_torch(model: str, batches, precision: str, epochs: int, seconds: float, device: str,
                  compiled: bool) -> list[dict]:
    import torch

    torch.manual_seed(0)
    target = torch.device("cuda" if device == "gpu" else "cpu")
    net = torch_model(model).to(target)
    optimizer = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.CrossEntropyLoss()
    forward = torch.compile(net) if compiled else net

    def step(x, ys):
        x = x.to(target, non_blocking=True).permute(0, 3, 1, 2)  # NHWC arrays -> NCHW
        with torch.autocast(target.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            outputs = forward(x)
            loss = sum(loss_fn(o.float(), y.to(target, non_blocking=True).long()) for o, y in zip(outputs, ys))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def run(data, batch, steps):
        images, labels = data
        started = time.perf_counter()
        for i in range(steps):
            s = slice(i * batch, (i + 1) * batch)
            step(images[s], [labels[t][s] for t in TASKS])
        if target.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    def tensors(examples):
        images, labels = arrays(examples)
        images, labels = torch.from_numpy(images), {t: torch.from_numpy(v) for t, v in labels.items()}
        if target.type == "cuda":  # what a DataLoader with pin_memory=True hands over
            images, labels = images.pin_memory(), {t: v.pin_memory() for t, v in labels.items()}
        return images, labels

    results = []
    for batch in batches:
        probe = tensors(batch * 3)
        first_call = run(probe, batch, 1)
        steps = max(3, math.ceil(seconds / (run(probe, batch, 3) / 3)))
        data = tensors(batch * steps)
        base = start_memory_watch()
        if target.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        epoch_s = [run(data, batch, steps) for _ in range(epochs)]
        peak = torch.cuda.max_memory_allocated() if target.type == "cuda" else memory_growth(base)
        results.append({"batch": batch, "first_call_s": first_call, "steps_per_epoch": steps, "epoch_s": epoch_s,
                        "peak_memory_bytes": int(peak), "parameters": sum(p.numel() for p in net.parameters())})
    return results


def worker(spec: dict) -> list[dict]:
    """Every batch size of ``spec``, smallest first, in this process; one result each."""
    framework, device = spec["framework"], spec["device"]
    args = (spec["model"], sorted(spec["batches"]), spec["precision"], spec["epochs"], spec["seconds"], device)
    if framework.startswith("keras"):
        results = measure_keras(*args, jit_compile=True if framework.endswith("-xla") else "auto")
    else:
        results = measure_torch(*args, compiled=framework == "torch-compile")
    common = {k: v for k, v in spec.items() if k != "batches"}
    for result in results:
        # The first timed epoch still warms caches: steady = the median of the others.
        steady = result["epoch_s"][1:] or result["epoch_s"]
        result["examples_per_s"] = result["batch"] * result["steps_per_epoch"] / statistics.median(steady)
    return [{**common, **result} for result in results]


def spawn(spec: dict, timeout: float | None = None) -> list[dict]:
    """Run ``worker(spec)`` in a fresh Python, on the backend the framework names."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    if spec["framework"].startswith("keras"):
        env["KERAS_BACKEND"] = spec["framework"].split("-")[1]
    if spec["device"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["JAX_PLATFORMS"] = "cpu"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    common = {k: v for k, v in spec.items() if k != "batches"}
    try:
        done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [{**common, "batch": batch, "error": [f"stopped after {timeout:.0f} s"]} for batch in spec["batches"]]
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    if done.returncode != 0 or not lines:
        error = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return [{**common, "batch": batch, "error": error} for batch in spec["batches"]]
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------
# The sweep and its table.

def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("keras", "tensorflow", "jax", "torch"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def device_name(device: str) -> str:
    if device == "gpu":
        import torch

        return torch.cuda.get_device_name(0)
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model}, {os.cpu_count()} cores"


def summarise(measurements: list[dict], frameworks, models, batches, precisions) -> list[dict]:
    rows = []
    for model in models:
        for precision in precisions:
            for batch in batches:
                cell = {"model": model, "precision": precision, "batch": batch}
                for framework in frameworks:
                    ok = [m for m in measurements if (m["model"], m["precision"], m["batch"], m["framework"])
                          == (model, precision, batch, framework) and "error" not in m]
                    failed = [m["error"] for m in measurements if (m["model"], m["precision"], m["batch"],
                              m["framework"]) == (model, precision, batch, framework) and "error" in m]
                    cell[framework] = None if not ok else {
                        "examples_per_s": statistics.median(m["examples_per_s"] for m in ok),
                        "first_call_s": statistics.median(m["first_call_s"] for m in ok),
                        "peak_memory_mb": _median_mb([m["peak_memory_bytes"] for m in ok]),
                        "parameters": ok[0]["parameters"], "rounds": len(ok),
                    }
                    if failed:
                        cell.setdefault("errors", {})[framework] = failed[0]
                rows.append(cell)
    return rows


def _median_mb(values):
    known = [v for v in values if v is not None]
    return statistics.median(known) / 2**20 if known else None


def best(rows, model, precision, framework):
    """Framework's best throughput over batch sizes for model (and the batch size it was at)."""
    cells = [(r[framework]["examples_per_s"], r["batch"]) for r in rows
             if r["model"] == model and r["precision"] == precision and r.get(framework)]
    return max(cells) if cells else None


def verdict(rows, device, frameworks, models) -> dict:
    """Each model's best mtlzoo throughput over PyTorch eager's best, each at its best batch size."""
    zoo = [f for f in frameworks if f.startswith("keras")]
    out = {}
    for model in models:
        reference = best(rows, model, "fp32", "torch-eager")
        candidates = [(best(rows, model, "fp32", f), f) for f in zoo]
        candidates = [(b, f) for b, f in candidates if b]
        if not reference or not candidates:
            continue
        (rate, batch), framework = max(candidates)
        goal = GOALS[device]["hard_sharing" if model == "hard_sharing" else "other"]
        out[model] = {"framework": framework, "batch": batch, "examples_per_s": rate,
                      "torch_eager": {"examples_per_s": reference[0], "batch": reference[1]},
                      "ratio": rate / reference[0], "goal": goal, "met": rate / reference[0] >= goal}
    return out


def markdown(report: dict) -> str:
    frameworks = report["frameworks"]
    lines = [
        f"# Training throughput against PyTorch ({report['device']})",
        "",
        f"{report['device_name']}; " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ". "
        f"MultiMNIST-shaped models (36x36x1, two 10-class tasks) from the zoo recipes, SGD, sum of the "
        f"task losses; medians of {report['rounds']} rounds, frameworks alternating, each framework and model a fresh "
        f"process. Reproduce: `{report['command']}`.",
        "",
        "## Best batch size of each framework (fp32)",
        "",
        "| model | parameters | PyTorch eager | mtlzoo, best backend | ratio | goal | met |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for model, v in report["verdict"].items():
        params = next(r for r in report["rows"] if r["model"] == model and r.get("torch-eager"))["torch-eager"]
        lines.append(
            f"| {model} | {params['parameters']:,} | {v['torch_eager']['examples_per_s']:,.0f}/s "
            f"(batch {v['torch_eager']['batch']}) | {v['examples_per_s']:,.0f}/s ({v['framework']}, batch "
            f"{v['batch']}) | {v['ratio']:.2f}x | ≥ {v['goal']:.1f}x | {'yes' if v['met'] else 'no'} |")
    lines += ["", "## Every measurement", "",
              "Examples per second (ratio to PyTorch eager at the same batch size); first call in seconds "
              "(tracing or compiling plus one step); peak memory in MiB "
              f"({MEMORY[report['device']]}).",
              "",
              "| model | precision | batch | " + " | ".join(frameworks) + " |",
              "| --- | --- | ---: | " + " | ".join("---:" for _ in frameworks) + " |"]
    for row in report["rows"]:
        reference = row.get("torch-eager")
        cells = []
        for f in frameworks:
            c = row.get(f)
            if c is None:
                cells.append("failed" if f in row.get("errors", {}) else "–")
                continue
            ratio = f" ({c['examples_per_s'] / reference['examples_per_s']:.2f}x)" if reference else ""
            memory = "–" if c["peak_memory_mb"] is None else f"{c['peak_memory_mb']:.0f} MiB"
            cells.append(f"{c['examples_per_s']:,.0f}{ratio}; {c['first_call_s']:.1f} s; {memory}")
        lines.append(f"| {row['model']} | {row['precision']} | {row['batch']} | " + " | ".join(cells) + " |")
    errors = {(r["model"], r["precision"], r["batch"], f): e for r in report["rows"]
              for f, e in r.get("errors", {}).items()}
    if errors:
        lines += ["", "Failures (last line of the error):", ""]
        lines += [f"- {m}, {p}, batch {b}, {f}: {' '.join(e)}" for (m, p, b, f), e in errors.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--frameworks", default="keras-tensorflow,keras-tensorflow-xla,keras-jax,torch-eager")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="64,256,1024,4096")
    parser.add_argument("--precisions", default="fp32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement (the first is dropped)")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each timed epoch")
    parser.add_argument("--deadline", type=float, help="seconds after which no measurement starts (and a "
                        "running one is stopped); the table keeps what was measured by then")
    parser.add_argument("--quick", action="store_true", help="hard sharing, batches 64 and 128, one short round; nothing written")
    parser.add_argument("--out", help="default bench/results/peer_throughput_<device>")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    frameworks = args.frameworks.split(",")
    models = ["hard_sharing"] if args.quick else args.models.split(",")
    batches = [64, 128] if args.quick else [int(b) for b in args.batches.split(",")]
    precisions = args.precisions.split(",")
    rounds, epochs, seconds = (1, 2, 0.3) if args.quick else (args.rounds, args.epochs, args.seconds)
    for name, given, known in (("--frameworks", frameworks, FRAMEWORKS), ("--models", models, MODELS),
                               ("--precisions", precisions, ("fp32", "bf16"))):
        unknown = sorted(set(given) - set(known))
        if unknown:
            parser.error(f"{name}: unknown {unknown}; expected some of {list(known)}")
    if "torch-eager" not in frameworks:
        parser.error("--frameworks must include torch-eager: every ratio is to it")
    measurements, started = [], time.monotonic()
    for r in range(rounds):
        for model in models:
            for precision in precisions:
                # Rotate the order each round so that no framework always runs first.
                order = frameworks[r % len(frameworks):] + frameworks[:r % len(frameworks)]
                for framework in order:
                    spec = {"framework": framework, "model": model, "batches": batches, "precision": precision,
                            "epochs": epochs, "seconds": seconds, "device": args.device, "round": r}
                    left = None if args.deadline is None else args.deadline - (time.monotonic() - started)
                    if left is not None and left <= 0:
                        print(f"deadline: {framework} {model} {precision} round {r + 1} not measured", flush=True)
                        continue
                    for m in spawn(spec, timeout=left):
                        measurements.append(m)
                        shown = (f"{m['examples_per_s']:,.0f} examples/s, first call {m['first_call_s']:.1f} s"
                                 if "error" not in m else f"FAILED: {' '.join(m['error'])}")
                        print(f"round {r + 1}/{rounds} {model} {precision} batch {m['batch']} {framework}: {shown}",
                              flush=True)
    rows = summarise(measurements, frameworks, models, batches, precisions)
    command = " ".join(["python bench/peer_throughput.py", *(sys.argv[1:] if argv is None else argv)])
    report = {"device": args.device, "device_name": device_name(args.device), "versions": versions(),
              "frameworks": frameworks, "rounds": rounds, "epochs": epochs, "seconds_per_epoch": seconds,
              "command": "bash bench/peer_gpu.sh" if args.device == "gpu" else command,
              "rows": rows, "verdict": verdict(rows, args.device, frameworks, models), "measurements": measurements}
    text = markdown(report)
    print(text)
    if args.quick:
        return 0 if all("error" not in m for m in measurements) else 1
    import results_io  # bench/, beside this script; here because the tests import this module by path

    results_io.write(args.out or RESULTS / f"peer_throughput_{args.device}", report, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
