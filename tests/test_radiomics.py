"""Radiomics features against direct computations, and the Cox fusion on known signal."""

import math

import numpy as np
import pytest
import scipy.stats
from skimage.feature import graycomatrix, graycoprops

from mtlzoo.radiomics import FEATURES, RadiomicsCoxFusion, feature_table, fuse_answers, region_features
from mtlzoo.survival import concordance_index


def disc(size, radius, dims=2):
    grid = np.indices((size,) * dims) - (size - 1) / 2
    return (grid**2).sum(0) <= radius**2


def test_shape_features_of_discs_and_balls():
    small, large = region_features(np.ones((64, 64)), disc(64, 8)), region_features(np.ones((64, 64)), disc(64, 20))
    assert small["size"] == disc(64, 8).sum() and large["size"] > 6 * small["size"]
    assert large["surface"] == pytest.approx(2 * math.pi * 20, rel=0.1)
    assert large["compactness"] == pytest.approx(1.0, abs=0.15)
    square = np.zeros((64, 64), bool)
    square[10:50, 30:34] = True  # a thin bar is far from compact
    assert region_features(np.ones((64, 64)), square)["compactness"] < 0.5 * large["compactness"]
    ball = region_features(np.ones((24, 24, 24)), disc(24, 8, dims=3))
    assert ball["surface"] == pytest.approx(4 * math.pi * 64, rel=0.15)  # marching cubes over voxel stairs
    assert ball["compactness"] == pytest.approx(1.0, abs=0.1)


def test_first_order_and_texture_match_direct_computations():
    rng = np.random.default_rng(0)
    image, mask = rng.normal(size=(32, 32)), disc(32, 10)
    features = region_features(image[..., None], mask[..., None])  # channel axes are dropped
    values = image[mask]
    assert features["skewness"] == pytest.approx(scipy.stats.skew(values), rel=1e-9)
    assert features["kurtosis"] == pytest.approx(scipy.stats.kurtosis(values), rel=1e-9)
    assert features["p90"] == pytest.approx(np.percentile(values, 90))
    # Over a region that fills the image, the texture equals scikit-image's own GLCM of the
    # image quantised the same way.
    full = np.ones((32, 32), bool)
    quantised = np.minimum((image - image.min()) / np.ptp(image) * 16, 15).astype("uint8")
    matrix = graycomatrix(quantised, [1], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=16, symmetric=True,
                          normed=True)
    ours = region_features(image, full)
    for name in ("contrast", "homogeneity", "energy", "correlation"):
        assert ours[f"glcm_{name}"] == pytest.approx(graycoprops(matrix, name).mean(), rel=1e-9)
    # Smooth regions have lower contrast than noisy ones.
    smooth = np.add.outer(np.arange(32.0), np.arange(32.0))
    assert region_features(smooth, mask)["glcm_contrast"] < ours["glcm_contrast"]


def test_empty_and_tiny_regions_and_bad_shapes():
    assert region_features(np.ones((8, 8)), np.zeros((8, 8))) == dict.fromkeys(FEATURES, 0.0)
    single = np.zeros((8, 8))
    single[3, 3] = 1
    assert all(np.isfinite(v) for v in region_features(np.ones((8, 8)), single).values())
    with pytest.raises(ValueError, match="share one 2-D or 3-D shape"):
        region_features(np.ones((8, 8)), np.ones((8, 9)))


def test_fusion_adds_the_signal_the_deep_risk_misses(tmp_path):
    rng = np.random.default_rng(1)
    n = 600
    images = rng.normal(size=(n, 24, 24))
    radius = rng.uniform(3, 9, n)
    masks = np.stack([disc(24, r) for r in radius])
    hidden = rng.normal(size=n)  # what the deep risk sees
    eta = hidden + 1.0 * (radius - 6) / 2  # the region's size matters too
    time = rng.exponential(np.exp(-eta))
    event = rng.random(n) < 0.8
    features = feature_table(images, masks)
    train, test = slice(0, 400), slice(400, None)
    fusion = RadiomicsCoxFusion(top_k=2).fit(hidden[train], features[train], time[train], event[train])
    assert fusion.selected_names[0] in ("size", "surface")
    fused = fusion.predict(hidden[test], features[test])
    assert concordance_index(time[test], event[test], fused) > concordance_index(time[test], event[test], hidden[test]) + 0.03
    fusion.save(tmp_path / "fusion.json")
    again = RadiomicsCoxFusion.load(tmp_path / "fusion.json")
    np.testing.assert_allclose(again.predict(hidden[test], features[test]), fused)
    answers = {"os_risk": hidden[test], "tumour_mask": masks[test].astype("int64")}
    np.testing.assert_allclose(fuse_answers(again, answers, images[test], "os"), fused)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a saved RadiomicsCoxFusion"):
        RadiomicsCoxFusion.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="expected 14 feature columns"):
        fusion.predict(hidden[test], features[test][:, :3])
