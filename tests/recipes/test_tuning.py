"""keras-tuner search over a recipe: architecture, parameters, loss weights, weighting, learning rate."""

import keras_tuner
import pytest
import yaml

from conftest import cli
from helpers import small_recipe_dict, write_recipe
from mtlzoo.recipes.config import load_recipe, recipe_from_dict
from mtlzoo.recipes.tuning import choose, tune

SPACE = {
    "architecture": ["hard_sharing", "cross_stitch"],
    "learning_rate": {"min": 0.001, "max": 0.1, "sampling": "log"},
    "params": {"shared_units": [[3], [8]], "units": [[3], [8]], "activation": ["linear"]},
    "loss_weights": {"task_00": {"min": 0.5, "max": 2.0}},
    "weighting": ["unitary", {"name": "pcgrad", "seed": 2}],
}


def tuning_recipe(**tuning):
    raw = small_recipe_dict(epochs=2)
    raw["tuning"] = {"space": SPACE, "max_trials": 3, "seed": 1,
                     "objective": [{"name": "val_task_00_rmse", "direction": "min"},
                                   {"name": "val_task_10_rmse", "direction": "min"}], **tuning}
    return raw


def test_choose_draws_every_setting_and_keeps_only_accepted_params():
    recipe = recipe_from_dict(tuning_recipe(), source="test")
    hp = keras_tuner.HyperParameters()
    hp.Fixed("architecture", 1)  # cross_stitch
    hp.Fixed("weighting", 1)
    chosen = choose(recipe, SPACE, hp)
    assert chosen.architecture == "cross_stitch"
    assert chosen.training.weighting == {"name": "pcgrad", "seed": 2}
    assert "shared_units" not in chosen.params and chosen.params["units"] == [3]  # the first choice
    assert 0.001 <= chosen.training.learning_rate <= 0.1
    assert 0.5 <= next(t.weight for t in chosen.tasks if t.name == "task_00") <= 2.0
    with pytest.raises(ValueError, match=r"tuning.space: unknown key\(s\) \['epochs'\]"):
        choose(recipe, {"epochs": [1, 2]}, keras_tuner.HyperParameters())
    with pytest.raises(ValueError, match="loss_weights names unknown task 'nope'"):
        choose(recipe, {"loss_weights": {"nope": [1.0]}}, keras_tuner.HyperParameters())


@pytest.mark.slow
def test_tune_cli_searches_per_task_objectives_and_writes_the_best_recipe(tmp_path):
    config = write_recipe(tmp_path / "recipe.yaml", tuning_recipe())
    proc = cli("tune", config, "--out", tmp_path / "best.yaml", "--trials-dir", tmp_path / "trials", "--verbose", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best of 3 trials" in proc.stdout
    best = load_recipe(tmp_path / "best.yaml")
    assert best.architecture in ("hard_sharing", "cross_stitch") and not best.tuning
    assert "tuning" not in yaml.safe_load((tmp_path / "best.yaml").read_text())
    # The written recipe is the best trial's: retuning from its folder reports the same score.
    _, tuner = tune(recipe_from_dict(tuning_recipe(), source="test"), tmp_path / "trials")
    trials = tuner.oracle.trials.values()
    assert len(trials) == 3
    best_trial = tuner.oracle.get_best_trials(1)[0]
    assert best_trial.score == min(t.score for t in trials)
    values = best_trial.hyperparameters.values
    assert best.architecture == SPACE["architecture"][values["architecture"]]
    assert best.training.learning_rate == pytest.approx(values["learning_rate"])
    assert best.training.weighting == SPACE["weighting"][values["weighting"]]
    missing = cli("tune", write_recipe(tmp_path / "plain.yaml", small_recipe_dict()), "--out", tmp_path / "x.yaml")
    assert missing.returncode == 2 and "has no tuning section" in missing.stderr
