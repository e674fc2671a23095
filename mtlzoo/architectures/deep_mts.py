"""DeepMTS: joint tumour segmentation and survival prediction (Meng, Bi, Feng & Kim, IEEE JBHI 2022).

A residual U-Net segments the tumour from the stacked image channels (e.g. PET and CT); a
survival branch predicts one risk score from (a) every encoder level's features, pooled, and
(b) a small cascaded DenseNet that reads the images together with the predicted tumour
probability map, so the survival loss also trains the segmentation path. Vector inputs (clinical
covariates, or the radiomics features of the authors' HECKTOR 2022 variant) join the pooled
features before the final dropout and risk layer. One builder serves 2-D images ``(H, W, C)``
and 3-D volumes ``(D, H, W, C)``.
"""

from __future__ import annotations

import keras

from mtlzoo.architectures.registry import Heads, register_architecture
from mtlzoo.validation import number_at_least, positive_int

UPSAMPLING = ("transpose", "nearest")
# How many times the DenseNet's input (images and predicted mask) is halved first.
DENSE_RESOLUTIONS = {"full": 0, "half": 1, "quarter": 2}

# Layer classes by spatial rank, so that one code path builds 2-D and 3-D models.
_LAYERS = {
    2: {"conv": keras.layers.Conv2D, "transpose": keras.layers.Conv2DTranspose, "up": keras.layers.UpSampling2D,
        "max_pool": keras.layers.MaxPooling2D, "avg_pool": keras.layers.AveragePooling2D,
        "gap": keras.layers.GlobalAveragePooling2D},
    3: {"conv": keras.layers.Conv3D, "transpose": keras.layers.Conv3DTranspose, "up": keras.layers.UpSampling3D,
        "max_pool": keras.layers.MaxPooling3D, "avg_pool": keras.layers.AveragePooling3D,
        "gap": keras.layers.GlobalAveragePooling3D},
}


