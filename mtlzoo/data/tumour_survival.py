"""A generated PET/CT tumour dataset: segment the tumour and predict survival from the images.

It stands in for HECKTOR (head-and-neck tumours on PET/CT with outcomes), which cannot be
downloaded here, and needs no files. Each example holds one tumour in a ``size``-pixel square
(``dims=2``) or cube (``dims=3``). Three latent properties are drawn independently, as
``u_k ~ Uniform(0, 1)``, with ``z_k = sqrt(12) (u_k - 1/2)`` their population standardisation:

    radius        r = size (0.07 + 0.10 u_1)            (pixels)
    uptake        a = 2 + 6 u_2                         (PET background units)
    heterogeneity h = 0.6 u_3                           (texture amplitude inside the tumour)

**Shape.** An ellipsoid centred at a uniform position that keeps it inside the image, turned by a
uniform random rotation, with axis lengths ``r s_i`` (``log s_i ~ U(-0.25, 0.25)`` centred, so
the ``s_i`` have geometric mean 1) and an irregular boundary: the tumour mask is
``||diag(1 / (r s)) Q^T (x - c)|| < 1 + 0.15 tanh(F(x))``, ``F`` a smooth unit-variance Gaussian
field (correlation length ``0.06 size``); the voxel nearest the centre is always tumour.

**Images.** ``PET = G_1 * (1 + 0.1 B + a M max(0, 1 + h T)) + 0.15 E`` and
``CT = sum_{k<4} A_k exp(-||x - p_k||^2 / 2 w_k^2) + 0.25 G_1 * M + 0.3 E'``, where ``M`` is the
mask, ``G_1 *`` a Gaussian blur of 1 pixel, ``B`` and ``T`` smooth unit-variance fields
(correlation ``size / 8`` and 1.5 pixels), ``E, E'`` white noise, and the CT's soft "anatomy"
blobs have ``A_k ~ U(-1, 1)``, ``w_k ~ size U(0.12, 0.3)``. Both are shifted and scaled by fixed
constants (never per image, which would erase the uptake) to values of order 1. CT alone
segments poorly (contrast 0.25 against noise 0.3 and the anatomy) but adds to the PET.

**Survival.** The log hazard is ``eta = 0.8 z_1 + 0.5 z_2 + 0.5 z_3`` (``oracle_risk``); the event
time is ``T ~ Exponential(rate = exp(eta) / 24)`` (months), the censoring time independently
``C ~ Exponential(rate = lambda_c)`` with ``lambda_c`` set so that a ``censoring`` fraction of the
population is censored (``P(C < T)``); the target is ``(max(0.1, round(min(T, C), 1)), T <= C)``,
so some times tie.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import fft

from mtlzoo.data.base import Dataset, MultiTaskArrays, check_int_option, register_dataset
from mtlzoo.tasks import Task

COEFFICIENTS = np.array([0.8, 0.5, 0.5])  # log hazard per standardised radius, uptake, heterogeneity
BASE_RATE = 1 / 24  # events per month at eta = 0
MIN_SIZE = 16
_SPLIT_STREAMS = {"train": 1, "validation": 2, "test": 3}
_CHUNK = 64  # examples per image batch: bounds memory for volumes (fixed, so output is deterministic)
_BOUNDARY_WOBBLE = 0.15
_LOG_AXIS_SPREAD = 0.25
# Fixed standardisation of the images (measured on the default options; see the module docstring).
_PET_SHIFT, _PET_SCALE = 1.2, 1.2
_CT_SHIFT, _CT_SCALE = 0.0, 0.5


@register_dataset("tumour_survival")
class TumourSurvival(Dataset):
    """Tumour segmentation and survival from synthetic PET/CT images, generated in-process.

    Inputs ``pet`` and ``ct``, float32 ``(size, size, 1)`` (``(size, size, size, 1)`` with
    ``dims=3``); tasks ``tumour`` (segmentation: the 0/1 mask, shaped like an input) and
    ``survival`` (``(time, event)`` per example). The generative model is in the module docstring.

    Args:
        seed: seed of every split's examples.
        size: image side in pixels (>= 16). Volumes hold ``size ** 3`` voxels: keep it small
            (e.g. 24-32) with ``dims=3``.
        dims: 2 for images, 3 for volumes.
        num_train, num_validation, num_test: examples per split.
        censoring: the population's censored fraction, in [0, 1).
    """

    def __init__(self, *, seed: int = 0, size: int = 64, dims: int = 2, num_train: int = 512,
                 num_validation: int = 128, num_test: int = 256, censoring: float = 0.3):
        for name, value, minimum in (("seed", seed, 0), ("size", size, MIN_SIZE), ("dims", dims, 2),
                                     ("num_train", num_train, 2), ("num_validation", num_validation, 2),
                                     ("num_test", num_test, 2)):
            check_int_option("tumour_survival", name, value, minimum=minimum)
        if dims not in (2, 3):
            raise ValueError(f"tumour_survival: option dims must be 2 (images) or 3 (volumes), got {dims!r}.")
        if (isinstance(censoring, bool) or not isinstance(censoring, numbers.Real)
                or not 0 <= censoring < 1):
            raise ValueError(f"tumour_survival: option censoring must be a number in [0, 1), got {censoring!r}.")
        self.seed, self.size, self.dims = int(seed), int(size), int(dims)
        self.censoring = float(censoring)
        self.sizes = {"train": int(num_train), "validation": int(num_validation), "test": int(num_test)}

    def tasks(self) -> list[Task]:
        return [Task(name="tumour", kind="segmentation"), Task(name="survival", kind="survival")]

    def input_spec(self) -> dict[str, tuple[int, ...]]:
        shape = (self.size,) * self.dims + (1,)
        return {"pet": shape, "ct": shape}

    def features(self, split: str) -> dict[str, np.ndarray]:
        """The latent properties of ``split``'s tumours, each ``(N,)``: ``radius`` (pixels),
        ``uptake``, ``heterogeneity`` and their standardised forms ``z_radius``, ``z_uptake``,
        ``z_heterogeneity`` (the log hazard's covariates)."""
        return {k: v for k, v in self._latents(split).items() if k in _FEATURES}

    def oracle_risk(self, split: str) -> np.ndarray:
        """The true log hazard ``eta`` of ``split``'s examples, ``(N,)``: the best possible risk score."""
        return self._latents(split)["eta"]

    def load(self, split: str) -> MultiTaskArrays:
        latents = self._latents(split)
        n = self.sizes[split]
        rng = np.random.default_rng([self.seed, _SPLIT_STREAMS[split], 1])
        shape = (n,) + (self.size,) * self.dims + (1,)
        pet, ct, mask = (np.empty(shape, np.float32) for _ in range(3))
        for start in range(0, n, _CHUNK):
            part = slice(start, min(n, start + _CHUNK))
            pet[part, ..., 0], ct[part, ..., 0], mask[part, ..., 0] = self._images(
                rng, {k: v[part] for k, v in latents.items()})
        survival = np.stack([latents["time"], latents["event"]], axis=1).astype(np.float32)
        ones = np.ones(n, np.float32)
        return MultiTaskArrays({"pet": pet, "ct": ct}, {"tumour": mask, "survival": survival},
                               {"tumour": ones, "survival": ones.copy()})

    def _latents(self, split: str) -> dict[str, np.ndarray]:
        """Every per-example scalar of ``split``: latent properties, geometry and outcome. They come
        from their own stream, so features and oracle risk need no images."""
        self.check_split(split)
        n, d, size = self.sizes[split], self.dims, self.size
        rng = np.random.default_rng([self.seed, _SPLIT_STREAMS[split], 0])
        u = rng.random((n, 3))
        z = math.sqrt(12) * (u - 0.5)
        eta = z @ COEFFICIENTS
        radius = size * (0.07 + 0.10 * u[:, 0])
        # A uniform random orthogonal matrix (QR of a Gaussian, signs fixed); reflections are
        # harmless since an ellipsoid is symmetric.
        q, r = np.linalg.qr(rng.standard_normal((n, d, d)))
        rotation = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
        log_axes = rng.uniform(-_LOG_AXIS_SPREAD, _LOG_AXIS_SPREAD, (n, d))
        axes = np.exp(log_axes - log_axes.mean(axis=1, keepdims=True))
        # Keep the whole tumour, boundary wobble included, at least 2 pixels from the edge.
        extent = radius * axes.max(axis=1) * (1 + _BOUNDARY_WOBBLE) + 2
        centre = extent[:, None] + rng.random((n, d)) * (size - 1 - 2 * extent)[:, None]
        event_time = rng.exponential(1.0, n) / (BASE_RATE * np.exp(eta))
        rate = _censoring_rate(self.censoring)
        censor_time = rng.exponential(1.0, n) / rate if rate > 0 else np.full(n, np.inf)
        return {
            "radius": radius, "uptake": 2 + 6 * u[:, 1], "heterogeneity": 0.6 * u[:, 2],
            "z_radius": z[:, 0], "z_uptake": z[:, 1], "z_heterogeneity": z[:, 2], "eta": eta,
            "rotation": rotation, "axes": axes, "centre": centre,
            "time": np.maximum(0.1, np.round(np.minimum(event_time, censor_time), 1)),
            "event": (event_time <= censor_time).astype(np.float64),
        }

    def _images(self, rng: np.random.Generator, latents: dict[str, np.ndarray]):
        """PET, CT and mask, each ``(n, *grid)`` float32, for one chunk of examples."""
        n, d, size = len(latents["eta"]), self.dims, self.size
        grid = (size,) * d
        spread = (slice(None),) + (None,) * d  # broadcasts a per-example value over the grid
        coords = np.moveaxis(np.indices(grid, dtype=np.float32), 0, -1)  # (*grid, d)
        offset = coords[None] - latents["centre"][spread].astype(np.float32)
        local = np.einsum("n...i,nij->n...j", offset, latents["rotation"].astype(np.float32))
        scale = (latents["axes"] * latents["radius"][:, None]).astype(np.float32)
        level = np.sqrt(np.sum((local / scale[spread]) ** 2, axis=-1))
        boundary = _smooth_noise(rng, (n,) + grid, 0.06 * size)
        mask = (level < 1 + _BOUNDARY_WOBBLE * np.tanh(boundary)).astype(np.float32)
        nearest = np.clip(np.rint(latents["centre"]).astype(int), 0, size - 1)
        mask[(np.arange(n), *nearest.T)] = 1  # a tumour in every example, however small

        texture = np.maximum(0, 1 + latents["heterogeneity"][spread] * _smooth_noise(rng, (n,) + grid, 1.5))
        pet = 1 + 0.1 * _smooth_noise(rng, (n,) + grid, size / 8) + latents["uptake"][spread] * mask * texture
        pet = _blur(pet, 1.0) + 0.15 * rng.standard_normal(pet.shape, dtype=np.float32)

        ct = 0.25 * _blur(mask, 1.0) + 0.3 * rng.standard_normal(mask.shape, dtype=np.float32)
        centres = rng.uniform(0, size, (4, n, d)).astype(np.float32)
        widths = (size * rng.uniform(0.12, 0.3, (4, n))).astype(np.float32)
        amplitudes = rng.uniform(-1, 1, (4, n)).astype(np.float32)
        for centre, width, amplitude in zip(centres, widths, amplitudes):
            distance2 = np.sum((coords[None] - centre[spread]) ** 2, axis=-1)
            ct += amplitude[spread] * np.exp(-distance2 / (2 * width[spread] ** 2))
        return (pet - _PET_SHIFT) / _PET_SCALE, (ct - _CT_SHIFT) / _CT_SCALE, mask


_FEATURES = ("radius", "uptake", "heterogeneity", "z_radius", "z_uptake", "z_heterogeneity")


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels over every axis but the first, by FFT (periodic edges:
    cheap at any sigma, and the wrap only touches background)."""
    axes = tuple(range(1, x.ndim))
    spectrum = fft.rfftn(x, axes=axes)
    frequencies = [fft.fftfreq(n) for n in x.shape[1:-1]] + [fft.rfftfreq(x.shape[-1])]
    squared = sum(np.meshgrid(*[f ** 2 for f in frequencies], indexing="ij", sparse=True))
    spectrum *= np.exp(-2 * np.pi ** 2 * sigma ** 2 * squared)
    return fft.irfftn(spectrum, s=x.shape[1:], axes=axes).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian random fields of correlation length ``sigma``, each scaled to unit variance."""
    field = _blur(rng.standard_normal(shape, dtype=np.float32), sigma)
    axes = tuple(range(1, field.ndim))
    return field / np.maximum(field.std(axis=axes, keepdims=True), 1e-12)


def _censoring_rate(fraction: float) -> float:
    """The exponential censoring rate that censors ``fraction`` of the population: the root of
    ``E[lambda_c / (lambda_c + lambda(eta))] = fraction``, the expectation over the latent grid."""
    if fraction == 0:
        return 0.0
    u = (np.arange(40) + 0.5) / 40  # midpoint quadrature of each uniform latent
    z = math.sqrt(12) * (u - 0.5)
    b = COEFFICIENTS
    hazard = (BASE_RATE * np.exp(b[0] * z[:, None, None] + b[1] * z[None, :, None] + b[2] * z[None, None, :])).ravel()
    low, high = math.log(hazard.min()) - 30, math.log(hazard.max()) + 30
    for _ in range(80):  # the censored fraction grows with the rate: bisect its log
        middle = (low + high) / 2
        rate = math.exp(middle)
        low, high = (middle, high) if np.mean(rate / (rate + hazard)) < fraction else (low, middle)
    return math.exp((low + high) / 2)
