"""The Cox loss and the C-index against lifelines and scikit-survival, on tied, censored,
badly scaled and unlabelled data."""

import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index as lifelines_c_index
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import concordance_index_censored
from sksurv.util import Surv

from mtlzoo.segmentation import SoftDiceLoss
from mtlzoo.survival import (
    ConcordanceIndex,
    CoxPartialLikelihood,
    concordance_index,
    concordance_interval,
    cox_negative_log_likelihood,
)
from mtlzoo.tasks import Task


def survival_data(seed, n=300, tie_decimals=1):
    """Covariates, their true risk, and rounded (so tied) times with about 35 % censoring."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    eta = x @ np.array([0.8, -0.5, 0.3])
    event_time = rng.exponential(np.exp(-eta))
    censor_time = rng.exponential(1.5, n)
    time = np.round(np.minimum(event_time, censor_time), tie_decimals) + 0.1
    return x, eta, time, (event_time <= censor_time).astype("float64")


def loss(time, event, risk, ties="efron", weight=None):
    return float(cox_negative_log_likelihood(time, event, risk, weight, ties))


@pytest.mark.parametrize("seed", [0, 1])
def test_efron_likelihood_equals_lifelines_at_its_fit(seed):
    x, _, time, event = survival_data(seed)
    assert len(np.unique(time)) < len(time) / 3  # many ties
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(T=time, E=event)
    fitter = CoxPHFitter().fit(frame, "T", "E")
    risk = x @ fitter.params_.to_numpy()
    assert -loss(time, event, risk) * event.sum() == pytest.approx(fitter.log_likelihood_, rel=1e-6)


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_gradient_vanishes_at_scikit_survivals_estimate(ties):
    x, _, time, event = survival_data(2)
    coef = CoxPHSurvivalAnalysis(ties=ties).fit(x, Surv.from_arrays(event.astype(bool), time)).coef_
    beta = tf.Variable(coef.astype("float32"))
    with tf.GradientTape() as tape:
        value = cox_negative_log_likelihood(time, event, tf.linalg.matvec(tf.constant(x, tf.float32), beta), ties=ties)
    assert np.abs(tape.gradient(value, beta).numpy()).max() < 1e-5
    # Away from the estimate the gradient is not small: the check above can fail.
    beta.assign(tf.zeros(3))
    with tf.GradientTape() as tape:
        value = cox_negative_log_likelihood(time, event, tf.linalg.matvec(tf.constant(x, tf.float32), beta), ties=ties)
    assert np.abs(tape.gradient(value, beta).numpy()).max() > 0.05


def test_breslow_and_efron_agree_without_ties_and_differ_with_them():
    _, eta, time, event = survival_data(3, tie_decimals=9)
    assert len(np.unique(time)) == len(time)
    assert loss(time, event, eta, "breslow") == pytest.approx(loss(time, event, eta, "efron"), rel=1e-6)
    _, eta, time, event = survival_data(3, tie_decimals=0)
    assert loss(time, event, eta, "breslow") > loss(time, event, eta, "efron") + 1e-3


def test_an_exact_small_case():
    # Times 1, 1 (both events), 2 (censored), 3 (event); risks r.
    time, event, r = np.array([1.0, 1, 2, 3]), np.array([1.0, 1, 0, 1]), np.array([0.5, -0.2, 0.1, 0.3])
    e = np.exp(r)
    breslow = 2 * np.log(e.sum()) - r[0] - r[1] + np.log(e[3]) - r[3]
    efron = np.log(e.sum()) + np.log(e.sum() - 0.5 * (e[0] + e[1])) - r[0] - r[1] + np.log(e[3]) - r[3]
    assert loss(time, event, r, "breslow") == pytest.approx(breslow / 3, rel=1e-6)
    assert loss(time, event, r, "efron") == pytest.approx(efron / 3, rel=1e-6)


def test_no_events_gives_zero_and_badly_scaled_risks_stay_finite():
    assert loss([1.0, 2.0], [0.0, 0.0], [3.0, -1.0]) == 0.0
    _, eta, time, event = survival_data(4)
    # The partial likelihood does not change when every risk moves by the same amount.
    assert loss(time, event, eta + 1000.0) == pytest.approx(loss(time, event, eta), rel=1e-4)
    huge = loss(time, event, eta * 1e4)
    assert np.isfinite(huge) and huge > 100


def test_weight_zero_drops_an_example_from_the_risk_sets_too():
    _, eta, time, event = survival_data(5, n=120)
    keep = np.random.default_rng(0).random(120) < 0.6
    dropped = loss(time[keep], event[keep], eta[keep])
    assert loss(time, event, eta, weight=keep.astype("float32")) == pytest.approx(dropped, rel=1e-6)
    assert loss(time, event, eta) != pytest.approx(dropped, rel=1e-3)
    # The Loss object does the same with Keras sample weights (which Keras itself would apply
    # only to each example's own term).
    target = np.stack([time, event], 1)
    keras_value = float(CoxPartialLikelihood()(target, eta[:, None], keep.astype("float32")))
    assert keras_value == pytest.approx(dropped, rel=1e-6)


def test_unknown_ties_survival_losses_and_target_shapes_are_clear_errors():
    with pytest.raises(ValueError, match=r"\(examples, 2\) = \(time, event\).*got shape \(4, 1\)"):
        CoxPartialLikelihood()(np.ones((4, 1)), np.ones((4, 1)))
    with pytest.raises(ValueError, match=r"got shape \(4,\)"):
        ConcordanceIndex().update_state(np.ones(4), np.ones((4, 1)))
    with pytest.raises(ValueError, match="ties must be one of"):
        CoxPartialLikelihood(ties="exact")
    with pytest.raises(ValueError, match="unknown survival loss 'mse'"):
        Task("os", "survival", loss="mse")
    assert Task("os", "survival", loss="cox_breslow").make_loss().ties == "breslow"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_c_index_equals_lifelines_and_scikit_survival_with_ties_and_censoring(seed):
    rng = np.random.default_rng(seed)
    n = 400
    time = rng.integers(1, 25, n).astype("float64")  # heavily tied times
    event = (rng.random(n) < 0.55).astype("float64")
    risk = rng.integers(0, 10, n).astype("float64")  # tied risks count one half
    ours = concordance_index(time, event, risk)
    assert abs(ours - lifelines_c_index(time, -risk, event)) < 1e-9
    assert abs(ours - concordance_index_censored(event.astype(bool), time, risk)[0]) < 1e-9
    # The Keras metric, fed in uneven batches (smaller and larger than its block), accumulates
    # the whole set: after every batch it holds the C-index of everything seen so far.
    metric = ConcordanceIndex(capacity=1000, block=64)
    target = np.stack([time, event], 1).astype("float32")
    for start, stop in ((0, 37), (37, 200), (200, 263), (263, 400)):
        metric.update_state(target[start:stop], risk[start:stop, None].astype("float32"))
        seen = concordance_index(time[:stop], event[:stop], risk[:stop])
        assert abs(float(metric.result()) - seen) < 1e-9
    assert abs(float(metric.result()) - ours) < 1e-9
    batch_mean = np.mean([concordance_index(time[a:b], event[a:b], risk[a:b]) for a, b in ((0, 37), (37, 200), (200, 400))])
    assert abs(batch_mean - ours) > 1e-6  # a mean of batches would be a different number


def test_metric_weights_reset_and_overflow():
    time, event, risk = np.array([1.0, 2, 3, 4]), np.array([1.0, 1, 0, 1]), np.array([4.0, 1, 2, 3])
    target = np.stack([time, event], 1)
    metric = ConcordanceIndex(capacity=8, block=4)
    metric.update_state(target, risk[:, None], sample_weight=np.array([1.0, 0, 1, 1]))
    keep = [0, 2, 3]
    assert float(metric.result()) == pytest.approx(concordance_index(time[keep], event[keep], risk[keep]))
    metric.reset_state()
    assert np.isnan(float(metric.result()))  # no comparable pairs
    for _ in range(3):  # 12 examples do not fit in 8
        metric.update_state(target, risk[:, None])
    assert np.isnan(float(metric.result()))


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_data():
    _, eta, time, event = survival_data(6, n=200)
    estimate, low, high = concordance_interval(time, event, eta, resamples=400)
    assert estimate == pytest.approx(concordance_index(time, event, eta))
    assert low < estimate < high and 0.5 < low
    _, eta, time, event = survival_data(6, n=800)
    _, low_big, high_big = concordance_interval(time, event, eta, resamples=400)
    assert high_big - low_big < 0.75 * (high - low)
    # Against a direct bootstrap of a few resamples with the same seed's draws.
    rng = np.random.default_rng(0)
    draws = [rng.integers(0, 800, 800) for _ in range(3)]
    direct = [concordance_index(time[d], event[d], eta[d]) for d in draws]
    from mtlzoo import survival

    values = survival._bootstrap_values(time, event, eta, np.stack(
        [np.bincount(d, minlength=800) for d in draws]).astype("float64"))
    np.testing.assert_allclose(values, direct, rtol=1e-12)



@pytest.mark.slow  # a fresh JAX process (20 s); .ci/run runs the slow set
def test_jax_computes_the_same_loss_metrics_and_training(run_python, tmp_path):
    _, eta, time, event = survival_data(7, n=90)
    np.savez(tmp_path / "survival.npz", time=time, event=event, eta=eta)
    masks = (np.random.default_rng(0).random((6, 8, 8, 1)) < 0.3).astype("float32")
    np.save(tmp_path / "masks.npy", masks)
    proc = run_python("""
        import json, keras, numpy as np
        import mtlzoo
        from mtlzoo.segmentation import Dice, SoftDiceLoss
        from mtlzoo.survival import ConcordanceIndex, CoxPartialLikelihood
        assert keras.backend.backend() == "jax"
        d = np.load("survival.npz")
        target = np.stack([d["time"], d["event"]], 1).astype("float32")
        metric = ConcordanceIndex(capacity=256, block=32)
        for start in range(0, 90, 40):
            metric.update_state(target[start:start + 40], d["eta"][start:start + 40, None])
        masks = np.load("masks.npy")
        logits = (masks - 0.5) * 3 + np.linspace(-1, 1, masks.size).reshape(masks.shape)
        dice = Dice()
        dice.update_state(masks, logits)
        # Train a linear survival model with the default loss and metric: a positive weight on the
        # true risk ranks the examples exactly as the true risk does.
        keras.utils.set_random_seed(2)  # this seed starts with the wrong sign, so training must turn it
        model = mtlzoo.create_model("hard_sharing", [mtlzoo.Task("os", "survival")], {"x": (1,)}, shared_units=[])
        model.compile(optimizer=keras.optimizers.Adam(0.1))
        history = model.fit({"x": d["eta"][:, None].astype("float32")}, {"os": target}, batch_size=90, epochs=40,
                            verbose=0).history
        print(json.dumps({"cox": float(CoxPartialLikelihood()(target, d["eta"][:, None])),
                          "c_index": float(metric.result()), "dice_loss": float(SoftDiceLoss()(masks, logits)),
                          "dice": float(dice.result()), "loss": history["loss"], "c_index_fit": history["c_index"]}))
        """, backend="jax")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    masks = np.load(tmp_path / "masks.npy")
    logits = (masks - 0.5) * 3 + np.linspace(-1, 1, masks.size).reshape(masks.shape)
    target = np.stack([time, event], 1)
    assert got["cox"] == pytest.approx(float(CoxPartialLikelihood()(target, eta[:, None])), rel=1e-5)
    assert got["c_index"] == pytest.approx(concordance_index(time, event, eta), abs=1e-6)  # float32 totals on JAX
    assert got["dice_loss"] == pytest.approx(float(SoftDiceLoss()(masks, logits)), rel=1e-5)
    assert got["loss"][-1] < got["loss"][0] - 1.0
    assert got["c_index_fit"][0] == pytest.approx(1 - concordance_index(time, event, eta), abs=1e-6)
    assert got["c_index_fit"][-1] == pytest.approx(concordance_index(time, event, eta), abs=1e-6)
