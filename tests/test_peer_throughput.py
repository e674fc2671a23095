"""bench/peer_throughput.py compares like with like: its PyTorch modules are the zoo's models.

PyTorch is the benchmark's own requirement (bench/requirements-peer.txt), which .ci/run installs
before the slow set; these tests belong to that set.
"""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

spec = importlib.util.spec_from_file_location("peer_throughput", REPO / "bench" / "peer_throughput.py")
peer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peer)


@pytest.fixture
def torch():
    # Imported here, not at collection, so that the default run (which deselects these) has no skip.
    return pytest.importorskip("torch", reason="PyTorch comes with bench/requirements-peer.txt")


def both_sides(model: str):
    keras.utils.set_random_seed(3)
    zoo = peer.keras_model(model)
    # Move every weight off its initial value (zero biases, the cross-stitch's starting mix), so
    # that a mapping which dropped or swapped a weight shows.
    rng = np.random.default_rng(4)
    for weight in zoo.weights:
        weight.assign(np.asarray(weight) + rng.normal(0, 0.05, weight.shape).astype("float32"))
    module = peer.torch_model(model)
    peer.copy_keras_weights(model, zoo, module)
    return zoo, module


def torch_outputs(module, images):
    import torch

    return [o.detach().numpy() for o in module(torch.from_numpy(images).permute(0, 3, 1, 2))]


@pytest.mark.parametrize("model", peer.MODELS)
def test_the_pytorch_module_is_the_zoo_model(model, torch):
    zoo, module = both_sides(model)
    assert zoo.count_params() == sum(p.numel() for p in module.parameters())
    images, labels = peer.arrays(16, seed=5)
    ours = zoo.predict({"image": images}, verbose=0)
    theirs = torch_outputs(module, images)
    for task, output in zip(peer.TASKS, theirs):
        assert np.abs(ours[task] - output).max() < 1e-5
    assert np.abs(ours["left"]).max() > 0.1  # not two zero outputs agreeing

    # One SGD step on the same batch moves both to the same weights: same loss, same gradients.
    zoo.compile(optimizer=keras.optimizers.SGD(peer.LEARNING_RATE), metrics=[])
    zoo.train_on_batch({"image": images}, labels)
    optimizer = torch.optim.SGD(module.parameters(), lr=peer.LEARNING_RATE)
    logits = module(torch.from_numpy(images).permute(0, 3, 1, 2))
    loss = sum(torch.nn.functional.cross_entropy(o, torch.from_numpy(labels[t]).long())
               for o, t in zip(logits, peer.TASKS))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    ours = zoo.predict({"image": images}, verbose=0)
    for task, output in zip(peer.TASKS, torch_outputs(module, images)):
        assert np.abs(ours[task] - output).max() < 1e-5


def test_the_initialisers_are_of_one_family(torch):
    # Glorot-uniform kernels, zero biases on both sides: the same bound on every kernel.
    module = peer.torch_model("hard_sharing")
    first = module.trunk[0][0]
    fan_in, fan_out = first.weight[0].numel(), first.weight.shape[0] * first.weight[0, 0].numel()
    limit = np.sqrt(6 / (fan_in + fan_out))
    assert first.weight.abs().max().item() <= limit and first.weight.abs().max().item() > 0.9 * limit
    assert first.bias.abs().max().item() == 0


def test_quick_run_measures_every_framework_and_the_gpu_script_runs_on_the_cpu(tmp_path, torch):
    env = dict(os.environ, PEER_DEVICE="cpu", PEER_PYTHON=sys.executable, PEER_OUT=str(tmp_path))
    proc = subprocess.run(["bash", str(REPO / "bench" / "peer_gpu.sh"), "--quick", "--frameworks",
                           "keras-jax,keras-tensorflow,torch-eager"], capture_output=True, text=True,
                          timeout=600, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| hard_sharing | fp32 |")]
    assert len(rows) == 2  # batches 64 and 128
    for row in rows:
        cells = row.split(" | ")[3:]
        assert len(cells) == 3 and all("examples" not in c and "failed" not in c for c in cells)
        assert all(float(c.split(" ")[0].replace(",", "")) > 0 for c in cells)
