"""Multi-worker training: two worker processes on 127.0.0.1 under MultiWorkerMirroredStrategy."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import yaml

from conftest import REPO
from helpers import GENERAL_ARCHITECTURES, small_recipe, small_recipe_dict, write_recipe
from mtlzoo.recipes.config import recipe_from_dict
from mtlzoo.training import multi_worker, trainer
from mtlzoo.training.strategies import make_strategy

WORKER = """
    import json, sys
    import numpy as np
    from mtlzoo.recipes.config import load_recipe
    from mtlzoo.training import trainer
    recipe_path, run_dir, resume, out = sys.argv[1:5]
    model = trainer.train(load_recipe(recipe_path), run_dir, strategy="multi_worker", resume=resume == "1",
                          verbose=0)
    np.savez(out, *model.get_weights())
"""


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(tmp_path, recipe_path, run_dir, *, resume=False) -> list[subprocess.Popen]:
    ports = free_ports(2)
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                     "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "KERAS_BACKEND": "tensorflow",
               "PYTHONPATH": str(REPO)}
        procs.append(subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WORKER), str(recipe_path), str(run_dir), "1" if resume else "0",
             str(tmp_path / f"weights_{index}.npz")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    return procs


def finish(procs, timeout=300) -> None:
    """Wait for every worker; on a failure or a timeout, kill them all and show their output."""
    deadline = time.monotonic() + timeout
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1, deadline - time.monotonic()))
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    failed = [i for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        pytest.fail(f"workers {failed} failed:\n" + "\n".join(o[-3000:] for o in outputs))


def weights(path):
    with np.load(path) as data:
        return [data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[1]))]


def max_diff(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


@pytest.mark.slow
def test_two_workers_train_as_one_process_on_the_same_global_batches(tmp_path):
    # Unshuffled, so that the workers' halves of each global batch are the one process's batch.
    raw = small_recipe_dict(epochs=4, shuffle=False)
    recipe_path = write_recipe(tmp_path / "recipe.yaml", raw)
    finish(start_workers(tmp_path, recipe_path, tmp_path / "run"))
    worker_0, worker_1 = weights(tmp_path / "weights_0.npz"), weights(tmp_path / "weights_1.npz")
    assert max_diff(worker_0, worker_1) == 0.0  # one model, all-reduced: bit-identical on both workers
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["strategy"] == "multi_worker" and run["replicas"] == 2
    one = trainer.train(small_recipe(epochs=4, shuffle=False), tmp_path / "one", strategy="one_device", verbose=0)
    # The same global batches; only the order of the floating-point sums differs.
    assert max_diff(worker_0, one.get_weights()) < 1e-5
    one_history = json.loads((tmp_path / "one" / "history.json").read_text())
    np.testing.assert_allclose(history["loss"], one_history["loss"], rtol=1e-5)


@pytest.mark.slow
def test_a_gradient_method_on_two_workers_equals_one_process(tmp_path):
    # DWA's epoch state and PCGrad's per-task gradients, all-reduced across the workers
    # before they are combined; the result is the one-process run's.
    raw = small_recipe_dict(epochs=4, shuffle=False, weighting=["dwa", "pcgrad"])
    finish(start_workers(tmp_path, write_recipe(tmp_path / "recipe.yaml", raw), tmp_path / "run"))
    worker_0 = weights(tmp_path / "weights_0.npz")
    assert max_diff(worker_0, weights(tmp_path / "weights_1.npz")) == 0.0
    one = trainer.train(small_recipe(epochs=4, shuffle=False, weighting=["dwa", "pcgrad"]), tmp_path / "one",
                        strategy="one_device", verbose=0)
    assert max_diff(worker_0, one.get_weights()) < 1e-5
    np.testing.assert_array_equal(one.weighting.methods[0].epochs_seen.numpy(), 4.0)  # per task


@pytest.mark.slow
def test_cox_risk_sets_span_both_workers(tmp_path):
    # Two survival tasks: each worker's loss gathers the whole global batch, so the two workers
    # take the one process's steps (the per-worker risk sets would not).
    raw = yaml.safe_load((REPO / "zoo_configs" / "actg320_hard_sharing.yaml").read_text())
    # SGD and no dropout: the Cox loss ignores the risk heads' biases, and Adam would blow up
    # their float-rounding gradients; dropout masks differ between the workers and one process.
    raw["training"].update(epochs=3, batch_size=256, shuffle=False, early_stopping=None, optimizer="sgd",
                           learning_rate=0.05, weight_decay=0.0)
    raw["architecture"]["params"]["dropout"] = 0.0
    finish(start_workers(tmp_path, write_recipe(tmp_path / "recipe.yaml", raw), tmp_path / "run"))
    worker_0 = weights(tmp_path / "weights_0.npz")
    assert max_diff(worker_0, weights(tmp_path / "weights_1.npz")) == 0.0
    one = trainer.train(recipe_from_dict(raw, source="test"), tmp_path / "one", strategy="one_device", verbose=0)
    assert max_diff(worker_0, one.get_weights()) < 1e-5
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    one_history = json.loads((tmp_path / "one" / "history.json").read_text())
    np.testing.assert_allclose(history["aids_c_index"], one_history["aids_c_index"], atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", [name for name in GENERAL_ARCHITECTURES if name != "hard_sharing"])
def test_every_architecture_trains_on_two_workers(tmp_path, architecture):
    raw = small_recipe_dict(epochs=3)
    raw["architecture"] = {"name": architecture, "params": {}}
    raw["training"]["learning_rate"] = 0.01
    finish(start_workers(tmp_path, write_recipe(tmp_path / "recipe.yaml", raw), tmp_path / "run"))
    assert max_diff(weights(tmp_path / "weights_0.npz"), weights(tmp_path / "weights_1.npz")) == 0.0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["loss"][-1] < history["loss"][0]


@pytest.mark.slow
def test_a_killed_worker_restarts_from_the_last_checkpoint(tmp_path):
    epochs = 30
    raw = small_recipe_dict(epochs=epochs, shuffle=False)
    recipe_path = write_recipe(tmp_path / "recipe.yaml", raw)
    run_dir = tmp_path / "run"
    state = run_dir / "checkpoints" / "state.json"
    procs = start_workers(tmp_path, recipe_path, run_dir)
    try:
        deadline = time.monotonic() + 240
        while not (state.exists() and json.loads(state.read_text())["epochs_done"] >= 3):
            assert all(p.poll() is None for p in procs), "a worker ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint after 240 s"
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGKILL)  # worker 1 dies mid-run; worker 0 cannot go on alone
        procs[1].wait()
        try:
            procs[0].wait(timeout=20)
        except subprocess.TimeoutExpired:
            procs[0].kill()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    done = json.loads(state.read_text())["epochs_done"]
    assert 3 <= done < epochs

    finish(start_workers(tmp_path, recipe_path, run_dir, resume=True))
    run = json.loads((run_dir / "run.json").read_text())
    assert run["initial_epoch"] == done
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["loss"]) == epochs  # no epoch lost or repeated
    resumed = weights(tmp_path / "weights_0.npz")
    assert max_diff(resumed, weights(tmp_path / "weights_1.npz")) == 0.0
    # Before the kill, the epochs are those of an uninterrupted one-process run; after the
    # restart (optimizer state and data order restored) training ends where that run does.
    trainer.train(small_recipe(epochs=epochs, shuffle=False), tmp_path / "straight", strategy="one_device",
                  verbose=0)
    straight_loss = json.loads((tmp_path / "straight" / "history.json").read_text())["loss"]
    np.testing.assert_allclose(history["loss"][:done], straight_loss[:done], rtol=1e-3)
    assert history["loss"][-1] == pytest.approx(straight_loss[-1], rel=0.05)
    assert history["loss"][-1] < 0.5 * history["loss"][0]


def test_multi_worker_without_a_cluster_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs TF_CONFIG describing the cluster"):
        multi_worker.cluster_spec()
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}')
    with pytest.raises(ValueError, match="task index 3 is outside the 1 workers"):
        multi_worker.cluster_spec()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not a valid cluster description"):
        multi_worker.cluster_spec()


@pytest.mark.parametrize("name, message", [
    ("tpu", "Strategy 'tpu' found no TPU to connect to"),
    ("parameter_server", "no ParameterServerStrategy support .* Use 'multi_worker'"),
])
def test_strategies_without_their_hardware_or_support_say_why(name, message):
    with pytest.raises(ValueError, match=message):
        make_strategy(name)
