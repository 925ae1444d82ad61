"""LightGBM model with its feature schema, trained with native categorical handling."""

from __future__ import annotations

import ctypes
import json
import math
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from loopml.errors import InvalidConfig, SchemaError

__all__ = ["GBMModel", "train"]

FORMAT = "loopml-lgbm/1"
ROW_LOOP_MAX = 64  # natively, batches up to this many rows go row by row through the one-row C API (see _OneRow)
_SKLEARN_NAMES = {"n_estimators": "num_boost_round", "subsample": "bagging_fraction", "subsample_freq": "bagging_freq",
                  "colsample_bytree": "feature_fraction", "min_child_samples": "min_data_in_leaf"}


class GBMModel:
    """A trained binary classifier: LightGBM booster + feature order + category vocabularies.

    ``predict_frame`` scores a DataFrame (training sets, batch scoring); ``predict_rows`` scores a
    few dicts (online requests) without building a DataFrame, which costs more than the trees.
    Unknown categories and missing values are passed to LightGBM as NaN (its missing value).

    A recalibrator fitted at training (``meta["calibration"]``, see :mod:`loopml.training.calibrate`)
    is part of the model: every ``predict_*`` applies it, so batch, evaluation and serving agree.
    ``contributions_*`` explain the raw (uncalibrated) log-odds with LightGBM's TreeSHAP.
    """

    def __init__(self, booster: lgb.Booster | None, features: Sequence[str], categories: Mapping[str, Sequence[str]],
                 meta: Mapping[str, Any] | None = None) -> None:
        self.booster = booster
        self.features = list(features)
        self.categories = {k: list(v) for k, v in categories.items()}
        self.meta = dict(meta or {})
        self._codes = {k: {c: float(i) for i, c in enumerate(v)} for k, v in self.categories.items()}
        self._encoders = [(f, self._codes.get(f)) for f in self.features]  # (feature, its codes if categorical)
        self._onnx: Any = None
        self._one_row: _OneRow | bool | None = None  # False: this booster cannot use it
        self.backend = "native"
        self.backend_reason = "no verified ONNX export loaded"
        self._calibrator: Any = None
        self.set_calibration(self.meta.get("calibration"))

    def set_calibration(self, record: Mapping[str, Any] | None) -> None:
        """Apply the calibrator described by ``record`` (from :func:`~loopml.training.calibrate.fit_calibrator`)."""
        if record is None or record.get("kind") == "identity":
            self._calibrator = None
        else:
            # lazy: the calibrators live with evaluation, and most models carry none
            from loopml.evaluation.calibration import calibrator_from_dict

            self._calibrator = calibrator_from_dict(record["params"])
        if record is None:
            self.meta.pop("calibration", None)
        else:
            self.meta["calibration"] = dict(record)

    def use_onnx(self, blob: bytes) -> None:
        """Score with ONNX Runtime from now on (``blob`` was verified at registration)."""
        from loopml.training.onnx import OnnxScorer

        self._onnx = OnnxScorer(blob)
        self.backend, self.backend_reason = "onnx", "verified ONNX export"

    def _predict(self, X: np.ndarray) -> np.ndarray:
        raw = self._predict_raw(X)
        if self._calibrator is None:
            return raw
        # keep served probabilities off exactly 0 and 1 (isotonic steps can reach them)
        return np.clip(self._calibrator.predict(raw), 1e-6, 1 - 1e-6)

    def _predict_raw(self, X: np.ndarray) -> np.ndarray:
        if self._onnx is not None:
            return self._onnx.predict(X)
        if len(X) <= ROW_LOOP_MAX and self._one_row is not False:
            # online requests: LightGBM's one-row scorer row by row, same scores (_OneRow)
            if self._one_row is None:
                booster = self._booster()
                # one score per row only: a multi-output booster (multiclass) writes one per class
                self._one_row = _OneRow(booster, len(self.features)) if booster.num_model_per_iteration() == 1 else False
            if self._one_row is not False:
                return self._one_row.predict(X)
        # One thread: for a handful of rows OpenMP start-up and spinning cost more than the trees,
        # and on a busy machine they can cost 10x more.
        return self._booster().predict(X, num_threads=1 if len(X) < 1000 else 0)

    def predict_raw_matrix(self, X: np.ndarray) -> np.ndarray:
        """Scores before recalibration of an encoded float64 matrix (see :meth:`encode_frame`)."""
        return self._predict_raw(X)

    def predict_raw_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Scores before recalibration (what a calibrator is fitted on)."""
        return self._predict_raw(self.encode_frame(frame))

    def contributions_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per-row SHAP contributions to the raw log-odds (LightGBM ``pred_contrib``), plus ``bias``.

        Each row's contributions sum to the raw log-odds of its uncalibrated score.
        """
        return self._contributions(self.encode_frame(frame))

    def contributions_rows(self, rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """:meth:`contributions_frame` for request dicts (as the Predictor receives them)."""
        return self._contributions(self.encode_rows(rows))

    def _contributions(self, X: np.ndarray) -> pd.DataFrame:
        out = self._booster().predict(X, pred_contrib=True, num_threads=1 if len(X) < 1000 else 0)
        return pd.DataFrame(np.asarray(out, dtype=float), columns=[*self.features, "bias"])

    def importance(self, kind: str = "gain") -> dict[str, float]:
        """Global importance per feature: total ``gain`` of its splits, or the number of ``split``s."""
        if kind not in ("gain", "split"):
            raise InvalidConfig(f"importance kind must be 'gain' or 'split'; got {kind!r}")
        values = self._booster().feature_importance(importance_type=kind)
        return {f: float(v) for f, v in zip(self.features, values, strict=True)}

    def encode_frame(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise SchemaError(f"cannot score: input lacks feature column(s) {missing}")
        X = np.empty((len(frame), len(self.features)), dtype=np.float64)
        for i, f in enumerate(self.features):
            col = frame[f]
            if f in self._codes:
                X[:, i] = col.map(self._codes[f]).astype("float64").to_numpy()
            else:
                X[:, i] = pd.to_numeric(col, errors="raise").astype("float64").to_numpy(na_value=np.nan)
        return X

    def encode_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        # one list per row, converted by numpy at once: assigning cell by cell into an array costs more than the trees
        nan = math.nan
        data = [[nan if (v := row.get(f)) is None else v if codes is None else codes.get(v, nan)
                 for f, codes in self._encoders] for row in rows]
        try:
            return np.array(data, dtype=np.float64).reshape(len(rows), len(self.features))
        except (TypeError, ValueError):
            bad = next(((f, row[f]) for row in rows for f, codes in self._encoders
                        if codes is None and row.get(f) is not None and not _is_number(row[f])), None)
            if bad is None:
                raise
            raise SchemaError(f"feature {bad[0]!r} must be a number; got {bad[1]!r}") from None

    def predict_frame(self, frame: pd.DataFrame) -> np.ndarray:
        return self._predict(self.encode_frame(frame))

    def predict_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self._predict(self.encode_rows(rows))

    def _booster(self) -> lgb.Booster:
        if self.booster is None:
            raise InvalidConfig("this GBMModel has no trained booster")
        return self.booster

    def to_bytes(self) -> bytes:
        doc = {"format": FORMAT, "features": self.features, "categories": self.categories, "meta": self.meta,
               "booster": self._booster().model_to_string()}
        return json.dumps(doc).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> GBMModel:
        doc = json.loads(blob)
        if doc.get("format") != FORMAT:
            raise InvalidConfig(f"artifact format must be {FORMAT!r}; got {doc.get('format')!r}")
        return cls(lgb.Booster(model_str=doc["booster"]), doc["features"], doc["categories"], doc["meta"])

    def num_trees(self) -> int:
        return self._booster().num_trees()


class _OneRow:
    """LightGBM's own one-row scorer (C API ``LGBM_BoosterPredictForMatSingleRowFast``), set up once per booster.

    ``Booster.predict`` checks and converts its input on every call, ~25 µs here, more than the trees of one
    row take (~9 µs for the flights model: ``bench_serving.py --onnx``); this calls the same predictor the same
    way (dense float64 rows, one thread), so the scores are identical. A small batch (an online micro-batch) goes
    row by row: ~10 µs a row against ``Booster.predict``'s ~25 µs a call plus ~9 a row. LightGBM serialises
    calls on a booster.
    """

    def __init__(self, booster: lgb.Booster, n_features: int) -> None:
        from lightgbm.basic import _LIB, _c_str, _safe_call  # the package does not wrap this entry point

        self._booster = booster  # the handle below points into it: keep it alive as long
        self._handle = ctypes.c_void_p()
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(-1),  # normal prediction, all trees
            ctypes.c_int(1), ctypes.c_int32(n_features), _c_str("num_threads=1"), ctypes.byref(self._handle)))
        weakref.finalize(self, _LIB.LGBM_FastConfigFree, self._handle)
        self._call, self._check = _LIB.LGBM_BoosterPredictForMatSingleRowFast, _safe_call
        self._n_features = n_features

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Scores of the rows of ``X`` (2-D, one row per score; a 1-D array is one row)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.shape[-1] != self._n_features or X.ndim > 2:  # the C API reads n_features doubles a row, whatever it gets
            raise SchemaError(f"cannot score: rows have {X.shape[-1]} values, the model has {self._n_features} features")
        X = X.reshape(-1, self._n_features)
        out, n = np.empty(len(X)), ctypes.c_int64()
        x, o, step = X.ctypes.data, out.ctypes.data, X.strides[0]
        call, check, handle, written, pointer = self._call, self._check, self._handle, ctypes.byref(n), ctypes.c_void_p
        for i in range(len(X)):  # every address as a c_void_p: the C function declares no argument types
            check(call(handle, pointer(x + i * step), written, pointer(o + 8 * i)))
        return out


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _native_params(params: Mapping[str, Any], features: Sequence[str]) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {"objective": "binary", "verbosity": -1, "num_threads": 2}
    rounds = 100
    for k, v in params.items():
        if k == "monotone":
            # {feature: +1 | -1} -> LightGBM's positional monotone_constraints
            unknown = sorted(set(v) - set(features))
            if unknown:
                raise InvalidConfig(f"model param 'monotone' names unknown feature(s) {unknown}; features are {list(features)}")
            bad = {f: d for f, d in v.items() if d not in (-1, 0, 1)}
            if bad:
                raise InvalidConfig(f"model param 'monotone' values must be -1, 0 or 1; got {bad}")
            out["monotone_constraints"] = [int(v.get(f, 0)) for f in features]
            continue
        name = _SKLEARN_NAMES.get(k, k)
        if name == "num_boost_round":
            rounds = int(v)
        else:
            out[name] = v
    return out, rounds


