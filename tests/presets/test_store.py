"""Pretrained presets: the format, its model card, and loading by name, directory, URL and gfile."""

import functools
import hashlib
import http.server
import json
import tarfile
import threading

import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
from conftest import REPO, cli
from helpers import small_recipe
from mtlzoo import presets
from mtlzoo.training import trainer

X = np.random.default_rng(0).normal(size=(4, 20)).astype("float32")


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    root = tmp_path_factory.mktemp("preset")
    trainer.train(small_recipe(epochs=2), root / "run", verbose=0)
    return mtlzoo.save_preset(root / "run", root / "kang_small")


def measure_shipped_presets(run_python) -> dict:
    """``{preset: its metrics on its card's data}``, measured in a fresh process from ``$MTLZOO_DATA_DIR``."""
    proc = run_python("""
        import json, mtlzoo
        from mtlzoo.data import load_dataset
        out = {}
        for name, card in mtlzoo.list_pretrained().items():
            model = mtlzoo.load(name)
            data = load_dataset(card["dataset"], **card["data_options"]).load(card["split"])
            out[name] = mtlzoo.evaluate(model, data.select([t.name for t in model.tasks]))
        print(json.dumps(out))
        """)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a fresh process loading every preset (19 s); .ci/run runs the slow set
def test_shipped_presets_match_their_cards_on_the_fixtures_in_a_fresh_process(run_python, data_dir):
    shipped = mtlzoo.list_pretrained()
    assert "kang_muir" in shipped
    measured = measure_shipped_presets(run_python)
    assert sorted(measured) == sorted(shipped)
    for name, card in shipped.items():
        assert sorted(measured[name]) == sorted(card["metrics"])
        for task, metrics in card["metrics"].items():
            # Generated data, or fixtures holding the whole file: the card's exact numbers.
            if card["dataset"] in ("kang_synthetic", "tumour_survival"):
                for metric, value in metrics.items():
                    assert measured[name][task][metric] == pytest.approx(value, abs=0.005), (name, task, metric)
            else:  # 200 of the card's 10000 test canvases: its accuracy up to sampling error (sd ~0.012)
                assert card["dataset"] == "multi_mnist" and measured[name][task]["examples"] == 200, (name, task)
                assert measured[name][task]["accuracy"] >= metrics["accuracy"] - 0.05, (name, task, measured[name])


@pytest.mark.full_data
def test_shipped_presets_reproduce_their_cards_in_a_fresh_process(run_python, full_data_dir):
    shipped = mtlzoo.list_pretrained()
    assert "kang_muir" in shipped
    measured = measure_shipped_presets(run_python)
    for name, card in shipped.items():
        assert sorted(measured[name]) == sorted(card["metrics"])
        for task, metrics in card["metrics"].items():
            for metric, value in metrics.items():
                assert measured[name][task][metric] == pytest.approx(value, abs=0.005), (name, task, metric)


def test_a_preset_holds_config_weights_and_a_model_card(preset):
    assert sorted(p.name for p in preset.iterdir()) == ["config.json", "metadata.json", "model.weights.h5"]
    card = presets.read_card(preset)
    assert card["recipe"]["architecture"]["name"] == "hard_sharing" and card["dataset"] == "kang_synthetic"
    assert card["split"] == "test" and sorted(card["metrics"]) == ["task_00", "task_01", "task_10", "task_20"]
    assert "architecture:" in card["recipe_yaml"] and card["parameters"] > 0
    assert card["versions"]["keras"] and card["training"]["seconds"] > 0
    assert card["weights_sha256"] == hashlib.sha256((preset / "model.weights.h5").read_bytes()).hexdigest()
    model = mtlzoo.load(preset)
    _, trained = mtlzoo.load_run(preset.parent / "run")
    for task, value in trained.predict({"features": X}, verbose=0).items():
        np.testing.assert_array_equal(model.predict({"features": X}, verbose=0)[task], value)
    assert [t.kind for t in model.tasks] == ["regression"] * 4
    with pytest.raises(FileExistsError):
        mtlzoo.save_preset(preset.parent / "run", preset)


def test_keras_hub_style_preset_api(preset, tmp_path):
    assert sorted(mtlzoo.MultiTaskModel.presets) == sorted(mtlzoo.list_pretrained())
    loaded = mtlzoo.MultiTaskModel.from_preset(preset)
    expected = mtlzoo.load(preset).predict({"features": X}, verbose=0)
    # A model fine-tuned in a notebook (no run directory) saves to a preset and loads back alike.
    loaded.save_to_preset(tmp_path / "mine")
    card = presets.read_card(tmp_path / "mine")
    assert card["parameters"] == loaded.count_params() and card["versions"]["keras"]
    again = mtlzoo.MultiTaskModel.from_preset(tmp_path / "mine", compile=True)
    for task, value in again.predict({"features": X}, verbose=0).items():
        np.testing.assert_array_equal(value, expected[task])
    assert again.compiled and [t.name for t in again.tasks] == [t.name for t in loaded.tasks]
    with pytest.raises(FileExistsError):
        loaded.save_to_preset(tmp_path / "mine")
    assert mtlzoo.list_architectures("hard*") == mtlzoo.list_models("hard*") == ["hard_sharing"]


def test_corrupt_or_incomplete_presets_are_clear_errors(preset, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "metadata.json"):
        (broken / name).write_bytes((preset / name).read_bytes())
    with pytest.raises(mtlzoo.PresetError, match=r"is not a preset: it lacks \['model.weights.h5'\]"):
        mtlzoo.load(broken)
    weights = bytearray((preset / "model.weights.h5").read_bytes())
    weights[-100] ^= 0xFF
    (broken / "model.weights.h5").write_bytes(bytes(weights))
    with pytest.raises(mtlzoo.PresetError, match="does not match its model card"):
        mtlzoo.load(broken)
    with pytest.raises(mtlzoo.PresetError, match=r"No preset 'no_such_model': not a built-in name \(\['kang_muir'"):
        mtlzoo.load("no_such_model")


