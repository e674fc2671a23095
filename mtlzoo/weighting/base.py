"""The one interface every weighting method keeps, the registry, and ``chain``.

A method is a ``Weighting`` (a Keras layer, so its state lives in Keras variables that
train, distribute, save and reload with the model). It is asked two things per step:

- ``loss_weights(losses, present)``: the per-task losses of the global batch (values only) in,
  task weights (and an optional penalty added to the total) out. The model minimises
  ``sum_t w_t * L_t + penalty``; weights may depend on trainable variables of the method
  (uncertainty weighting learns them this way).
- ``gradient_weights(gram, losses, present)``, only for methods that set ``uses_gradients``:
  the Gram matrix ``gram[i, j] = g_i . g_j`` of the per-task gradients (of the shared
  parameters, or of the shared representation with ``gradients="features"``) in, weights ``c``
  out; the shared parameters are updated along ``sum_t c_t g_t``. Every gradient method here
  (PCGrad and CAGrad included) is a linear combination of the task gradients, so weights
  describe it fully.

``present`` (float32, shape (T,)) is 1 for a task with at least one labelled example (a
non-zero sample weight) in the global batch and 0 for a task without: its loss and gradient
are exactly zero, and it takes no part in the step. Every method here then combines the
present tasks as if they were all the tasks (no division by a zero norm or loss, no mean
shrunk by absent tasks), and leaves its state for the absent ones as it was: DWA's epoch
means count only the batches that had the task, FAMO and GradNorm do not move an absent task's
logit or weight (nor its Adam moments), and uncertainty weighting gives an absent task's
log-variance no gradient.

Task-specific parameters (a task's head) always get their own task's gradient, as in MGDA.

``bind`` also gives a method each task's role (``main``, ``auxiliary``, ``adversarial``;
``task_roles``): gradient-similarity gating uses it, the others treat all tasks alike.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Iterable, Mapping

import keras
from keras import ops

GRADIENT_SOURCES = ("parameters", "features")

_REGISTRY: dict[str, type["Weighting"]] = {}


def register_weighting(name: str):
    """Class decorator: make a ``Weighting`` available by ``name`` in recipes and ``compile``."""

    def wrap(cls):
        if name in _REGISTRY:
            raise ValueError(f"A weighting named {name!r} is already registered.")
        cls.method_name = name
        _REGISTRY[name] = cls
        return keras.saving.register_keras_serializable(package="mtlzoo")(cls)

    return wrap


def list_weightings(gradients: bool | None = None) -> list[str]:
    """Registered names; ``gradients=True`` / ``False`` keeps gradient / loss methods only."""
    return sorted(n for n, c in _REGISTRY.items() if gradients is None or c.uses_gradients == gradients)


def masked_softmax(logits, present):
    """``softmax`` over the present tasks (0 for the absent ones; all 0 if none is present)."""
    logits = ops.convert_to_tensor(logits)  # a state variable, on JAX, is no array to ops.where
    shifted = logits - ops.max(ops.where(present > 0, logits, -1e30))
    exp = ops.exp(ops.minimum(shifted, 0.0)) * present
    return exp / ops.maximum(ops.sum(exp), 1e-30)


def masked_mean(values, present):
    """The mean of ``values`` over the present tasks (0 if none is present)."""
    return ops.sum(values * present) / ops.maximum(ops.sum(present), 1.0)


class Weighting(keras.layers.Layer):
    """Base class: unitary scalarization (every task weight 1, no penalty)."""

    uses_gradients = False
    method_name = "weighting"

    def __init__(self, **kwargs):
        kwargs.setdefault("name", self.method_name)
        super().__init__(**kwargs)
        self.task_names: tuple[str, ...] = ()
        self.task_roles: tuple[str, ...] = ()

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def bind(self, task_names: Iterable[str], roles: Iterable[str] | None = None) -> "Weighting":
        """Create the method's state for these tasks (``compile`` calls this); ``roles``
        defaults to ``main`` for every task."""
        names = self.check_tasks(task_names, roles)
        if self.built and names != self.task_names:
            raise ValueError(
                f"Weighting {self.name!r} is already bound to tasks {list(self.task_names)}; "
                f"make a new one for {list(names)}."
            )
        self.task_names = names
        self.task_roles = tuple(roles) if roles is not None else ("main",) * len(names)
        if not self.built:
            self.build(len(names))
        return self

    def check_tasks(self, task_names: Iterable[str], roles: Iterable[str] | None = None) -> tuple[str, ...]:
        """Check the method's options against these tasks (and their roles) without creating any
        state (recipe validation runs before a multi-worker strategy may start TensorFlow)."""
        names = tuple(task_names)
        if not names:
            raise ValueError("A weighting needs at least one task.")
        if roles is not None and len(tuple(roles)) != len(names):
            raise ValueError(f"Got {len(tuple(roles))} roles for {len(names)} tasks.")
        return names

    def build(self, num_tasks: int):
        self.built = True

    def loss_weights(self, losses, present):
        """``(weights, penalty)`` for the per-task loss values ``losses`` (shape (T,)) of a batch
        where the tasks with ``present == 1`` have labels."""
        return ops.ones_like(losses), None

    def gradient_weights(self, gram, losses, present):
        """Weights of the per-task gradients given their Gram matrix (gradient methods only)."""
        raise NotImplementedError(f"{type(self).__name__} does not combine gradients.")

    def end_epoch(self) -> None:
        """Called after every training epoch (methods with epoch-level state override it)."""

    def state_variable(self, name: str, shape, initializer="zeros", dtype="float32"):
        """A non-trainable state variable that every replica updates to the same value."""
        return self.add_weight(
            name=name, shape=shape, initializer=initializer, dtype=dtype, trainable=False,
            aggregation="only_first_replica",
        )

    def get_build_config(self):
        # bind() builds from the task names, which compile() passes again on reload.
        return None

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        for key in ("trainable", "dtype"):
            config.pop(key, None)
        return config


class GradientWeighting(Weighting):
    """Base of methods that combine per-task gradients.

    Args:
        gradients: ``"parameters"`` (the gradients of the shared parameters, the methods as
            published) or ``"features"`` (the gradients of the shared representation, one
            activation per example: far cheaper, the "feature-level" variant; MGDA-UB is MGDA
            this way). The weights found are then applied to the parameter gradients.
    """

    uses_gradients = True

    def __init__(self, gradients: str = "parameters", **kwargs):
        if gradients not in GRADIENT_SOURCES:
            raise ValueError(f"gradients must be one of {list(GRADIENT_SOURCES)}, got {gradients!r}.")
        super().__init__(**kwargs)
        self.gradients = gradients

    def get_config(self):
        return {**super().get_config(), "gradients": self.gradients}


class Seeded:
    """Mixin for methods that draw random numbers: ``seed`` seeds the method's own generator,
    whose state lives in a variable, so every replica (and a reloaded model) draws alike."""

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.seed = int(seed)

    def build(self, num_tasks):
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        super().build(num_tasks)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="mtlzoo")
class Chain(Weighting):
    """Loss weightings applied one after another, optionally ending in one gradient method.

    ``chain("uncertainty", "pcgrad")`` learns uncertainty weights for the losses and then
    combines the gradients of the weighted losses with PCGrad.
    """

    def __init__(self, methods, **kwargs):
        kwargs.setdefault("name", "chain")
        super().__init__(**kwargs)
        self.methods = [get(m) for m in methods]
        if not self.methods:
            raise ValueError("chain() needs at least one method.")
        gradient = [m for m in self.methods if m.uses_gradients]
        if len(gradient) > 1 or (gradient and gradient[0] is not self.methods[-1]):
            raise ValueError(
                "A chain may hold at most one gradient method, and it must come last; got "
                f"{[m.method_name for m in self.methods]}."
            )
        self.uses_gradients = bool(gradient)
        if gradient:
            self.gradients = gradient[0].gradients

    def bind(self, task_names, roles=None):
        for method in self.methods:
            method.bind(task_names, roles)
        return super().bind(task_names, roles)

    def check_tasks(self, task_names, roles=None):
        for method in self.methods:
            method.check_tasks(task_names, roles)
        return super().check_tasks(task_names, roles)

    def loss_weights(self, losses, present):
        weights, penalty = ops.ones_like(losses), None
        for method in self.methods:
            w, p = method.loss_weights(losses * weights, present)
            weights = weights * w
            if p is not None:
                penalty = p if penalty is None else penalty + p
        return weights, penalty

    def gradient_weights(self, gram, losses, present):
        return self.methods[-1].gradient_weights(gram, losses, present)

    def end_epoch(self):
        for method in self.methods:
            method.end_epoch()

    def get_config(self):
        config = super().get_config()
        config["methods"] = [keras.saving.serialize_keras_object(m) for m in self.methods]
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["methods"] = [keras.saving.deserialize_keras_object(m) for m in config["methods"]]
        return cls(**config)


def chain(*methods) -> Chain:
    """Compose loss weightings (and one final gradient method); see ``Chain``."""
    return Chain(list(methods))


def get(spec) -> Weighting:
    """A fresh ``Weighting`` from a name, ``{"name": ..., **options}``, a list (a chain) or an
    instance (returned as is). ``None`` is unitary scalarization."""
    if spec is None:
        spec = "unitary"
    if isinstance(spec, Weighting):
        return spec
    if isinstance(spec, (list, tuple)):
        return Chain(list(spec))
    options: dict[str, Any] = {}
    if isinstance(spec, Mapping):
        options = dict(spec)
        if "name" not in options:
            raise ValueError(f"A weighting mapping needs a 'name' key; got keys {sorted(options)}.")
        spec = options.pop("name")
    if not isinstance(spec, str):
        raise TypeError(
            f"A weighting is a name, a mapping with 'name', a list of them or a Weighting; got {spec!r}."
        )
    if spec not in _REGISTRY:
        hint = difflib.get_close_matches(spec, list(_REGISTRY), n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(f"Unknown weighting {spec!r}{did_you_mean}; registered: {list_weightings()}.")
    cls = _REGISTRY[spec]
    accepted = options_of(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"Weighting {spec!r} takes no option(s) {unknown}; it accepts {accepted}.")
    return cls(**options)


def options_of(cls) -> list[str]:
    """The options a registered method's constructor takes (besides Keras layer arguments)."""
    names = {"name"}
    for klass in cls.__mro__:
        if klass is Weighting:
            break
        if "__init__" in vars(klass):
            parameters = inspect.signature(klass.__init__).parameters.values()
            names |= {p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"}
    return sorted(names)


class AdamState:
    """A tiny Adam for a method's own (T,) parameters (FAMO's logits, GradNorm's weights),
    kept in the method's state variables so it runs inside the compiled train step. Each task
    keeps its own step count, so a task that skips steps (absent from a batch) keeps its
    moments and bias correction as they were."""

    def __init__(self, owner: Weighting, num_tasks: int, learning_rate: float, prefix: str):
        self.learning_rate = learning_rate
        self.m = owner.state_variable(f"{prefix}_m", (num_tasks,))
        self.v = owner.state_variable(f"{prefix}_v", (num_tasks,))
        self.t = owner.state_variable(f"{prefix}_t", (num_tasks,))

    def step(self, grad, active, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        """The step to add to the parameters for this gradient, 0 where ``active`` is 0; updates
        the moments of the active tasks only."""
        t = self.t + active
        m = active * (beta_1 * self.m + (1 - beta_1) * grad) + (1 - active) * self.m
        v = active * (beta_2 * self.v + (1 - beta_2) * grad * grad) + (1 - active) * self.v
        self.t.assign(t)
        self.m.assign(m)
        self.v.assign(v)
        m_hat = m / (1 - ops.power(beta_1, ops.maximum(t, 1.0)))
        v_hat = v / (1 - ops.power(beta_2, ops.maximum(t, 1.0)))
        return -active * self.learning_rate * m_hat / (ops.sqrt(v_hat) + epsilon)