def train(frame: pd.DataFrame, *, features: Sequence[str], label: str, categorical: Sequence[str] = (),
          params: Mapping[str, Any] | None = None, init_model: GBMModel | None = None,
          meta: Mapping[str, Any] | None = None) -> GBMModel:
    """Fit LightGBM on the rows of ``frame`` whose ``label`` is known.

    Category vocabularies are the sorted values seen in training; ``init_model`` continues boosting
    from an existing model (stateful retraining) and keeps its vocabularies.
    """
    if label not in frame.columns:
        raise SchemaError(f"training frame has no label column {label!r}")
    rows = frame[frame[label].notna()]
    if len(rows) == 0:
        raise InvalidConfig("no labelled rows to train on (are the labels available by the cutoff?)")
    y = rows[label].astype("float64").to_numpy()
    if len(np.unique(y)) < 2:
        raise InvalidConfig(f"label {label!r} has a single class in the training rows; cannot fit a classifier")
    if init_model is not None:
        categories = init_model.categories
    else:
        categories = {c: sorted(str(v) for v in rows[c].dropna().unique()) for c in categorical}
    shell = GBMModel(None, features, categories)  # encoder only: no booster yet
    X = shell.encode_frame(rows)
    native, rounds = _native_params(params or {}, features)
    cat_idx = [i for i, f in enumerate(features) if f in categories]
    ds = lgb.Dataset(X, label=y, feature_name=list(features), categorical_feature=cat_idx, free_raw_data=True)
    booster = lgb.train(native, ds, num_boost_round=rounds,
                        init_model=init_model.booster if init_model is not None else None)
    return GBMModel(booster, features, categories, {**(meta or {}), "train_rows": len(rows),
                                                    "positive_rate": float(y.mean())})
