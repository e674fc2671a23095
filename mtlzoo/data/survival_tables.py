"""Tabular survival benchmarks from the data sets that ship inside scikit-survival (no download).

Each dataset reads its table with ``sksurv.datasets`` (Pölsterl, "scikit-survival: A Library for
Time-to-Event Analysis Built on Top of scikit-learn", JMLR 21(212), 2020); install them with
``pip install "mtlzoo[survival]"``. Times are in days. Tasks are of kind ``survival``: target
float32 ``(N, 2)`` = ``[time, event]`` (``mtlzoo.survival``), weight 1 for every patient.

- ``actg320`` (1,151 patients; ``load_aids``): the ACTG 320 trial of indinavir added to two
  nucleoside analogues in HIV patients with CD4 <= 200 (Hammer et al., "A controlled trial of two
  nucleoside analogues plus indinavir in persons with human immunodeficiency virus infection and
  CD4 cell counts of 200 per cubic millimeter or less", NEJM 337:725-733, 1997; the table of
  Hosmer, Lemeshow & May, Applied Survival Analysis, 2nd ed., 2008). Two tasks on the same
  patients: ``aids`` (time to AIDS diagnosis or death; 96 events) and ``death`` (26 events).
  ``txgrp`` is dropped: ``tx`` (indinavir or not) is a function of it, and its two other arms
  hold 3 patients.
- ``gbsg2`` (686 patients; ``load_gbsg2``): the German Breast Cancer Study Group 2 trial of
  node-positive breast cancer (Schumacher et al., "Randomized 2 x 2 trial evaluating hormonal
  treatment and the duration of chemotherapy in node-positive breast cancer patients", J Clin
  Oncol 12(10):2086-2093, 1994). Task ``recurrence``: recurrence-free survival (299 events).
- ``whas500`` (500 patients; ``load_whas500``): the Worcester Heart Attack Study (Hosmer,
  Lemeshow & May, Applied Survival Analysis, 2nd ed., 2008). Task ``death``: survival after
  admission for myocardial infarction (215 events).
- ``flchain`` (7,874 patients; ``load_flchain``): serum free light chains in a sample of
  Olmsted County residents (Dispenzieri et al., "Use of nonclonal serum immunoglobulin free
  light chains to predict overall survival in the general population", Mayo Clin Proc
  87(6):517-523, 2012). Task ``death`` (2,169 events). ``chapter`` (the chapter of the cause of
  death) is dropped: it is recorded exactly for the patients who died, so it leaks the label.
  The 3 deaths at time 0 get time 0.5 (time > 0 is the ``mtlzoo.survival`` convention; the Cox
  likelihood and Harrell's C-index depend only on the order of the times, which is unchanged).

Preprocessing, with statistics of the training split only: a missing numeric value becomes the
training median, a missing category the training mode, and every covariate with missing values
in the table (FLCHAIN's ``creatinine``) gains a 0/1 ``<name>_missing`` column. Categorical
covariates are one-hot encoded without their first level (the reference, so the columns are not
collinear with a model's bias); numeric covariates are standardised with the training mean and
standard deviation. The result is the one input ``features``, float32 ``(F,)``.

Splits: the patients are shuffled (``seed``) into ``folds`` folds stratified by the first task's
event indicator; fold ``fold`` is the test split, and ``validation_fraction`` of the remaining
patients (stratified likewise) is the validation split. Over ``fold = 0 .. folds - 1`` every
patient is tested exactly once. ``frame(split)`` gives the same split as a DataFrame and
scikit-survival's structured ``y``, to fit ``sksurv`` models on exactly the same data.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np

from mtlzoo.data.base import Dataset, MultiTaskArrays, check_int_option, register_dataset
from mtlzoo.data.files import DataIntegrityError
from mtlzoo.tasks import Task

ZERO_TIME = 0.5  # replaces follow-up time 0 (times are whole days, so the order is kept)
Y_DTYPE = np.dtype([("event", "?"), ("time", "<f8")])


def _sksurv_datasets():
    try:
        from sksurv import datasets
    except ImportError as err:
        raise ImportError(
            'The survival tables need scikit-survival: pip install "mtlzoo[survival]".'
        ) from err
    return datasets


@functools.lru_cache(maxsize=None)
def _read(loader: str, endpoints: tuple[str | None, ...], drop: tuple[str, ...]):
    """``(covariates, ((time, event), ...))`` for each endpoint, cached: FLCHAIN's ARFF takes
    seconds to parse. Callers must not modify the result (``read_table`` copies it)."""
    load = getattr(_sksurv_datasets(), loader)
    covariates, outcomes = None, []
    for endpoint in endpoints:
        x, y = load(endpoint=endpoint) if endpoint else load()
        if covariates is None:
            covariates = x
        elif not covariates.equals(x):  # the tasks must describe the same patients, row by row
            raise DataIntegrityError(f"sksurv.datasets.{loader}: the covariates of endpoint {endpoint!r} differ "
                                     f"from those of {endpoints[0]!r}.")
        event_field, time_field = y.dtype.names  # e.g. (censor, time) or (censor_d, time_d)
        time = np.asarray(y[time_field], np.float64)
        if not np.isfinite(time).all() or (time < 0).any():
            raise DataIntegrityError(f"sksurv.datasets.{loader}: follow-up times must be finite and >= 0.")
        outcomes.append((np.where(time == 0, ZERO_TIME, time), np.asarray(y[event_field], bool)))
    return covariates.drop(columns=list(drop)).reset_index(drop=True), tuple(outcomes)


class SurvivalTable(Dataset):
    """A scikit-survival table as a cross-validated multi-task survival dataset (module docstring).

    Args:
        folds: number of cross-validation folds (>= 2, at most the first task's event count).
        fold: the fold held out as the test split, ``0 <= fold < folds``.
        seed: seed of the shuffle into folds and of the validation split.
        validation_fraction: share of the non-test patients held out for validation, in (0, 0.5).
    """

    loader: str = ""
    # (task name, the loader's endpoint argument or None); the first task stratifies the folds.
    endpoints: tuple[tuple[str, str | None], ...] = ()
    drop: tuple[str, ...] = ()

    def __init__(self, *, folds: int = 5, fold: int = 0, seed: int = 0, validation_fraction: float = 0.15):
        check_int_option(self.name, "folds", folds, minimum=2)
        check_int_option(self.name, "fold", fold, minimum=0)
        check_int_option(self.name, "seed", seed, minimum=0)
        if fold >= folds:
            raise ValueError(f"{self.name}: option fold must be in 0..{folds - 1} (folds={folds}), got {fold}.")
        if (isinstance(validation_fraction, bool) or not isinstance(validation_fraction, numbers.Real)
                or not 0 < validation_fraction < 0.5):
            raise ValueError(f"{self.name}: option validation_fraction must be a number strictly between 0 and "
                             f"0.5, got {validation_fraction!r}.")
        self.folds, self.fold, self.seed = int(folds), int(fold), int(seed)
        self.validation_fraction = float(validation_fraction)
        self._splits: dict[str, np.ndarray] | None = None
        self._frames: dict[str, tuple] = {}

    # -- the table ----------------------------------------------------------------------------

    def read_table(self):
        """``(covariates DataFrame, {task: (time float64 (N,), event bool (N,))})``: the raw
        table of every patient, before encoding, in the order of ``sksurv.datasets``."""
        covariates, outcomes = _read(self.loader, tuple(e for _, e in self.endpoints), self.drop)
        return covariates.copy(), {name: (t.copy(), e.copy()) for (name, _), (t, e) in zip(self.endpoints, outcomes)}

    def tasks(self) -> list[Task]:
        return [Task(name=name, kind="survival") for name, _ in self.endpoints]

    def input_spec(self) -> dict[str, tuple[int, ...]]:
        return {"features": (len(self.feature_names()),)}

    def feature_names(self) -> list[str]:
        """Names of the ``features`` columns: numeric covariates, ``<name>_missing`` indicators
        and ``<name>=<level>`` one-hot columns, in the table's column order."""
        return self._encoding(*self._table_and_train())[0]

    def numeric_features(self) -> list[str]:
        """The standardised columns of ``features`` (the table's numeric covariates)."""
        covariates, _ = self._table_and_train()
        return [c for c in covariates.columns if not _is_categorical(covariates[c])]

    # -- splits -------------------------------------------------------------------------------

    def indices(self, split: str) -> np.ndarray:
        """Sorted row numbers (into ``read_table``) of the patients in ``split``."""
        self.check_split(split)
        if self._splits is None:
            self._splits = self._make_splits()
        return self._splits[split]

    def _make_splits(self) -> dict[str, np.ndarray]:
        _, outcomes = self.read_table()
        event = outcomes[self.endpoints[0][0]][1]
        if self.folds > event.sum():
            raise ValueError(f"{self.name}: option folds ({self.folds}) exceeds the {int(event.sum())} events of task "
                             f"{self.endpoints[0][0]!r}; every fold needs an event.")
        # Deal each event class, shuffled, round-robin over the folds; the second class starts where the
        # first stopped, so fold sizes differ by at most one. Depends on (seed, folds) only, not on fold.
        rng = np.random.default_rng([self.seed, self.folds])
        fold_of, start = np.empty(len(event), np.int64), 0
        for cls in (True, False):
            members = rng.permutation(np.flatnonzero(event == cls))
            fold_of[members] = (start + np.arange(len(members))) % self.folds
            start += len(members)
        rest = np.flatnonzero(fold_of != self.fold)
        rng = np.random.default_rng([self.seed, self.folds, self.fold])
        validation = np.concatenate([
            rng.permutation(members)[:round(self.validation_fraction * len(members))]
            for members in (rest[event[rest]], rest[~event[rest]])
        ])
        return {"train": np.setdiff1d(rest, validation), "validation": np.sort(validation),
                "test": np.flatnonzero(fold_of == self.fold)}

    # -- encoding -----------------------------------------------------------------------------

    def _table_and_train(self):
        covariates, _ = self.read_table()
        return covariates, covariates.iloc[self.indices("train")]

    def _encoding(self, covariates, train):
        """``(feature names, encode)``: ``encode(rows DataFrame) -> float32 (n, F)`` with every
        statistic (fill value, mean, std) taken from ``train``."""
        names, steps = [], []
        for column in covariates.columns:
            values, train_values = covariates[column], train[column]
            categorical = _is_categorical(values)
            # From the whole table: which columns may be missing is part of the schema, and it fixes F.
            has_missing = bool(values.isna().any())
            if categorical:
                fill = train_values.mode().iloc[0] if has_missing else None
                levels = list(values.cat.categories[1:])
                names += [f"{column}={level}" for level in levels]
            else:
                fill = float(train_values.median()) if has_missing else None
                filled = train_values.fillna(fill) if has_missing else train_values
                mean, std = float(filled.mean()), float(filled.std(ddof=0))
                levels = (mean, std if std > 0 else 1.0)
                names.append(column)
            if has_missing:
                names.append(f"{column}_missing")
            steps.append((column, categorical, fill, levels, has_missing))

        def encode(rows):
            blocks = []
            for column, categorical, fill, levels, has_missing in steps:
                values = rows[column]
                missing = values.isna().to_numpy()
                if has_missing:
                    values = values.fillna(fill)
                if categorical:
                    blocks += [(values == level).to_numpy(np.float64) for level in levels]
                else:
                    mean, std = levels
                    blocks.append((values.to_numpy(np.float64) - mean) / std)
                if has_missing:
                    blocks.append(missing.astype(np.float64))
            return np.stack(blocks, axis=1).astype(np.float32)

        return names, encode

    def frame(self, split: str):
        """``(X, {task: y})`` for ``split``: ``X`` a DataFrame of the encoded, standardised
        covariates (the same float32 values as the ``features`` input, named by
        ``feature_names()``) and ``y`` scikit-survival's structured array (fields ``event``,
        ``time``), ready for e.g. ``sksurv.linear_model.CoxPHSurvivalAnalysis().fit(X, y)``."""
        import pandas as pd

        if split not in self._frames:
            covariates, outcomes = self.read_table()
            rows = self.indices(split)
            names, encode = self._encoding(covariates, covariates.iloc[self.indices("train")])
            x = pd.DataFrame(encode(covariates.iloc[rows]), columns=names)
            ys = {}
            for task, (time, event) in outcomes.items():
                y = np.empty(len(rows), Y_DTYPE)
                y["event"], y["time"] = event[rows], time[rows]
                ys[task] = y
            self._frames[split] = (x, ys)
        x, ys = self._frames[split]
        return x.copy(), {task: y.copy() for task, y in ys.items()}

    def load(self, split: str) -> MultiTaskArrays:
        x, ys = self.frame(split)
        targets = {task: np.stack([y["time"], y["event"]], axis=1).astype(np.float32) for task, y in ys.items()}
        weights = {task: np.ones(len(x), np.float32) for task in ys}
        return MultiTaskArrays({"features": x.to_numpy(np.float32)}, targets, weights)


def _is_categorical(values) -> bool:
    return values.dtype.name == "category"


@register_dataset("actg320")
class Actg320(SurvivalTable):
    """ACTG 320 HIV trial, 1,151 patients: tasks ``aids`` (AIDS or death) and ``death``."""

    loader = "load_aids"
    endpoints = (("aids", "aids"), ("death", "death"))
    drop = ("txgrp",)


@register_dataset("gbsg2")
class Gbsg2(SurvivalTable):
    """German Breast Cancer Study Group 2, 686 patients: task ``recurrence``."""

    loader = "load_gbsg2"
    endpoints = (("recurrence", None),)


@register_dataset("whas500")
class Whas500(SurvivalTable):
    """Worcester Heart Attack Study, 500 patients: task ``death``."""

    loader = "load_whas500"
    endpoints = (("death", None),)


@register_dataset("flchain")
class Flchain(SurvivalTable):
    """Serum free light chains in the general population, 7,874 people: task ``death``."""

    loader = "load_flchain"
    endpoints = (("death", None),)
    drop = ("chapter",)
