import copy
from pathlib import Path

import pytest
import yaml

import mtlzoo
from mtlzoo.recipes.config import ConfigError, dump_recipe, load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "zoo_configs").glob("*.yaml"))
BASE = yaml.safe_load((REPO / "zoo_configs" / "kang_hard_sharing.yaml").read_text())


def write(tmp_path, raw) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def edited(**changes):
    """The default recipe with dotted keys set (value None deletes the key)."""
    raw = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return raw


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_zoo_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.architecture in mtlzoo.list_models()
    assert recipe.tasks


def test_default_recipe_resolves_all_dataset_tasks():
    recipe = load_recipe(REPO / "zoo_configs" / "kang_hard_sharing.yaml")
    assert [t.name for t in recipe.tasks] == [f"task_{i:02d}" for i in range(30)]
    assert all(t.kind == "regression" for t in recipe.tasks)
    assert recipe.params["shared_units"] == [3]
    assert recipe.training.learning_rate == 0.05
    assert recipe.export_name == "kang_hard_sharing"


def test_dumped_recipe_loads_back_equal(tmp_path):
    raw = edited(tasks=["task_03", {"name": "task_07", "weight": 2.5}])
    recipe = load_recipe(write(tmp_path, raw))
    dump_recipe(recipe, tmp_path / "again.yaml")
    again = load_recipe(tmp_path / "again.yaml")
    assert again.to_dict() == recipe.to_dict()
    assert [(t.name, t.weight) for t in again.tasks] == [("task_03", 1.0), ("task_07", 2.5)]


@pytest.mark.parametrize(
    "changes, key, expected",
    [
        (dict(trainig={}), "trainig", r"unknown key \(did you mean 'training'\?\)"),
        (dict(training__epochs="ten"), "training.epochs", r"expected a positive integer, got 'ten' \(str\)"),
        (dict(training__epochs=0), "training.epochs", "positive integer"),
        (dict(training__learning_rate=True), "training.learning_rate", "positive number"),
        (dict(training__strategy="tpu_pod"), "training.strategy", "one of"),
        (dict(training__optimiser="adam"), "training.optimiser", "did you mean 'optimizer'"),
        (dict(training__validation_split="dev"), "training.validation_split", "has splits"),
        (dict(architecture__name="hard_shared"), "architecture.name", "unknown architecture 'hard_shared'"),
        (dict(architecture__params__widths=[3]), "architecture.params.widths", "accepts.*shared_units"),
        (dict(architecture__params__shared_units="3"), "architecture.params.shared_units", "expected a list"),
        (dict(architecture__params__shared_units=[3, -1]), "architecture.params.shared_units", "positive integers"),
        (dict(architecture__params__dropout="0.1"), "architecture.params.dropout", "expected a finite number"),
        (dict(architecture=None), "architecture", "required key is missing"),
        (dict(data__name="imagenet"), "data.name", "unknown dataset 'imagenet'"),
        (dict(data__noise=True), "data.noise", "no such parameter.*noisy"),
        (dict(data__seed="0"), "data.seed", "expected an integer"),
        (dict(data__source="web"), "data", "source='web' is invalid"),
        (dict(tasks=["task_99"]), "tasks[0].name", "provides no task 'task_99'"),
        (dict(tasks=["task_01", "task_01"]), "tasks[1].name", "listed twice"),
        (dict(tasks=[{"name": "task_01", "kind": "binary"}]), "tasks[0].kind", "unknown key"),
        (dict(tasks=[{"name": "task_01", "weight": -1}]), "tasks[0].weight", "number >= 0"),
        (dict(tasks="some"), "tasks", "expected 'all' or a non-empty list"),
        (dict(evaluation__split="holdout"), "evaluation.split", "has splits"),
        (dict(export__path="x"), "export.path", "unknown key"),
        (dict(name=""), "name", "non-empty"),
        (dict(training__weighting="pcgradd"), "training.weighting", r"did you mean 'pcgrad'.*registered: \[.*'pcgrad'"),
        (dict(training__weighting=7), "training.weighting", "expected a weighting name"),
        (dict(training__weighting={"weights": [1]}), "training.weighting", "needs a 'name' key.*'pcgrad'"),
        (dict(training__weighting={"name": "static", "weights": {"task_99": 2.0}}), "training.weighting",
         r"unknown task\(s\) \['task_99'\].*registered weightings: \[.*'pcgrad'"),
        (dict(training__weighting={"name": "pcgrad", "alpha": 1}), "training.weighting", "alpha.*'pcgrad'"),
        (dict(training__weighting=["pcgrad", "uncertainty"]), "training.weighting", "must come last"),
        (dict(training__weighting="mgda", training__precision="mixed_float16"), "training.weighting",
         "loss scaling"),
        (dict(training__weight_decay=-0.1), "training.weight_decay", "a finite number >= 0"),
        (dict(training__weight_decay="1e-4"), "training.weight_decay", "a finite number >= 0"),
        (dict(training__early_stopping=5), "training.early_stopping", "null or a mapping"),
        (dict(training__early_stopping={"patients": 3}), "training.early_stopping.patients",
         r"did you mean 'patience'.*expected one of \['min_delta', 'mode', 'monitor', 'patience', "
         r"'restore_best_weights', 'start_from_epoch'\]"),
        (dict(training__early_stopping={"patience": 0}), "training.early_stopping.patience", "integer >= 1"),
        (dict(training__early_stopping={"start_from_epoch": -1}), "training.early_stopping.start_from_epoch",
         "integer >= 0"),
        (dict(training__early_stopping={"min_delta": -1}), "training.early_stopping.min_delta", "number >= 0"),
        (dict(training__early_stopping={"restore_best_weights": "yes"}),
         "training.early_stopping.restore_best_weights", "true or false"),
        (dict(training__early_stopping={"mode": "up"}), "training.early_stopping.mode", "one of"),
        (dict(training__early_stopping={"monitor": "mean_val_accuracy"}), "training.early_stopping.monitor",
         r"task means are \['mean_val_loss', 'mean_val_mae', 'mean_val_rmse'\]"),
        (dict(training__early_stopping={"monitor": "val_los"}), "training.early_stopping.monitor",
         r"did you mean 'val_loss'.*set mode to 'min' or 'max'"),
    ],
)
def test_bad_recipes_give_one_clear_error(tmp_path, changes, key, expected):
    path = write(tmp_path, edited(**changes))
    with pytest.raises(ConfigError, match=expected) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert info.value.key == key


