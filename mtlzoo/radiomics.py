"""Radiomics enhancement: hand-crafted features of a predicted tumour region, fused with a deep
risk score by a Cox proportional-hazards model (Meng, Bi, Feng & Kim, HECKTOR 2022).

``region_features(image, mask)`` describes one region of a 2-D image or 3-D volume:

- shape: ``size`` (area or volume in pixels), ``surface`` (perimeter, or the marching-cubes
  surface area), ``compactness`` (4 pi A / P^2 in 2-D, the sphericity pi^(1/3) (6V)^(2/3) / S in
  3-D; 1 for a disc or a ball);
- first order, over the region's intensities: ``mean``, ``std``, ``skewness``, ``kurtosis``,
  ``p10``, ``p90``, ``entropy`` (of a 16-bin histogram);
- texture, from the grey-level co-occurrence matrix of the region quantised to 16 levels
  (distance 1, four in-plane angles, symmetric, summed over the slices of a volume):
  ``glcm_contrast``, ``glcm_homogeneity``, ``glcm_energy``, ``glcm_correlation``.

An empty region has every feature 0. Features come from scikit-image (``pip install
"mtlzoo[survival]"``).

``RadiomicsCoxFusion`` is the second stage: it selects the ``top_k`` features whose univariate
C-index on the training data is furthest from 0.5 (skipping any correlated above
``max_correlation`` with one already chosen), standardises ``[deep risk, selected features]``
with training statistics, and fits scikit-survival's ``CoxPHSurvivalAnalysis`` (Efron ties,
ridge ``alpha``). It is fitted on training data only and saves to JSON, so a deployment can
apply it to an export's ``<task>_risk`` and ``<task>_mask`` answers (``fuse_answers``).
"""

from __future__ import annotations

import json
import math
import os
from typing import Mapping, Sequence

import numpy as np

from mtlzoo.survival import concordance_index

LEVELS = 16
SHAPE = ("size", "surface", "compactness")
FIRST_ORDER = ("mean", "std", "skewness", "kurtosis", "p10", "p90", "entropy")
TEXTURE = ("glcm_contrast", "glcm_homogeneity", "glcm_energy", "glcm_correlation")
FEATURES = SHAPE + FIRST_ORDER + TEXTURE


def _skimage():
    try:
        import skimage.feature
        import skimage.measure
    except ImportError as err:
        raise ImportError('Radiomics features need scikit-image: pip install "mtlzoo[survival]".') from err
    return skimage


def region_features(image, mask) -> dict[str, float]:
    """The features of the region ``mask > 0.5`` of ``image`` (same spatial shape, 2-D or 3-D;
    a trailing channel axis of 1 is dropped)."""
    image, mask = np.asarray(image, "float64"), np.asarray(mask) > 0.5
    if image.ndim in (3, 4) and image.shape[-1] == 1:
        image = image[..., 0]
    if mask.ndim in (3, 4) and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if image.shape != mask.shape or image.ndim not in (2, 3):
        raise ValueError(f"region_features: image and mask must share one 2-D or 3-D shape; got "
                         f"{image.shape} and {mask.shape}.")
    if not mask.any():
        return dict.fromkeys(FEATURES, 0.0)
    values = image[mask]
    return {**_shape(mask), **_first_order(values), **_texture(image, mask, values)}


def _shape(mask) -> dict[str, float]:
    skimage = _skimage()
    size = float(mask.sum())
    if mask.ndim == 2:
        surface = float(skimage.measure.perimeter(mask))
        compactness = 4 * math.pi * size / surface**2 if surface else 1.0
    else:
        padded = np.pad(mask, 1).astype("float32")  # close the surface where the region meets the border
        vertices, faces, _, _ = skimage.measure.marching_cubes(padded, 0.5)
        surface = float(skimage.measure.mesh_surface_area(vertices, faces))
        compactness = math.pi ** (1 / 3) * (6 * size) ** (2 / 3) / surface if surface else 1.0
    return {"size": size, "surface": surface, "compactness": float(min(compactness, 1.5))}


def _first_order(values) -> dict[str, float]:
    mean, std = float(values.mean()), float(values.std())
    z = (values - mean) / std if std > 0 else np.zeros_like(values)
    counts, _ = np.histogram(values, bins=LEVELS)
    p = counts[counts > 0] / counts.sum()
    return {"mean": mean, "std": std, "skewness": float((z**3).mean()), "kurtosis": float((z**4).mean() - 3),
            "p10": float(np.percentile(values, 10)), "p90": float(np.percentile(values, 90)),
            "entropy": float(-(p * np.log2(p)).sum())}


