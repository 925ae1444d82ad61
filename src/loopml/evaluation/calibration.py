"""Calibration: how far scores are from frequencies, and recalibrators that close the gap.

:func:`expected_calibration_error` and :func:`reliability_curve` bin the scores the way
``sklearn.calibration.calibration_curve`` does (equal-width or equal-mass bins, a score on an edge
goes to the lower bin). The recalibrators are components with ``fit``/``predict`` whose learned state
serialises to a JSON-safe dict (``to_dict`` / :func:`calibrator_from_dict`), so a calibrator can be
stored beside a model version without pickle.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, log_softmax, logit, softmax
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression

from loopml.errors import InvalidConfig, NotReady, SchemaError
from loopml.evaluation._inputs import _EPS, _bin_ids, _binary_inputs, _check_choice, _row_log_loss

__all__ = [
    "IdentityCalibrator",
    "IsotonicCalibrator",
    "PlattCalibrator",
    "ReliabilityCurve",
    "TemperatureScaling",
    "calibrator_from_dict",
    "choose_calibrator",
    "expected_calibration_error",
    "reliability_curve",
]

_LBFGS_OPTIONS = {"gtol": 1e-10, "ftol": 1e-15, "maxiter": 1000}
_LOG_T_BOUNDS = (float(np.log(0.01)), float(np.log(100.0)))  # temperatures from 1/100 to 100


class ReliabilityCurve(NamedTuple):
    """Per non-empty bin: mean predicted score, observed fraction of positives, row count."""

    mean_predicted: np.ndarray
    fraction_positive: np.ndarray
    count: np.ndarray


def reliability_curve(y: Any, p: Any, *, n_bins: int = 10, strategy: str = "uniform") -> ReliabilityCurve:
    """Mean score, fraction of positives and count in each non-empty bin.

    Parameters
    ----------
    y
        Binary labels (0/1).
    p
        Predicted probabilities of the positive class.
    n_bins
        Number of bins before empty ones are dropped.
    strategy
        ``"uniform"``: equal-width bins on [0, 1]; ``"quantile"``: edges at the score quantiles, so
        bins hold about the same number of rows (ties can leave some empty).

    Returns
    -------
    ReliabilityCurve
        ``(mean_predicted, fraction_positive, count)``, each of shape (non-empty bins,). The first two
        equal ``calibration_curve(y, p, n_bins=n_bins, strategy=strategy)[::-1]``.

    Examples
    --------
    >>> reliability_curve([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9], n_bins=2).fraction_positive
    array([0., 1.])
    """
    y, p = _binary_inputs(y, p)
    ids = _bin_ids(p, n_bins, strategy)
    count = np.bincount(ids, minlength=n_bins)
    sums = np.bincount(ids, weights=p, minlength=n_bins)
    positives = np.bincount(ids, weights=y, minlength=n_bins)
    keep = count > 0
    return ReliabilityCurve(sums[keep] / count[keep], positives[keep] / count[keep], count[keep])


def expected_calibration_error(y: Any, p: Any, *, n_bins: int = 10, strategy: str = "uniform") -> float:
    """Expected calibration error: the count-weighted mean of |mean score - fraction positive| per bin.

    Parameters
    ----------
    y, p, n_bins, strategy
        As in :func:`reliability_curve`.

    Examples
    --------
    >>> round(expected_calibration_error([0, 1, 1, 1], [0.2, 0.2, 0.9, 0.9], n_bins=2), 6)
    0.2
    """
    curve = reliability_curve(y, p, n_bins=n_bins, strategy=strategy)
    weights = curve.count / curve.count.sum()
    return float(np.sum(weights * np.abs(curve.mean_predicted - curve.fraction_positive)))


class _Calibrator(BaseEstimator):
    """Shared serialisation for the binary and multiclass recalibrators."""

    kind: str = ""
    _state: tuple[str, ...] = ()

    def _check_fitted(self) -> None:
        if not all(hasattr(self, name) for name in self._state):
            raise NotReady(f"{type(self).__name__} is not fitted yet; call fit() before predict or to_dict.")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description: ``{"kind", "params", "state"}`` (floats and lists of floats only)."""
        self._check_fitted()
        values = {name: getattr(self, name) for name in self._state}
        state = {k: v.tolist() if isinstance(v, np.ndarray) else float(v) for k, v in values.items()}
        return {"kind": self.kind, "params": self.get_params(), "state": state}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Rebuild a fitted calibrator from :meth:`to_dict` output; predictions are identical."""
        if data.get("kind") != cls.kind:
            raise InvalidConfig(f"{cls.__name__} needs kind {cls.kind!r}; got {data.get('kind')!r}.")
        obj = cls(**data.get("params", {}))
        for name in cls._state:
            if name not in data.get("state", {}):
                raise InvalidConfig(f"{cls.__name__} state lacks {name!r}; got {sorted(data['state'])}.")
            value = data["state"][name]
            setattr(obj, name, np.asarray(value, dtype=float) if isinstance(value, list) else float(value))
        return obj


class IdentityCalibrator(_Calibrator):
    """Leave scores as they are; the baseline :func:`choose_calibrator` compares against."""

    kind = "identity"

    def fit(self, p: Any, y: Any) -> IdentityCalibrator:
        _binary_inputs(y, p)
        return self

    def predict(self, p: Any) -> np.ndarray:
        return np.asarray(p, dtype=float).copy()


class PlattCalibrator(_Calibrator):
    """Platt scaling: a logistic regression of the label on the logit of the score.

    ``predict(p) = sigmoid(coef_ * logit(p) + intercept_)`` with ``p`` clipped to [1e-7, 1 - 1e-7].

    Parameters
    ----------
    smooth_targets
        Fit against Platt's smoothed targets ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)`` instead of
        1 and 0 (as scikit-learn's ``CalibratedClassifierCV(method="sigmoid")`` does). This keeps the fit
        finite when the classes are separable and changes little once both classes have hundreds of rows.

    Examples
    --------
    >>> cal = PlattCalibrator().fit([0.2, 0.3, 0.6, 0.8], [0, 1, 0, 1])
    >>> cal.predict([0.5, 0.9]).round(3)
    array([0.509, 0.682])
    """

    kind = "platt"
    _state = ("coef_", "intercept_")

    def __init__(self, *, smooth_targets: bool = True) -> None:
        self.smooth_targets = smooth_targets

    def fit(self, p: Any, y: Any) -> PlattCalibrator:
        y, p = _binary_inputs(y, p)
        z = logit(np.clip(p, _EPS, 1 - _EPS))
        n_pos = float(y.sum())
        n_neg = len(y) - n_pos
        if self.smooth_targets:
            t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        elif n_pos == 0 or n_neg == 0:
            raise SchemaError(f"PlattCalibrator(smooth_targets=False) needs both classes; y is all {y[0]:g}.")
        else:
            t = y

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            f = w[0] * z + w[1]
            r = expit(f) - t
            return float(np.mean(np.logaddexp(0, f) - t * f)), np.array([np.mean(r * z), np.mean(r)])

        res = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", options=_LBFGS_OPTIONS)
        self.coef_, self.intercept_ = float(res.x[0]), float(res.x[1])
        return self

    def predict(self, p: Any) -> np.ndarray:
        self._check_fitted()
        z = logit(np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS))
        return expit(self.coef_ * z + self.intercept_)


class IsotonicCalibrator(_Calibrator):
    """Isotonic regression of the label on the score (scikit-learn's ``IsotonicRegression``).

    Scores outside the fitted range are clipped to it (``out_of_bounds="clip"``). Predictions are the
    linear interpolation between the fitted thresholds ``x_thresholds_`` / ``y_thresholds_``, which is
    all the state there is. They can be exactly 0 or 1; metrics clip before taking logs.

    Examples
    --------
    >>> IsotonicCalibrator().fit([0.1, 0.4, 0.6, 0.9], [0, 1, 0, 1]).predict([0.05, 0.5, 0.95])
    array([0. , 0.5, 1. ])
    """

    kind = "isotonic"
    _state = ("x_thresholds_", "y_thresholds_")

    def fit(self, p: Any, y: Any) -> IsotonicCalibrator:
        y, p = _binary_inputs(y, p)
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0, increasing=True).fit(p, y)
        self.x_thresholds_ = np.asarray(iso.X_thresholds_, dtype=float)
        self.y_thresholds_ = np.asarray(iso.y_thresholds_, dtype=float)
        return self

    def predict(self, p: Any) -> np.ndarray:
        self._check_fitted()
        # np.interp holds the end values outside the range: the same as clipping first
        return np.interp(np.asarray(p, dtype=float), self.x_thresholds_, self.y_thresholds_)


class TemperatureScaling(_Calibrator):
    """Temperature scaling of multiclass logits: ``predict(z) = softmax(z / temperature_)``.

    The temperature minimises the mean negative log-likelihood on the calibration rows (a bounded
    scalar search over log T with T in [1e-2, 1e2]). It rescales confidence without changing the argmax.

    Examples
    --------
    >>> z = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, 4.0]])
    >>> ts = TemperatureScaling().fit(z, [0, 1, 0, 0])  # one in four confident calls is wrong
    >>> round(ts.temperature_, 2), ts.predict(z[:1]).round(2)
    (3.64, array([[0.75, 0.25]]))
    """

    kind = "temperature"
    _state = ("temperature_",)

    def fit(self, logits: Any, y: Any) -> TemperatureScaling:
        z, y_idx = _multiclass_inputs(logits, y)
        rows = np.arange(len(z))

        def nll(log_t: float) -> float:
            return float(-np.mean(log_softmax(z / np.exp(log_t), axis=1)[rows, y_idx]))

        res = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-10})
        self.temperature_ = float(np.exp(res.x))
        return self

    def predict(self, logits: Any) -> np.ndarray:
        self._check_fitted()
        z = np.asarray(logits, dtype=float)
        if z.ndim != 2:
            raise SchemaError(f"logits must have shape (n, n_classes); got shape {z.shape}.")
        return softmax(z / self.temperature_, axis=1)


def _multiclass_inputs(logits: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=float)
    if z.ndim != 2 or z.shape[1] < 2 or len(z) == 0:
        raise SchemaError(f"logits must have shape (n >= 1, n_classes >= 2); got shape {z.shape}.")
    if not np.all(np.isfinite(z)):
        i, k = np.argwhere(~np.isfinite(z))[0]
        raise SchemaError(f"logits must be finite; got {z[i, k].item()!r} at row {i}, class {k}.")
    return z, _class_indices(y, z.shape, name="y", against="logits")


def _class_indices(y: Any, shape: tuple[int, ...], *, name: str, against: str) -> np.ndarray:
    """``y`` as integer class indices for an (n, n_classes) matrix called ``against``."""
    n, n_classes = shape
    arr = np.asarray(y)
    if arr.shape != (n,):
        raise SchemaError(f"{name} must have shape ({n},) to match {against}; got shape {arr.shape}.")
    if arr.dtype == bool:
        arr = arr.astype(int)
    if np.issubdtype(arr.dtype, np.number):
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(arr) & (arr == np.round(arr)) & (arr >= 0) & (arr < n_classes)
    else:
        ok = np.zeros(n, dtype=bool)  # class names must be mapped to column positions first
    bad = np.flatnonzero(~ok)
    if len(bad):
        raise SchemaError(
            f"{name} must hold class indices 0..{n_classes - 1} (columns of {against}); "
            f"got {arr[bad[0]].item()!r} at row {bad[0]}."
        )
    return arr.astype(int)


_KINDS: dict[str, type[_Calibrator]] = {
    c.kind: c for c in (IdentityCalibrator, PlattCalibrator, IsotonicCalibrator, TemperatureScaling)
}


def calibrator_from_dict(data: dict[str, Any]) -> Any:
    """Rebuild any calibrator from its ``to_dict()`` output, dispatching on ``data["kind"]``.

    Examples
    --------
    >>> cal = PlattCalibrator().fit([0.2, 0.3, 0.6, 0.8], [0, 1, 0, 1])
    >>> calibrator_from_dict(cal.to_dict()).coef_ == cal.coef_
    True
    """
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in _KINDS:
        raise InvalidConfig(f"Calibrator kind must be one of {sorted(_KINDS)}; got {kind!r}.")
    return _KINDS[kind].from_dict(data)


_CANDIDATES = {"identity": IdentityCalibrator, "platt": PlattCalibrator, "isotonic": IsotonicCalibrator}


def choose_calibrator(
    y_cal: Any,
    p_cal: Any,
    y_val: Any,
    p_val: Any,
    *,
    candidates: tuple[str, ...] = ("identity", "platt", "isotonic"),
) -> tuple[str, Any, dict[str, float]]:
    """Fit each candidate on the calibration window; keep the one with the lowest validation log loss.

    Parameters
    ----------
    y_cal, p_cal
        Labels and raw scores the candidates are fitted on.
    y_val, p_val
        Later labels and raw scores they are judged on (log loss, scores clipped to [1e-7, 1 - 1e-7]).
    candidates
        Names among ``"identity"``, ``"platt"``, ``"isotonic"``; on a tie the earlier name wins, so
        list the simplest first.

    Returns
    -------
    (name, calibrator, losses)
        The winner's name, the fitted winner, and ``{name: validation log loss}`` for every candidate.
    """
    y_cal, p_cal = _binary_inputs(y_cal, p_cal, y_name="y_cal", p_name="p_cal")
    y_val, p_val = _binary_inputs(y_val, p_val, y_name="y_val", p_name="p_val")
    if len(candidates) == 0:
        raise InvalidConfig("candidates is empty; give at least one of ['identity', 'platt', 'isotonic'].")
    for name in candidates:
        _check_choice("candidates", name, tuple(_CANDIDATES))
    fitted = {name: _CANDIDATES[name]().fit(p_cal, y_cal) for name in candidates}
    losses = {name: float(np.mean(_row_log_loss(y_val, cal.predict(p_val)))) for name, cal in fitted.items()}
    best = min(candidates, key=lambda name: (losses[name], candidates.index(name)))
    return best, fitted[best], losses