def test_missing_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"line 2, column 1: invalid YAML: found character '\\t'"):
        load_recipe(write(tmp_path, "name: x\n\tarchitecture: hard_sharing\n"))
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_recipe(write(tmp_path, "- just\n- a list\n"))


def test_recipe_from_dict_names_its_source():
    with pytest.raises(ConfigError, match=r"^<dict>: architecture: required key is missing"):
        recipe_from_dict({"name": "x", "data": {"name": "kang_synthetic"}})


def test_weighting_and_regularisation_round_trip(tmp_path):
    raw = edited(
        training__weighting=[{"name": "static", "weights": {"task_00": 2.0}}, {"name": "pcgrad", "seed": 3}],
        training__weight_decay=1e-4,
        training__early_stopping={"patience": 2, "monitor": "mean_val_mae"},
    )
    recipe = load_recipe(write(tmp_path, raw))
    training = recipe.training
    assert training.weighting == raw["training"]["weighting"]  # kept as written
    assert training.weight_decay == 1e-4
    # Early stopping is stored with its defaults filled in.
    assert training.early_stopping == {
        "monitor": "mean_val_mae", "patience": 2, "min_delta": 0.0, "restore_best_weights": True, "mode": "auto",
        "start_from_epoch": 0,
    }
    dump_recipe(recipe, tmp_path / "again.yaml")
    again = load_recipe(tmp_path / "again.yaml")
    assert again.to_dict() == recipe.to_dict() and again.training == training
    assert yaml.safe_load((tmp_path / "again.yaml").read_text())["training"]["weight_decay"] == 1e-4


def test_weighting_and_regularisation_defaults():
    training = load_recipe(REPO / "zoo_configs" / "kang_hard_sharing.yaml").training
    assert (training.weighting, training.weight_decay, training.early_stopping) == ("unitary", 0.0, None)
    for spec in ("uncertainty", {"name": "cagrad", "c": 0.4}, ["dwa", "pcgrad"], None):
        assert recipe_from_dict(edited(training__weighting=spec)).training.weighting == (spec or "unitary")
    # A monitor the recipe cannot predict is accepted with an explicit mode (checked when training).
    options = recipe_from_dict(edited(training__early_stopping={"monitor": "custom", "mode": "max"})).training
    assert options.early_stopping["monitor"] == "custom"