def serve(directory):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_an_https_style_url_is_downloaded_once_verified_and_cached(preset, tmp_path, monkeypatch):
    monkeypatch.setenv("MTLZOO_CACHE", str(tmp_path / "cache"))
    site = tmp_path / "site"
    site.mkdir()
    with tarfile.open(site / "kang_small.tar.gz", "w:gz") as tar:
        tar.add(preset, arcname="kang_small")
    digest = hashlib.sha256((site / "kang_small.tar.gz").read_bytes()).hexdigest()
    server = serve(site)
    url = f"http://127.0.0.1:{server.server_port}/kang_small.tar.gz"
    try:
        with pytest.raises(mtlzoo.PresetError, match="must end in #sha256="):
            mtlzoo.load(url)
        with pytest.raises(mtlzoo.PresetError, match=f"has sha256 {digest}, not the {'0' * 64}"):
            mtlzoo.load(f"{url}#sha256={'0' * 64}")
        # The failed download left nothing in the cache that a later load could take for a preset.
        assert [p.name for p in (tmp_path / "cache" / "presets").iterdir()] == []
        model = mtlzoo.load(f"{url}#sha256={digest}")
    finally:
        server.shutdown()
    cached = tmp_path / "cache" / "presets" / digest
    assert sorted(p.name for p in cached.iterdir()) == ["config.json", "metadata.json", "model.weights.h5"]
    again = mtlzoo.load(f"{url}#sha256={digest}")  # the server is gone: served from the cache
    np.testing.assert_array_equal(again.predict({"features": X}, verbose=0)["task_00"],
                                  model.predict({"features": X}, verbose=0)["task_00"])


def test_a_gfile_path_loads(preset, tmp_path, monkeypatch):
    monkeypatch.setenv("MTLZOO_CACHE", str(tmp_path / "cache"))
    tf.io.gfile.makedirs("ram://zoo/kang_small")
    for path in preset.iterdir():
        tf.io.gfile.copy(str(path), f"ram://zoo/kang_small/{path.name}", overwrite=True)
    model = mtlzoo.load("ram://zoo/kang_small")
    assert [t.name for t in model.tasks] == ["task_00", "task_01", "task_10", "task_20"]
    with pytest.raises(mtlzoo.PresetError, match="No preset directory at 'ram://zoo/none'"):
        mtlzoo.load("ram://zoo/none")


@pytest.mark.slow
def test_cli_lists_and_saves_presets(preset, tmp_path):
    listed = cli("list", "--pretrained")
    assert listed.returncode == 0, listed.stderr
    assert "kang_muir" in listed.stdout and "muir on kang_synthetic/test" in listed.stdout
    saved = cli("preset", preset.parent / "run", tmp_path / "again")
    assert saved.returncode == 0, saved.stderr
    assert presets.read_card(tmp_path / "again")["metrics"] == presets.read_card(preset)["metrics"]
    bad = cli("preset", tmp_path / "no_run", tmp_path / "x")
    assert bad.returncode == 2 and "holds no trained model" in bad.stderr


@pytest.mark.slow
def test_cli_finetunes_a_preset_on_a_recipe(preset, tmp_path):
    from helpers import small_recipe_dict, write_recipe

    recipe = write_recipe(tmp_path / "recipe.yaml", small_recipe_dict(epochs=2, tasks=("task_00", "task_05")))
    tuned = cli("finetune", preset, recipe, "--out", tmp_path / "run", "--freeze", "shared_*", "--verbose", "0")
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    _, model = mtlzoo.load_run(tmp_path / "run")
    assert [t.name for t in model.tasks] == ["task_00", "task_05"]  # task_05 new; task_01/10/20 dropped
    original = mtlzoo.load(preset)
    for name in ("shared_dense_0", "task_00"):  # the frozen trunk, and task_00's head, trained on
        same = [np.array_equal(a, b) for a, b in zip(model.get_layer(name).get_weights(),
                                                     original.get_layer(name).get_weights())]
        assert all(same) == (name == "shared_dense_0"), name
    bad = cli("finetune", "no_such_preset", recipe, "--out", tmp_path / "x")
    assert bad.returncode == 2 and "No preset 'no_such_preset'" in bad.stderr


def test_the_readme_preset_table_matches_the_cards():
    readme = (REPO / "README.md").read_text()
    table = readme.split("<!-- presets:begin -->\n", 1)[1].split("<!-- presets:end -->", 1)[0]
    assert table == presets.zoo_table(), "README preset table drifted: run python -m mtlzoo.presets README.md"
    assert table.count("\n| `") == len(mtlzoo.list_pretrained())


def test_the_card_gives_delta_m_against_single_task_baselines(preset, tmp_path):
    card = presets.read_card(preset)
    assert card["delta_m"] is None  # no baselines given
    baselines = {task: {"rmse": 2 * scores["rmse"], "mae": scores["mae"]} for task, scores in card["metrics"].items()}
    again = presets.read_card(mtlzoo.save_preset(preset.parent / "run", tmp_path / "with_baselines",
                                                 baselines={"source": "test", "metrics": baselines}))
    # rmse halved against the baselines (+50 %), mae unchanged (0 %): the mean is +25 %.
    assert again["delta_m"]["percent"] == pytest.approx(25.0, abs=1e-6)
    assert again["delta_m"]["metrics"] == ["mae", "rmse"] and again["delta_m"]["source"] == "test"