def _texture(image, mask, values) -> dict[str, float]:
    skimage = _skimage()
    low, high = values.min(), values.max()
    # Region pixels get levels 1..LEVELS, the rest 0; row and column 0 are dropped below, so
    # only pairs of region pixels count.
    levels = np.where(mask, 1 + np.minimum((image - low) / max(high - low, 1e-12) * LEVELS, LEVELS - 1), 0)
    levels = levels.astype("uint8")
    slices = [levels] if levels.ndim == 2 else [s for s in levels if s.any()]
    matrix = sum(skimage.feature.graycomatrix(s, [1], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
                                              levels=LEVELS + 1, symmetric=True) for s in slices)
    matrix = matrix[1:, 1:].astype("float64")
    totals = matrix.sum(axis=(0, 1), keepdims=True)
    if not totals.any():  # a region of isolated pixels has no neighbouring pairs
        return dict.fromkeys(TEXTURE, 0.0)
    matrix = matrix / np.maximum(totals, 1)
    props = {name: float(np.nanmean(skimage.feature.graycoprops(matrix, name[5:])))
             for name in TEXTURE}
    return {k: (0.0 if not np.isfinite(v) else v) for k, v in props.items()}


def feature_table(images, masks) -> np.ndarray:
    """``(N, len(FEATURES))`` features of each example's region."""
    rows = (region_features(image, mask) for image, mask in zip(images, masks))
    return np.array([[row[f] for f in FEATURES] for row in rows], "float64").reshape(-1, len(FEATURES))


class RadiomicsCoxFusion:
    """A Cox model on ``[deep risk, top_k radiomics features]``, fitted on training data only."""

    def __init__(self, top_k: int = 3, max_correlation: float = 0.8, alpha: float = 0.1,
                 feature_names: Sequence[str] = FEATURES):
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise ValueError(f"RadiomicsCoxFusion: top_k must be an integer >= 0, got {top_k!r}.")
        self.top_k, self.max_correlation, self.alpha = top_k, float(max_correlation), float(alpha)
        self.feature_names = list(feature_names)
        self.selected: list[int] = []
        self.mean = self.scale = self.coef = None

    def _design(self, risk, features) -> np.ndarray:
        risk = np.asarray(risk, "float64").reshape(-1, 1)
        features = np.asarray(features, "float64").reshape(len(risk), -1)
        if features.shape[1] != len(self.feature_names):
            raise ValueError(f"RadiomicsCoxFusion: expected {len(self.feature_names)} feature columns "
                             f"({self.feature_names}), got {features.shape[1]}.")
        return np.hstack([risk, features[:, self.selected]])

    def fit(self, risk, features, time, event) -> "RadiomicsCoxFusion":
        from sksurv.linear_model import CoxPHSurvivalAnalysis
        from sksurv.util import Surv

        features = np.asarray(features, "float64")
        time, event = np.asarray(time, "float64").reshape(-1), np.asarray(event).reshape(-1) > 0
        strength = np.array([abs(concordance_index(time, event, column) - 0.5) if column.std() > 0 else 0.0
                             for column in features.T])
        self.selected = []
        for j in np.argsort(-strength, kind="stable"):
            if len(self.selected) == self.top_k or strength[j] == 0:
                break
            if all(abs(np.corrcoef(features[:, j], features[:, k])[0, 1]) <= self.max_correlation
                   for k in self.selected):
                self.selected.append(int(j))
        design = self._design(risk, features)
        self.mean, self.scale = design.mean(0), np.where(design.std(0) > 0, design.std(0), 1.0)
        model = CoxPHSurvivalAnalysis(ties="efron", alpha=self.alpha)
        model.fit((design - self.mean) / self.scale, Surv.from_arrays(event, time))
        self.coef = model.coef_
        return self

    def predict(self, risk, features) -> np.ndarray:
        """The fused risk score (a log hazard ratio up to a constant) of each example."""
        if self.coef is None:
            raise ValueError("RadiomicsCoxFusion: call fit() (or load()) before predict().")
        return ((self._design(risk, features) - self.mean) / self.scale) @ self.coef

    @property
    def selected_names(self) -> list[str]:
        return [self.feature_names[j] for j in self.selected]

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted fusion as JSON (atomically: a failed write leaves no file)."""
        from mtlzoo.io import atomic_path

        state = {"top_k": self.top_k, "max_correlation": self.max_correlation, "alpha": self.alpha,
                 "feature_names": self.feature_names, "selected": self.selected,
                 "mean": list(self.mean), "scale": list(self.scale), "coef": list(self.coef)}
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                json.dump(state, f, indent=2)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RadiomicsCoxFusion":
        try:
            state = json.loads(open(path).read())
            fusion = cls(state["top_k"], state["max_correlation"], state["alpha"], state["feature_names"])
            fusion.selected = [int(j) for j in state["selected"]]
            fusion.mean, fusion.scale, fusion.coef = (np.array(state[k], "float64") for k in ("mean", "scale", "coef"))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a saved RadiomicsCoxFusion ({err}).") from None
        return fusion


def fuse_answers(fusion: RadiomicsCoxFusion, answers: Mapping[str, np.ndarray], images, task: str) -> np.ndarray:
    """Fused risks from an export's answers: ``answers[task + "_risk"]`` and the region
    ``answers[task_mask]`` of ``images`` (``task_mask`` is the one ``*_mask`` key)."""
    masks = [k for k in answers if k.endswith("_mask")]
    if f"{task}_risk" not in answers or len(masks) != 1:
        raise ValueError(f"fuse_answers: expected '{task}_risk' and one '*_mask' output, got {sorted(answers)}.")
    return fusion.predict(answers[f"{task}_risk"], feature_table(images, answers[masks[0]]))
