"""The README's examples run, and its architecture section names every module."""

import re

import numpy as np
import pytest
import yaml

import mtlzoo
from conftest import REPO

README = (REPO / "README.md").read_text()


def code_block(heading: str, language: str) -> str:
    section = README.split(f"## {heading}", 1)[1]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def test_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.random((32, 28, 28, 1)).astype("float32")
    digits = rng.integers(0, 10, 32)
    namespace = {
        "x": x,
        "y_digit": digits,
        "y_even": (digits % 2 == 0).astype("float32")[:, None],
        "y_ink": x.mean(axis=(1, 2)),
    }
    source = code_block("The API in ten lines", "python").replace("epochs=5", "epochs=1, verbose=0")
    assert len(source.strip().splitlines()) <= 12
    exec(compile(source, "README.md", "exec"), namespace)
    assert (tmp_path / "model.keras").is_file()
    assert (tmp_path / "export" / "models" / "digits" / "1" / "saved_model.pb").is_file()


def test_recipe_example_is_valid():
    recipe = mtlzoo.recipe_from_dict(yaml.safe_load(code_block("Recipes", "yaml")), source="README.md")
    assert recipe.architecture == "hard_sharing" and len(recipe.tasks) == 30


def test_architecture_section_names_every_module():
    tree = code_block("Architecture", "")
    named = set(re.findall(r"([a-z_]+\.py)", tree))
    sources = [*(REPO / "mtlzoo").rglob("*.py"), *(REPO / "mtlzoo_client").rglob("*.py")]
    actual = {p.name for p in sources if p.name not in ("__init__.py", "__main__.py")}
    assert actual <= named, f"modules missing from the README's architecture section: {sorted(actual - named)}"
    assert named - {"answer_request.py"} <= actual, f"README names modules that do not exist: {sorted(named - actual)}"


def test_sharing_schemes_example_runs():
    rng = np.random.default_rng(0)
    namespace = {"x": rng.random((8, 28, 28, 1)).astype("float32")}
    exec(compile(code_block("The API in ten lines", "python").split("model.fit")[0], "README.md", "exec"), namespace)
    exec(compile(code_block("Sharing schemes", "python"), "README.md", "exec"), namespace)
    assert namespace["stitch_alphas"](namespace["stitched"])["cross_stitch_dense_0"].shape == (3, 3, 32)
    gates = namespace["gate_weights"](namespace["experts"], {"image": namespace["x"]})
    assert sorted(gates) == ["digit", "ink", "is_even"] and gates["digit"].shape == (8, 3)
    np.testing.assert_allclose(gates["digit"].sum(axis=1), 1.0, atol=1e-5)
    assert isinstance(namespace["linear"].kernel_regularizer, mtlzoo.layers.regularizers.GroupLasso)


@pytest.mark.slow
def test_muir_example_runs():
    source = code_block("MUiR: one hypermodule bank", "python")
    short = source.replace("epochs=300", "epochs=3, verbose=0").replace("steps_per_epoch=100", "steps_per_epoch=5")
    short = short.replace("generations=100", "generations=2")
    assert short.count("epochs=3") == 1 and short.count("generations=2") == 1
    namespace = {}
    exec(compile(short, "README.md", "exec"), namespace)
    assert [h["generation"] for h in namespace["search"].history] == [1, 2]
    summary = namespace["muir"].sharing_summary(namespace["model"])
    assert summary["blocks"] == 30 and summary["hypermodules_in_use"] <= 30


def test_weighting_example_runs():
    rng = np.random.default_rng(0)
    x = rng.random((8, 28, 28, 1)).astype("float32")
    digits = rng.integers(0, 10, 8)
    namespace = {"x": x, "y_digit": digits, "y_even": (digits % 2 == 0).astype("float32")[:, None],
                 "y_ink": x.mean(axis=(1, 2))}
    exec(compile(code_block("The API in ten lines", "python").split("model.compile")[0], "README.md", "exec"),
         namespace)
    source = code_block("Combining the tasks", "python").replace("epochs=1", "epochs=1, verbose=0")
    exec(compile(source, "README.md", "exec"), namespace)
    model = namespace["model"]
    assert [m.method_name for m in model.weighting.methods] == ["uncertainty", "upgrad"]
    assert np.abs(model.weighting.methods[0].log_variance.numpy()).max() > 0


def test_subspace_example_runs(capsys):
    source = code_block("Subspace training: low intrinsic dimension, and bounds that say something", "python")
    small = (source.replace("num_tasks=10, examples_per_task=1000", "num_tasks=2, examples_per_task=30, heldout_per_task=20")
             .replace("units=[64], intrinsic_dim=800, task_dim=8", "units=[8], intrinsic_dim=40, task_dim=3")
             .replace("epochs=20", "epochs=1, verbose=0").replace("levels=16)", "levels=4, epochs=1)"))
    assert small.count("num_tasks=2") == 1 and "epochs=1, verbose=0" in small and "levels=4, epochs=1" in small
    exec(compile(small, "README.md", "exec"), {})
    assert "shared basis Q" in capsys.readouterr().out


@pytest.mark.slow  # long for the default run; .ci/run runs the slow set
def test_survival_and_segmentation_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    source = code_block("Survival and segmentation", "python")
    small = (source.replace('size=64, num_train=4096', 'size=16, num_train=24, num_validation=24, num_test=16')
             .replace("filters=8, dense_layers=2", "filters=4, dense_layers=1, levels=2")
             .replace("epochs=40", "epochs=1, verbose=0"))
    assert small.count("size=16") == 1 and small.count("levels=2") == 1 and "verbose=0" in small
    namespace = {}
    exec(compile(small, "README.md", "exec"), namespace)
    assert "c_index_low" in capsys.readouterr().out
    assert namespace["fused_risk"].shape == (16,) and np.isfinite(namespace["fused_risk"]).all()
    assert (tmp_path / "export" / "models" / "tumours" / "1" / "saved_model.pb").is_file()


def test_auxiliary_tasks_example_runs(tmp_path, monkeypatch, data_dir):
    monkeypatch.chdir(tmp_path)
    source = code_block("Auxiliary tasks", "python")
    source = source.replace('load_dataset("multi_fashion")', 'load_dataset("multi_fashion", max_examples=300)')
    source = source.replace("epochs=15", "epochs=1, verbose=0").replace("print(", "table = (")
    namespace = {}
    exec(compile(source, "README.md", "exec"), namespace)
    assert namespace["train"].weights["left"].sum() == 6  # 2 % of 300
    assert namespace["table"].index("left") < namespace["table"].index("auxiliary and adversarial") < \
        namespace["table"].index("image_rec")
    assert (tmp_path / "export" / "models" / "fashion_left" / "1" / "saved_model.pb").is_file()