@register_architecture("deep_mts", task_kinds=("segmentation", "survival"))
def deep_mts(
    inputs,
    tasks,
    levels: int = 4,
    filters: int = 16,
    kernel_size: int = 3,
    upsampling: str = "transpose",
    dense_layers: int = 3,
    dense_growth: int = 8,
    dense_resolution: str = "half",
    dropout: float = 0.3,
):
    """Residual U-Net segmentation with a cascaded DenseNet survival branch (DeepMTS).

    Needs one ``segmentation`` task (output: one logit per pixel) and at most one ``survival``
    task (output: a risk score); without one, the model is the plain residual U-Net. Image
    inputs (``(H, W, C)`` or ``(D, H, W, C)``, all the same spatial shape) are concatenated on
    channels in sorted-name order; vector inputs ``(d,)`` (clinical covariates, radiomics) are
    joined to the survival features before the dropout.

    Args:
        levels: U-Net levels (resolutions), >= 2; the paper uses 4-5. Every spatial size must
            be divisible by ``2 ** (levels - 1)``.
        filters: filters of the first level's residual block; each deeper level doubles them.
        kernel_size: size of the square (cubic) convolution kernels.
        upsampling: ``"transpose"`` (learned stride-2 transposed convolution) or
            ``"nearest"`` (repeat pixels) in the U-Net decoder.
        dense_layers: densely connected conv layers per DenseNet block; the DenseNet has one
            block per resolution it visits, with an average-pool transition between blocks.
        dense_growth: filters each DenseNet layer adds (the growth rate).
        dense_resolution: ``"full"`` runs the DenseNet on the images' own resolution, as the
            paper does; ``"half"`` (default) and ``"quarter"`` average-pool its input (images
            and predicted mask) by 2 or 4 first and drop as many of its first blocks, so it
            ends at the same resolution for about 4x or 16x less work. On 64x64 images one
            training step costs ~2.1x, ~1.4x or ~1.2x the plain U-Net's CPU time on 2 cores
            (``bench/deep_mts.py``).
        dropout: dropout rate on the joined survival features before the risk layer.
    """
    levels = positive_int("deep_mts", "levels", levels)
    if levels < 2:
        raise ValueError(f"deep_mts: levels must be at least 2, got {levels}.")
    filters = positive_int("deep_mts", "filters", filters)
    kernel_size = positive_int("deep_mts", "kernel_size", kernel_size)
    dense_layers = positive_int("deep_mts", "dense_layers", dense_layers)
    dense_growth = positive_int("deep_mts", "dense_growth", dense_growth)
    dropout = number_at_least("deep_mts: dropout", dropout)
    if dropout >= 1:
        raise ValueError(f"deep_mts: dropout must be below 1, got {dropout}.")
    if dense_resolution not in DENSE_RESOLUTIONS:
        raise ValueError(f"deep_mts: dense_resolution must be one of {list(DENSE_RESOLUTIONS)}, got {dense_resolution!r}.")
    if upsampling not in UPSAMPLING:
        raise ValueError(f"deep_mts: unknown upsampling {upsampling!r}; expected one of {list(UPSAMPLING)}.")
    segmentation, survival = _split_tasks(tasks)
    images, vectors = _split_inputs(inputs, levels)
    layers = _LAYERS[len(images.shape) - 2]

    def conv(x, width, size, name, **options):
        return layers["conv"](width, size, padding="same", use_bias=False, name=name, **options)(x)

    def bn_relu(x, name):
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x)

    def residual_block(x, width, name):
        y = bn_relu(conv(x, width, kernel_size, f"{name}_conv_a"), f"{name}_a")
        y = keras.layers.BatchNormalization(name=f"{name}_b_bn")(conv(y, width, kernel_size, f"{name}_conv_b"))
        # The block always changes its width (input channels, doubling, skip concatenation),
        # so the shortcut is always a 1x1 projection.
        skip = keras.layers.BatchNormalization(name=f"{name}_skip_bn")(conv(x, width, 1, f"{name}_skip"))
        return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, skip]))

    # Encoder: one residual block per level, max-pooled between levels; the last is the bottleneck.
    encoder, x = [], images
    for i in range(levels):
        if i:
            x = layers["max_pool"](2, name=f"unet_pool_{i}")(x)
        x = residual_block(x, filters * 2**i, f"unet_down_{i}")
        encoder.append(x)
    bottleneck = x
    for i in reversed(range(levels - 1)):
        width = filters * 2**i
        if upsampling == "transpose":
            x = layers["transpose"](width, 2, strides=2, name=f"unet_up_{i}")(x)
        else:
            x = layers["up"](2, name=f"unet_up_{i}")(x)
        x = keras.layers.Concatenate(name=f"unet_skip_{i}")([x, encoder[i]])
        x = residual_block(x, width, f"unet_dec_{i}")
    mask_logits = layers["conv"](1, 1, dtype="float32", name=segmentation.name)(x)
    if survival is None:
        return Heads({segmentation.name: mask_logits}, shared=bottleneck)

    # Survival features (a): each encoder level, projected and pooled.
    pooled = []
    for i, level in enumerate(encoder):
        level = bn_relu(conv(level, filters * 2**i, 1, f"survival_level_{i}_conv"), f"survival_level_{i}")
        pooled.append(layers["gap"](name=f"survival_level_{i}_pool")(level))

    # Survival features (b): the cascaded DenseNet on the images and the predicted tumour
    # probability, through which the survival loss reaches the segmentation output.
    probability = keras.layers.Activation("sigmoid", name="tumour_probability")(mask_logits)
    x = keras.layers.Concatenate(name="dense_input")([images, probability])
    skipped = DENSE_RESOLUTIONS[dense_resolution]
    if skipped:
        # "same": a 2-level U-Net only guarantees even sizes, which a pool by 4 may not divide.
        x = layers["avg_pool"](2**skipped, padding="same", name="dense_input_pool")(x)
    x = conv(x, 2 * dense_growth, kernel_size, "dense_stem_conv")
    # As many resolutions as the U-Net's encoder, less those skipped by pooling the input.
    for b in range(max(1, levels - skipped)):
        if b:  # transition: halve the channels and the resolution
            x = bn_relu(x, f"dense_transition_{b}")
            x = conv(x, max(1, x.shape[-1] // 2), 1, f"dense_transition_{b}_conv")
            x = layers["avg_pool"](2, name=f"dense_transition_{b}_pool")(x)
        for j in range(dense_layers):
            new = conv(bn_relu(x, f"dense_{b}_{j}"), dense_growth, kernel_size, f"dense_{b}_{j}_conv")
            x = keras.layers.Concatenate(name=f"dense_{b}_{j}_concat")([x, new])
    x = bn_relu(x, "dense_out")
    pooled.append(layers["gap"](name="dense_pool")(x))

    features = keras.layers.Concatenate(name="survival_features")(pooled + vectors)
    features = keras.layers.Dropout(dropout, name="survival_dropout")(features)
    risk = keras.layers.Dense(1, dtype="float32", name=survival.name)(features)
    return Heads({segmentation.name: mask_logits, survival.name: risk}, shared=bottleneck)


def _split_tasks(tasks):
    """The segmentation task and the survival task (or None), or a ValueError saying what was given."""
    by_kind = {kind: [t for t in tasks if t.kind == kind] for kind in ("segmentation", "survival")}
    if len(by_kind["segmentation"]) != 1 or len(by_kind["survival"]) > 1:
        given = ", ".join(f"{t.name!r} ({t.kind})" for t in tasks)
        raise ValueError(
            "deep_mts predicts one task of kind 'segmentation' and at most one of kind 'survival'; "
            f"got {given}."
        )
    return by_kind["segmentation"][0], (by_kind["survival"] or [None])[0]


def _split_inputs(inputs, levels):
    """The image inputs concatenated on channels (sorted by name), and the vector inputs (sorted)."""
    images = {n: t for n, t in inputs.items() if len(t.shape) in (4, 5)}
    vectors = [inputs[n] for n in sorted(inputs) if len(inputs[n].shape) == 2]
    others = {n: tuple(t.shape[1:]) for n, t in inputs.items() if len(t.shape) not in (2, 4, 5)}
    if others or not images:
        problem = f"got {others}" if others else "got none"
        raise ValueError(
            "deep_mts takes image inputs (H, W, C) or volumes (D, H, W, C), plus optional vector "
            f"inputs (d,) of clinical covariates; {problem}."
        )
    shapes = {n: tuple(t.shape[1:-1]) for n, t in images.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"deep_mts: the image inputs must share one spatial shape; got {shapes}.")
    multiple = 2 ** (levels - 1)
    for name, shape in shapes.items():
        if any(d % multiple for d in shape):
            raise ValueError(
                f"deep_mts: input {name!r} has spatial shape {shape}, but with levels={levels} every "
                f"spatial size must be a multiple of {multiple} (2 ** (levels - 1))."
            )
    tensors = [images[n] for n in sorted(images)]
    joined = tensors[0] if len(tensors) == 1 else keras.layers.Concatenate(name="images")(tensors)
    return joined, vectors
