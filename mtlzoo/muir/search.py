"""MUiR's alignment search: which hypermodule generates each block, decided by validation loss."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from mtlzoo.muir.hypermodules import HypermoduleBank
from mtlzoo.muir.reparameterize import find_bank


class AlignmentSearch(keras.callbacks.Callback):
    """MUiR's stochastic (1 + lambda) search for which hypermodule generates each block.

    One training epoch is one generation (set ``steps_per_epoch`` in ``fit`` to the steps per
    generation). When an epoch begins, a random ``location_fraction`` of the block locations
    each get lambda challengers (hypermodules sampled in proportion to how many locations use
    them, or with ``fresh_probability`` an unused one), mixed with the incumbent by the bank's
    softmax. Its logits start with the challengers sharing ``challenger_share`` of the
    probability (None: all candidates equal) and train with the weights. When the epoch ends,
    every location keeps the hypermodule with the largest total weight. lambda is the bank's
    ``num_candidates - 1``.

    With ``monitor`` (default ``"val_loss"``, from ``fit``'s validation data) the best
    generation's weights and alignment are restored when the search ends, as in the paper:
    after ``generations`` generations, the later epochs then training that alignment without
    challengers, or (``generations=None``) when training ends. The search state lives in the
    bank's variables (assignment, logits, generation), so it is saved with the model and a
    resumed run continues where it stopped.
    """

    def __init__(self, challenger_share: float | None = 0.5, location_fraction: float = 0.5,
                 fresh_probability: float = 0.01, monitor: str | None = "val_loss", seed: int = 0,
                 generations: int | None = None):
        super().__init__()
        if generations is not None and (isinstance(generations, bool) or not isinstance(generations, int)
                                        or generations < 1):
            raise ValueError(f"generations must be None or a positive integer, got {generations!r}.")
        self.generations = generations
        for name, value in (("location_fraction", location_fraction), ("fresh_probability", fresh_probability)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}.")
        if challenger_share is not None and not 0 < challenger_share < 1:
            raise ValueError(f"challenger_share must be None or strictly between 0 and 1, got {challenger_share!r}.")
        self.challenger_share = challenger_share
        self.location_fraction = float(location_fraction)
        self.fresh_probability = float(fresh_probability)
        self.monitor = monitor
        self.seed = int(seed)
        self.history: list[dict] = []
        self.best_generation: int | None = None
        self._best: tuple[float, list] | None = None
        self._in_generation = False

    @property
    def bank(self) -> HypermoduleBank:
        return find_bank(self.model)

    def on_train_begin(self, logs=None):
        if self.bank.num_candidates < 2:
            raise ValueError(
                "AlignmentSearch needs challengers: build the MuirModel with num_candidates = 1 + lambda >= 2."
            )
        self._best = None

    def searching(self) -> bool:
        """Whether generations remain (counted by the bank, so it holds across resumptions)."""
        return self.generations is None or int(ops.convert_to_numpy(self.bank.generation)) < self.generations

    def on_epoch_begin(self, epoch, logs=None):
        self._in_generation = self.searching()
        if self._in_generation:
            self.start_generation()

    def on_epoch_end(self, epoch, logs=None):
        if not self._in_generation:
            return
        self.keep_winners()
        psi = self.bank.incumbents()
        record = {"generation": int(ops.convert_to_numpy(self.bank.generation)),
                  "hypermodules_in_use": int(len(np.unique(psi)))}
        if self.monitor is not None:
            if logs is None or self.monitor not in logs:
                raise ValueError(
                    f"AlignmentSearch monitors {self.monitor!r}, which fit did not report (available: "
                    f"{sorted(logs or {})}); pass validation_data to fit, or monitor=None."
                )
            record[self.monitor] = float(logs[self.monitor])
            # Scored, as in the paper, with the candidates still mixed; kept with the winners.
            if self._best is None or record[self.monitor] < self._best[0]:
                self._best = (record[self.monitor], self.model.get_weights())
                self.best_generation = record["generation"]
        self.history.append(record)
        if not self.searching():
            self.restore_best()

    def on_train_end(self, logs=None):
        self.restore_best()

    def restore_best(self) -> None:
        """Back to the best generation's weights and alignment, if one was scored.

        The generation counter is not rolled back: it counts the generations run, so a finished
        search stays finished.
        """
        if self._best is not None:
            generation = int(ops.convert_to_numpy(self.bank.generation))
            self.model.set_weights(self._best[1])
            self.bank.generation.assign(generation)
            self._best = None

    def keep_winners(self) -> None:
        """Each location keeps its highest-weighted candidate; the challengers are dropped."""
        bank = self.bank
        assignment = np.asarray(ops.convert_to_numpy(bank.assignment))
        weights = np.asarray(ops.convert_to_numpy(bank.mix_weights()))
        # A hypermodule drawn twice for one location counts with both of its weights.
        totals = np.zeros((len(assignment), bank.num_hypermodules))
        np.add.at(totals, (np.arange(len(assignment))[:, None], assignment), weights)
        winners = totals.argmax(axis=1)
        bank.assignment.assign(np.repeat(winners[:, None], bank.num_candidates, axis=1).astype("int32"))
        bank.set_mix_logits(np.zeros(weights.shape))

    def start_generation(self) -> None:
        """Give a random part of the locations challengers, and count the generation."""
        bank = self.bank
        generation = int(ops.convert_to_numpy(bank.generation))
        rng = np.random.default_rng([self.seed, generation])
        incumbents = bank.incumbents()
        challengers = bank.num_candidates - 1
        usage = np.bincount(incumbents, minlength=bank.num_hypermodules).astype("float64")
        unused = np.flatnonzero(usage == 0)
        assignment = np.repeat(incumbents[:, None], bank.num_candidates, axis=1)
        logits = np.zeros(assignment.shape, "float32")
        chosen = np.flatnonzero(rng.random(len(incumbents)) < self.location_fraction)
        for location in chosen:
            weights = usage.copy()
            weights[incumbents[location]] = 0  # a challenger must differ from the incumbent
            for slot in range(1, challengers + 1):
                if len(unused) and (rng.random() < self.fresh_probability or weights.sum() == 0):
                    assignment[location, slot] = rng.choice(unused)
                elif weights.sum() > 0:
                    assignment[location, slot] = rng.choice(len(weights), p=weights / weights.sum())
            if self.challenger_share is not None:  # else all candidates start equal
                logits[location, 0] = np.log(1 - self.challenger_share)
                logits[location, 1:] = np.log(self.challenger_share / challengers)
        bank.assignment.assign(assignment.astype("int32"))
        bank.set_mix_logits(logits)
        bank.generation.assign(generation + 1)
