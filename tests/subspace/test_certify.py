"""certify: the coded message describes exactly the model that is scored, and the bound is the
Occam bound of that model's errors and bits."""

import re

import keras
import numpy as np
import pytest

import mtlzoo
from mtlzoo import subspace
from mtlzoo.data import load_dataset
from mtlzoo.subspace.bounds import occam_bound
from mtlzoo.subspace.certify import certify, quantized_copy, task_errors


@pytest.fixture(scope="module")
def data():
    dataset = load_dataset("label_permuted_mnist", num_tasks=3, examples_per_task=60, heldout_per_task=30)
    return dataset, dataset.load("train"), dataset.load("test")


def trained(dataset, train, task_dim, sharing="columns"):
    keras.utils.set_random_seed(0)
    model = mtlzoo.create_model("subspace", dataset.tasks(), dataset.input_spec(), units=(16,),
                                intrinsic_dim=40, task_dim=task_dim, sharing=sharing)
    model.compile(optimizer=keras.optimizers.Adam(0.02))
    model.fit(train.to_tf_dataset(60, shuffle=True), epochs=6, shuffle=False, verbose=0)
    return model


def test_the_quantized_model_is_what_its_symbols_and_codebook_say(data):
    dataset, train, _ = data
    model = trained(dataset, train, task_dim=4)
    quantized = quantized_copy(model, levels=6)
    layer = subspace.find_columns(quantized)
    codebook = keras.ops.convert_to_numpy(layer.codebook)
    assert len(np.unique(codebook)) == 6
    symbols = layer.symbols()
    assert symbols.shape == (40 * 4 + 3 * 4,) and symbols.max() < 6
    # A plain model holding exactly codebook[symbols] answers as the quantized one does.
    plain = quantized_copy(model, levels=6)
    snapped, offset = subspace.find_columns(plain), 0
    for variable in snapped.free_variables():
        size = int(np.prod(variable.shape))
        variable.assign(codebook[symbols[offset:offset + size]].reshape(variable.shape))
        offset += size
    x = {"image": train.inputs["image"][:20]}
    for name, value in plain.predict(x, verbose=0).items():
        np.testing.assert_allclose(value, quantized.predict(x, verbose=0)[name], atol=1e-5)
    # Straight-through: fine-tuning moves the codebook and the unquantised values.
    before = [keras.ops.convert_to_numpy(v).copy() for v in (layer.codebook, layer.shared_basis)]
    quantized.compile(optimizer=keras.optimizers.Adam(0.01))
    quantized.fit(train.to_tf_dataset(60), epochs=1, verbose=0)
    assert all(not np.allclose(b, keras.ops.convert_to_numpy(v)) for b, v in zip(before, (layer.codebook, layer.shared_basis)))


@pytest.mark.parametrize("task_dim, sharing", [(4, "columns"), (None, "columns"), (None, "hard")])
def test_the_report_is_the_bound_of_the_scored_model(data, task_dim, sharing):
    dataset, train, test = data
    report = certify(trained(dataset, train, task_dim, sharing), train, test, levels=4, epochs=1)
    bits = report["bits"]
    assert bits["choice"] == 0  # nothing searched: nothing to name
    assert bits["total"] == bits["header"] + bits["payload"] and bits["entropy"] <= bits["payload"] <= bits["entropy"] + 2
    assert report["n"] == 180 and all(t["train_examples"] == 60 and t["test_examples"] == 30 for t in report["tasks"].values())
    mean = np.mean([t["train_error"] for t in report["tasks"].values()])
    assert report["train_error"] == pytest.approx(mean)  # equal task sizes: the plain average
    assert report["bound"] == pytest.approx(occam_bound(report["train_error"], bits["total"], 180, 0.05))
    assert report["train_error"] <= report["bound"] <= 1.0
    assert ("single_task" in report) == (task_dim is None and sharing == "columns")
    # Every coded symbol is charged once: to Q (or the one network's w), or to its task.
    task_bits = sum(t["bits"] for t in report["tasks"].values())
    assert bits["shared_basis"] + task_bits == pytest.approx(bits["entropy"], rel=1e-9)
    if sharing == "hard":
        assert task_bits == 0 and report["free_parameters"]["shared"] == 40
    if "single_task" in report:
        for name, single in report["single_task"].items():
            e = report["tasks"][name]["train_error"]
            assert single["bound"] == pytest.approx(occam_bound(e, single["bits"], 60, 0.05 / 3))


