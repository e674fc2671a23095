import keras
import numpy as np
import pytest

import mtlzoo
from mtlzoo.architectures import registry
from mtlzoo.tasks import Task

TASKS = [Task("left", "classification", num_classes=10), Task("right", "regression", units=2)]


def test_list_models_with_pattern():
    assert "hard_sharing" in mtlzoo.list_models()
    assert mtlzoo.list_models("hard*") == ["hard_sharing"]
    assert mtlzoo.list_models("nothing*") == []


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown architecture 'hard_shring'.*hard_sharing"):
        mtlzoo.create_model("hard_shring", TASKS, {"features": (4,)})


def test_unknown_parameter_lists_the_accepted_ones():
    with pytest.raises(ValueError, match=r"does not take parameter\(s\) \['widths'\].*shared_units"):
        mtlzoo.create_model("hard_sharing", TASKS, {"features": (4,)}, widths=[3])


@pytest.mark.parametrize("inputs", [{}, {"features": (0,)}, {"features": "20"}, {"bad name": (3,)}])
def test_bad_inputs_are_rejected(inputs):
    with pytest.raises(ValueError, match="input|Input"):
        mtlzoo.create_model("hard_sharing", TASKS, inputs)


def test_models_have_named_inputs_and_dict_outputs_keyed_by_task():
    model = mtlzoo.create_model("hard_sharing", TASKS, {"features": (6,)})
    assert isinstance(model, keras.Model) and isinstance(model, mtlzoo.MultiTaskModel)
    assert [t.name for t in model.inputs] == ["features"]
    assert isinstance(model.output, dict) and list(model.output) == ["left", "right"]
    out = model.predict({"features": np.zeros((3, 6), "float32")}, verbose=0)
    assert set(out) == {"left", "right"}
    assert out["left"].shape == (3, 10) and out["right"].shape == (3, 2)


def test_hard_sharing_depth_and_widths_are_parameters():
    model = mtlzoo.create_model(
        "hard_sharing", TASKS, {"features": (6,)}, shared_units=[16, 8, 4], head_units=[5]
    )
    shared = [l for l in model.layers if l.name.startswith("shared_dense_")]
    assert [l.units for l in shared] == [16, 8, 4]
    # Each head: one hidden layer of 5, then the output layer named after the task.
    assert model.get_layer("left_head_dense_0").units == 5
    assert model.get_layer("left").units == 10 and model.get_layer("right").units == 2
    # Both heads read the same shared representation.
    assert model.get_layer("left_head_dense_0").input is model.get_layer("right_head_dense_0").input


def test_backbone_chosen_by_input_rank_or_by_parameter():
    image = mtlzoo.create_model("hard_sharing", TASKS, {"image": (28, 28, 1)}, filters=[4, 8], shared_units=[16])
    convs = [l for l in image.layers if isinstance(l, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [4, 8]
    gray = mtlzoo.create_model("hard_sharing", TASKS, {"image": (12, 12)}, filters=[4])
    assert any(isinstance(l, keras.layers.Conv2D) for l in gray.layers)
    vector = mtlzoo.create_model("hard_sharing", TASKS, {"features": (6,)})
    assert not any(isinstance(l, keras.layers.Conv2D) for l in vector.layers)
    flat = mtlzoo.create_model("hard_sharing", TASKS, {"image": (8, 8, 1)}, backbone="cnn")
    assert any(isinstance(l, keras.layers.Conv2D) for l in flat.layers)
    with pytest.raises(ValueError, match="mlp backbone needs vector inputs"):
        mtlzoo.create_model("hard_sharing", TASKS, {"image": (8, 8, 1)}, backbone="mlp")
    with pytest.raises(ValueError, match="Unknown backbone"):
        mtlzoo.create_model("hard_sharing", TASKS, {"features": (6,)}, backbone="resnet9000")


def test_several_vector_inputs_are_concatenated():
    model = mtlzoo.create_model("hard_sharing", TASKS, {"a": (3,), "b": (5,)}, shared_units=[4])
    assert model.get_layer("shared_dense_0").kernel.shape == (8, 4)
    with pytest.raises(ValueError, match="several vector inputs"):
        mtlzoo.create_model("hard_sharing", TASKS, {"a": (3,), "img": (8, 8, 1)})


def test_register_a_user_architecture():
    @mtlzoo.register_architecture("test_linear_heads")
    def linear_heads(inputs, tasks, scale: float = 1.0):
        """One linear layer per task on the raw input."""
        x = keras.layers.Rescaling(scale)(inputs["features"])
        return {t.name: keras.layers.Dense(t.output_size, name=t.name)(x) for t in tasks}

    try:
        assert "test_linear_heads" in mtlzoo.list_models("test_*")
        model = mtlzoo.create_model("test_linear_heads", TASKS, {"features": (4,)}, scale=2.0)
        assert isinstance(model, mtlzoo.MultiTaskModel)
        assert registry.get_architecture("test_linear_heads").description.startswith("One linear layer")
        with pytest.raises(ValueError, match="already registered"):
            mtlzoo.register_architecture("test_linear_heads")(lambda inputs, tasks: {})
    finally:
        registry._ARCHITECTURES.pop("test_linear_heads", None)


def test_builders_must_return_one_output_per_task():
    @mtlzoo.register_architecture("test_broken")
    def broken(inputs, tasks):
        return {"left": keras.layers.Dense(10)(inputs["features"])}

    try:
        with pytest.raises(TypeError, match="dict keyed by the task names"):
            mtlzoo.create_model("test_broken", TASKS, {"features": (4,)})
    finally:
        registry._ARCHITECTURES.pop("test_broken", None)
    with pytest.raises(TypeError, match="must take parameters"):
        mtlzoo.register_architecture("test_no_tasks")(lambda inputs: {})


def test_output_width_must_match_the_task():
    x = keras.Input((4,), name="features")
    with pytest.raises(ValueError, match="needs 10"):
        mtlzoo.MultiTaskModel(
            inputs={"features": x},
            outputs={"left": keras.layers.Dense(3)(x), "right": keras.layers.Dense(2)(x)},
            tasks=TASKS,
        )