@pytest.mark.parametrize("sharing", ["columns", "hard"])
def test_a_search_over_configurations_is_paid_for_in_bits(data, sharing):
    dataset, train, _ = data
    task_dim = None  # columns without Q: the single-task bounds pay for the choice too
    model = trained(dataset, train, task_dim, sharing)
    once = certify(model, train, levels=4, epochs=1)
    searched = certify(model, train, levels=4, epochs=1, searched=17)
    # The same quantised model, seed and errors; only the message grows, by ceil(log2 17) = 5 bits.
    assert searched["train_error"] == once["train_error"] and searched["bits"]["payload"] == once["bits"]["payload"]
    assert searched["bits"]["choice"] == 5 and searched["bits"]["total"] == once["bits"]["total"] + 5
    assert searched["bound"] == pytest.approx(occam_bound(once["train_error"], once["bits"]["total"] + 5, 180, 0.05))
    assert searched["bound"] > once["bound"]
    if sharing == "columns":
        for name, single in searched["single_task"].items():
            assert single["bits"] == once["single_task"][name]["bits"] + 5
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match=re.escape(f"certify: searched must be a positive integer, got {bad!r}.")):
            certify(model, train, levels=4, epochs=0, searched=bad)


def test_regression_tasks_have_no_error_bound():
    keras.utils.set_random_seed(0)
    model = mtlzoo.create_model("subspace", [mtlzoo.Task("y", "regression")], {"x": (3,)}, units=(4,), intrinsic_dim=5)
    data = mtlzoo.data.MultiTaskArrays({"x": np.zeros((4, 3), "float32")}, {"y": np.zeros((4, 1), "float32")},
                                       {"y": np.ones(4, "float32")})
    with pytest.raises(ValueError, match="task 'y' is regression; a 0-1 error bound needs classification or binary"):
        task_errors(model, data)


def test_the_bound_command_codes_a_subspace_run_and_refuses_others(tmp_path):
    import json

    from conftest import cli_here
    from helpers import small_recipe_dict, write_recipe

    raw = {"name": "tiny-subspace", "architecture": {"name": "subspace", "params": {"units": [8], "intrinsic_dim": 30,
                                                                                     "task_dim": 3}},
           "data": {"name": "permuted_mnist", "num_tasks": 2, "examples_per_task": 40, "heldout_per_task": 20},
           "tasks": "all", "training": {"epochs": 2, "batch_size": 40, "learning_rate": 0.01}}
    recipe = write_recipe(tmp_path / "subspace.yaml", raw)
    assert cli_here("train", recipe, "--out", tmp_path / "run", "--verbose", "0").returncode == 0
    proc = cli_here("bound", tmp_path / "run", "--levels", "4", "--epochs", "1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "run" / "bound.json").read_text())
    assert report["n"] == 80 and report["split"] == "test" and report["levels"] == 4
    assert f"bound {report['bound']:.4f}, test error {report['test_error']:.4f}" in proc.stdout
    assert "shared basis Q" in proc.stdout and "task_01" in proc.stdout
    assert "configuration (of those tried)" not in proc.stdout
    searched = cli_here("bound", tmp_path / "run", "--levels", "4", "--epochs", "1", "--searched", "8",
                        "--out", tmp_path / "searched.json")
    assert searched.returncode == 0, searched.stderr
    after_search = json.loads((tmp_path / "searched.json").read_text())
    assert after_search["bits"]["total"] == report["bits"]["total"] + 3
    assert after_search["bound"] == pytest.approx(occam_bound(after_search["train_error"], report["bits"]["total"] + 3,
                                                              80, 0.05))
    assert re.search(r"^configuration \(of those tried\) +3$", searched.stdout, re.MULTILINE)
    bad = cli_here("bound", tmp_path / "run", "--delta", "1.5")
    assert bad.returncode == 2 and "--delta: expected a number strictly between 0 and 1, got 1.5" in bad.stderr
    plain = write_recipe(tmp_path / "plain.yaml", small_recipe_dict(epochs=1, tasks=("task_00",)))
    assert cli_here("train", plain, "--out", tmp_path / "plain", "--verbose", "0").returncode == 0
    refused = cli_here("bound", tmp_path / "plain")
    assert refused.returncode == 2
    assert "holds a hard_sharing model; `mtlzoo bound` needs a model of the subspace" in refused.stderr
