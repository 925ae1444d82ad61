"""Behavioural tests of a model, after CheckList (Ribeiro et al., ACL 2020).

Aggregate metrics say how often a model is right, not whether it is right for the right reasons.
A behavioural test declares how the score must respond to a change of input and checks it on real
rows:

- :class:`Invariance`: perturbing a feature declared irrelevant (a flight number) must leave the
  score within ``tolerance``.
- :class:`Directional`: adding ``delta`` to a feature must move the score the declared way (more
  precipitation must not lower the delay probability).
- :class:`MinimumFunctionality`: hand-written rows with obvious outcomes must score as expected.

:func:`run_behaviour_tests` runs them on a sample of rows. A perturbation test counts only the rows
whose value the perturbation changed, and passes when the share of failing rows is at most
``max_failure_rate``. Two robustness probes complete the set: :func:`noise_stability` (small
Gaussian noise on numeric features) and :func:`missing_feature_impact` (a whole feature group, such
as the weather, missing at once, as when a feed is down).

Scoring is the cost: every function takes the frame's scores if the caller has them already
(``scores=``), and re-scores only the rows whose input a perturbation changed (a row is a function
of its own features, so the others keep their score). A tree model's score is also a step function
of each numeric feature: given the thresholds its trees compare a feature with (``split_points=``,
as the scorer compares them), a row whose new value decides every ``x <= t`` as the old one did
keeps its score exactly and is not re-scored either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from loopml.errors import FeatureNotFound, InvalidConfig, SchemaError, closest
from loopml.evaluation._inputs import _binary_inputs, _check_choice, _row_log_loss

__all__ = ["Directional", "Invariance", "MinimumFunctionality", "lightgbm_split_points", "missing_feature_impact",
           "noise_stability", "onnx_split_points", "run_behaviour_tests"]

DIRECTIONS = ("increase", "decrease", "not_decrease", "not_increase")
_N_EXAMPLES = 5


class _Model(Protocol):
    """What the tests need of a model (:class:`loopml.training.GBMModel` has it)."""

    features: list[str]
    def predict_frame(self, frame: pd.DataFrame) -> np.ndarray: ...
    def predict_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray: ...


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.number)) \
        and bool(np.isfinite(value))


def _check_common(name: Any, tolerance: float, max_failure_rate: float) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidConfig(f"a behaviour test needs a non-empty name; got {name!r}.")
    if not _is_number(tolerance) or not 0 <= tolerance < 1:
        raise InvalidConfig(f"Test {name!r}: tolerance must be a score change in [0, 1); got {tolerance!r}.")
    if not _is_number(max_failure_rate) or not 0 <= max_failure_rate <= 1:
        raise InvalidConfig(f"Test {name!r}: max_failure_rate must lie in [0, 1]; got {max_failure_rate!r}.")


@dataclass(frozen=True)
class Invariance:
    """Perturbing ``feature`` must change the score by at most ``tolerance``.

    ``perturb`` is a function of the column (a Series) returning the new values, or a scalar that
    replaces every value. Only rows whose value actually changed are counted.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> Invariance("flight number is irrelevant", "flight", lambda v: rng.permutation(v.to_numpy())).kind
    'invariance'
    """

    name: str
    feature: str
    perturb: Callable[[pd.Series], Any] | Any
    _: KW_ONLY
    tolerance: float = 0.01
    max_failure_rate: float = 0.0
    kind: ClassVar[str] = "invariance"

    def __post_init__(self) -> None:
        _check_common(self.name, self.tolerance, self.max_failure_rate)
        if not callable(self.perturb) and not pd.api.types.is_scalar(self.perturb):
            raise InvalidConfig(
                f"Test {self.name!r}: perturb must be a function of the column or a single replacement "
                f"value; got {type(self.perturb).__name__} {self.perturb!r}."
            )

    def _new_values(self, values: pd.Series, model: _Model) -> pd.Series:
        if not callable(self.perturb):
            return pd.Series(self.perturb, index=values.index)
        out = self.perturb(values.copy())
        arr = out.to_numpy() if isinstance(out, pd.Series) else np.asarray(out)
        if arr.shape != (len(values),):
            raise SchemaError(
                f"Test {self.name!r}: perturb must return one value per row ({len(values)}); "
                f"got shape {arr.shape}."
            )
        return pd.Series(arr, index=values.index)

    def _failures(self, change: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        excess = np.abs(change) - self.tolerance
        return excess > 0, excess

    def _describe(self) -> str:
        return f"perturbing {self.feature!r} must move the score by at most {self.tolerance:g}"


@dataclass(frozen=True)
class Directional:
    """Adding ``delta`` to ``feature`` must move the score in ``direction``.

    With ``change = after - before`` and ``t = tolerance``, a row passes when ``change > t``
    ("increase"), ``change < -t`` ("decrease"), ``change >= -t`` ("not_decrease") or ``change <= t``
    ("not_increase"). Trees are step functions, so a small ``delta`` often leaves the score
    unchanged: "increase" and "decrease" are strict and rarely what is meant.

    Examples
    --------
    >>> Directional("rain does not lower P(delay)", "origin_precip", delta=0.1, direction="not_decrease").kind
    'directional'
    """

    name: str
    feature: str
    _: KW_ONLY
    delta: float
    direction: str = "increase"
    tolerance: float = 0.0
    max_failure_rate: float = 0.01
    kind: ClassVar[str] = "directional"

    def __post_init__(self) -> None:
        _check_common(self.name, self.tolerance, self.max_failure_rate)
        _check_choice(f"Test {self.name!r}: direction", self.direction, DIRECTIONS)
        if not _is_number(self.delta) or self.delta == 0:
            raise InvalidConfig(f"Test {self.name!r}: delta must be a non-zero finite number; "
                                f"got {self.delta!r}.")

    def _new_values(self, values: pd.Series, model: _Model) -> pd.Series:
        if self.feature in getattr(model, "categories", {}):
            raise SchemaError(f"Test {self.name!r}: feature {self.feature!r} is categorical in the model; "
                              "a directional test adds delta to a numeric feature.")
        if not pd.api.types.is_numeric_dtype(values):
            raise SchemaError(f"Test {self.name!r}: feature {self.feature!r} must be numeric to add delta "
                              f"to it; got dtype {values.dtype}.")
        return values.astype("float64") + self.delta

    def _failures(self, change: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = self.tolerance
        if self.direction == "increase":
            return change <= t, t - change
        if self.direction == "decrease":
            return change >= -t, change + t
        if self.direction == "not_decrease":
            return change < -t, -t - change
        return change > t, change - t

    def _describe(self) -> str:
        verb, t = self.direction.replace("_", " "), self.tolerance
        return f"adding {self.delta:g} to {self.feature!r} must {verb} the score (tolerance {t:g})"


@dataclass(frozen=True)
class MinimumFunctionality:
    """Hand-written ``rows`` (dicts of feature values, absent ones missing) must score as expected.

    ``expected`` is "high" (score >= ``threshold``), "low" (score < ``threshold``) or a function of
    the score returning whether it is acceptable. Keys that are not features of the model are an
    error, so a misspelt feature cannot pass silently as a missing one.

    Examples
    --------
    >>> MinimumFunctionality("storm", [{"origin_precip": 2.0, "origin_visib": 0.5}], "high").kind
    'minimum_functionality'
    """

    name: str
    rows: Sequence[Mapping[str, Any]]
    expected: str | Callable[[float], bool]
    _: KW_ONLY
    threshold: float = 0.5
    max_failure_rate: float = 0.0
    kind: ClassVar[str] = "minimum_functionality"

    def __post_init__(self) -> None:
        _check_common(self.name, 0.0, self.max_failure_rate)
        object.__setattr__(self, "rows", tuple(self.rows))
        if not self.rows or not all(isinstance(r, Mapping) for r in self.rows):
            raise InvalidConfig(f"Test {self.name!r}: rows must be a non-empty list of dicts; "
                                f"got {self.rows!r}.")
        if not callable(self.expected):
            _check_choice(f"Test {self.name!r}: expected", self.expected, ("high", "low"))
        if not _is_number(self.threshold) or not 0 < self.threshold < 1:
            raise InvalidConfig(f"Test {self.name!r}: threshold must lie strictly between 0 and 1; "
                                f"got {self.threshold!r}.")

    def _ok(self, score: float) -> bool:
        if self.expected == "high":
            return score >= self.threshold
        if self.expected == "low":
            return score < self.threshold
        return bool(self.expected(score))  # type: ignore[operator]


BehaviourTest = Invariance | Directional | MinimumFunctionality


def run_behaviour_tests(model: _Model, frame: pd.DataFrame, tests: Sequence[BehaviourTest], *,
                        sample: int | None = 5000, seed: int = 0, scores: Any = None,
                        split_points: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run behavioural tests on up to ``sample`` rows of ``frame`` (all rows when ``sample`` is None).

    ``scores``, if given, are ``model.predict_frame(frame)`` computed already (one per row of
    ``frame``); the sampled rows' unperturbed scores are then taken from it instead of scored again.
    ``split_points`` maps numeric features to the sorted thresholds ``t`` the model decides ``x <= t``
    on, in the dtype its scorer compares in (float32 for ONNX Runtime), and on nothing else of that
    feature: rows whose perturbed value falls between the same thresholds keep their score unscored.
    The results are the same with or without it.

    Returns
    -------
    list of dict
        Per test, in order: ``{"name", "kind", "passed", "failure_rate", "n", "max_failure_rate",
        "examples", "message"}``. ``n`` counts the rows checked (for perturbation tests, those whose
        value changed); a test that checked no row fails, with ``failure_rate`` NaN. ``examples``
        holds up to five failing rows, worst first: ``{"index", "value_before", "value_after",
        "score_before", "score_after"}`` for perturbation tests (``index`` is the frame's label),
        ``{"index", "row", "score"}`` for minimum-functionality tests.
    """
    names = [getattr(t, "name", None) for t in tests]
    for t in tests:
        if not isinstance(t, (Invariance, Directional, MinimumFunctionality)):
            raise InvalidConfig(f"tests must be Invariance, Directional or MinimumFunctionality; got {t!r}.")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidConfig(f"behaviour test names must be unique; used more than once: {dupes}.")
    given = _given_scores(scores, frame)
    rows, at = _sample(frame, sample, seed)
    before: np.ndarray | None = None
    out = []
    for t in tests:
        if isinstance(t, MinimumFunctionality):
            out.append(_run_minimum(model, t))
            continue
        if before is None:
            before = given[at] if given is not None else np.asarray(model.predict_frame(rows), dtype=float)
        out.append(_run_perturbation(model, rows, before, t, split_points))
    return out


def noise_stability(
    model: _Model, frame: pd.DataFrame, features: Sequence[str], *, scale: float = 0.01, seed: int = 0,
    scores: Any = None, split_points: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """How much the score moves under Gaussian noise of ``scale`` times each feature's standard deviation.

    Returns ``{"scale", "n", "mean_abs_change", "max_abs_change", "per_feature"}``: the change with
    every listed feature noised at once, and per feature (``{"feature", "mean_abs_change",
    "max_abs_change"}``) with that feature alone noised by the same draws. Missing values stay missing.
    A feature with a point mass (no precipitation on most days) can move a lot under tiny noise when
    a split sits just above the mass: the probe then shows how sharp that split is.
    ``scores`` may give ``model.predict_frame(frame)`` if it is known already; ``split_points`` as
    for :func:`run_behaviour_tests`.
    """
    if not _is_number(scale) or not scale > 0:
        raise InvalidConfig(f"scale must be a positive multiple of each feature's standard deviation; "
                            f"got {scale!r}.")
    if not features:
        raise InvalidConfig("features must name at least one numeric feature to perturb; got none.")
    for f in features:
        _require_feature(model, frame, f, "noise_stability")
        if f in getattr(model, "categories", {}) or not pd.api.types.is_numeric_dtype(frame[f]):
            raise SchemaError(f"noise_stability: feature {f!r} must be numeric; got dtype {frame[f].dtype}.")
    rng = np.random.default_rng(seed)
    given = _given_scores(scores, frame)
    before = given if given is not None else np.asarray(model.predict_frame(frame), dtype=float)
    noisy = {}
    for f in features:
        values = frame[f].astype("float64")
        sd = values.std()  # NaN for fewer than two present values: no noise then
        noisy[f] = values.to_numpy() + rng.normal(0.0, scale * np.nan_to_num(sd), size=len(frame))
    per_feature = []
    for f in features:
        change = np.abs(_rescored(model, frame, before, {f: noisy[f]}, split_points) - before)
        per_feature.append({"feature": f, **_abs_stats(change)})
    change = np.abs(_rescored(model, frame, before, noisy, split_points) - before)
    return {"scale": scale, "n": len(frame), **_abs_stats(change), "per_feature": per_feature}


def missing_feature_impact(
    model: _Model, frame: pd.DataFrame, groups: Mapping[str, Sequence[str]], *, y: Any = None,
    scores: Any = None,
) -> list[dict[str, Any]]:
    """Score change when each group of features is missing at once (a feed down, say).

    Returns, per group in order, ``{"group", "features", "mean_abs_change", "max_abs_change",
    "log_loss_before", "log_loss_after", "log_loss_change"}``; the log-loss fields are None unless
    binary labels ``y`` (aligned with ``frame``) are given. ``scores`` may give
    ``model.predict_frame(frame)`` if it is known already.
    """
    if not groups:
        raise InvalidConfig("groups must map at least one group name to its features; got none.")
    for group, feats in groups.items():
        if isinstance(feats, str) or not feats:
            raise InvalidConfig(f"group {group!r} must list its features; got {feats!r}.")
        for f in feats:
            _require_feature(model, frame, f, f"group {group!r}")
    given = _given_scores(scores, frame)
    before = given if given is not None else np.asarray(model.predict_frame(frame), dtype=float)
    labels = None
    if y is not None:
        labels, _ = _binary_inputs(y, before)
    cats = getattr(model, "categories", {})
    out = []
    for group, feats in groups.items():
        blank = {f: np.full(len(frame), None, dtype=object) if f in cats else np.full(len(frame), np.nan)
                 for f in feats}
        after = _rescored(model, frame, before, blank)
        row: dict[str, Any] = {"group": group, "features": list(feats), **_abs_stats(np.abs(after - before)),
                               "log_loss_before": None, "log_loss_after": None, "log_loss_change": None}
        if labels is not None:
            lb, la = float(_row_log_loss(labels, before).mean()), float(_row_log_loss(labels, after).mean())
            row.update(log_loss_before=lb, log_loss_after=la, log_loss_change=la - lb)
        out.append(row)
    return out


def lightgbm_split_points(booster: Any, features: Sequence[str], numeric: Sequence[str]) -> dict[str, np.ndarray]:
    """``split_points`` for LightGBM's native scorer: per numeric feature, the sorted float64 thresholds of
    its ``<=`` splits.

    A feature that is also split another way (categorical ``==``, zero as missing) or that a linear
    tree's leaf reads is left out, so it is re-scored whenever its value changes.
    """
    index = {f: i for i, f in enumerate(features)}
    points: dict[int, list[float]] = {}
    other: set[int] = set()
    stack = [tree["tree_structure"] for tree in booster.dump_model()["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_feature" not in node:  # a leaf; a linear tree's leaf is a function of its features
            other.update(node.get("leaf_features") or ())
            continue
        i = node["split_feature"]
        if node["decision_type"] == "<=" and node.get("missing_type") != "Zero":
            points.setdefault(i, []).append(float(node["threshold"]))
        else:
            other.add(i)
        stack += [node["left_child"], node["right_child"]]
    return {f: np.unique(np.asarray(points.get(index[f], []), dtype=np.float64)) for f in numeric
            if index[f] not in other}


def onnx_split_points(blob: bytes, features: Sequence[str], numeric: Sequence[str]) -> dict[str, np.ndarray] | None:
    """``split_points`` for an ONNX tree ensemble scored on float32 inputs: per numeric feature, the sorted
    float32 thresholds of its ``BRANCH_LEQ`` nodes.

    None unless the graph is one ``TreeEnsembleClassifier``/``Regressor`` reading the input as given with
    thresholds in ``nodes_values``; a feature with any other kind of branch is left out.
    """
    import onnx

    graph = onnx.load_from_string(blob).graph
    trees = [n for n in graph.node if n.op_type in ("TreeEnsembleClassifier", "TreeEnsembleRegressor")]
    if len(trees) != 1 or list(trees[0].input) != [graph.input[0].name]:
        return None
    attrs = {a.name: a for a in trees[0].attribute}
    if "nodes_values" not in attrs:  # thresholds stored as a tensor (nodes_values_as_tensor): not read here
        return None
    modes = np.asarray(attrs["nodes_modes"].strings, dtype=object)
    ids = np.asarray(attrs["nodes_featureids"].ints)
    values = np.asarray(attrs["nodes_values"].floats, dtype=np.float32)
    leq = modes == b"BRANCH_LEQ"
    other = set(ids[~leq & (modes != b"LEAF")].tolist())
    index = {f: i for i, f in enumerate(features)}
    return {f: np.unique(values[leq & (ids == index[f])]) for f in numeric if index[f] not in other}


# -- helpers ---------------------------------------------------------------------------------------
def _sample(frame: pd.DataFrame, sample: int | None, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """``frame.sample(n=sample, random_state=seed)`` (or all of ``frame``) and the rows' positions in ``frame``."""
    everything = np.arange(len(frame))
    if sample is None:
        return frame, everything
    if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 1:
        raise InvalidConfig(f"sample must be a positive number of rows or None; got {sample!r}.")
    if len(frame) <= sample:
        return frame, everything
    # the same draw as frame.sample(...): pandas samples positions, whatever the index holds
    at = pd.Series(everything).sample(n=int(sample), random_state=seed).to_numpy()
    return frame.iloc[at], at


def _given_scores(scores: Any, frame: pd.DataFrame) -> np.ndarray | None:
    if scores is None:
        return None
    arr = np.asarray(scores, dtype=float)
    if arr.shape != (len(frame),):
        raise SchemaError(f"scores must hold one score per row of the frame ({len(frame)}); got shape {arr.shape}.")
    return arr


def _rescored(model: _Model, frame: pd.DataFrame, before: np.ndarray, new: Mapping[str, np.ndarray],
              split_points: Mapping[str, Any] | None = None) -> np.ndarray:
    """Scores of ``frame`` with the columns in ``new`` replaced, scoring only the rows whose values changed
    (and, for features in ``split_points``, changed sides of a threshold)."""
    changed = np.zeros(len(frame), dtype=bool)
    for f, values in new.items():
        values = pd.Series(values, index=frame.index)
        if split_points is not None and f in split_points:
            changed |= ~_same_side(frame[f], values, split_points[f])
        else:
            changed |= ~_same(frame[f], values)
    after = before.copy()
    if changed.any():
        moved = frame.iloc[np.flatnonzero(changed)]
        after[changed] = model.predict_frame(moved.assign(**{f: v[changed] for f, v in new.items()}))
    return after


def _require_feature(model: _Model, frame: pd.DataFrame, feature: str, who: str) -> None:
    # A feature the model does not read would pass any perturbation test vacuously.
    if feature not in model.features:
        raise _unknown_feature(f"{who}: ", feature, model)
    if feature not in frame.columns:
        raise FeatureNotFound(f"{who}: the frame has no column {feature!r}.")


def _unknown_feature(prefix: str, name: Any, model: _Model) -> FeatureNotFound:
    hint = closest(str(name), model.features)
    extra = f" Closest matches: {hint}." if hint else ""
    return FeatureNotFound(f"{prefix}{name!r} is not a feature of the model.{extra}")


def _abs_stats(change: np.ndarray) -> dict[str, float]:
    if len(change) == 0:
        return {"mean_abs_change": float("nan"), "max_abs_change": float("nan")}
    return {"mean_abs_change": float(change.mean()), "max_abs_change": float(change.max())}


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _same(a: pd.Series, b: pd.Series) -> np.ndarray:
    eq = (a.to_numpy(dtype=object) == b.to_numpy(dtype=object)).astype(bool)
    return eq | (a.isna().to_numpy() & b.isna().to_numpy())


def _result(t: BehaviourTest, n: int, failed: int, examples: list[dict[str, Any]],
            what: str) -> dict[str, Any]:
    rate = failed / n if n else float("nan")
    passed = bool(n and rate <= t.max_failure_rate)
    if not n:
        message = f"Test {t.name!r} checked no row ({what}); it proves nothing, so it fails."
    else:
        message = (f"Test {t.name!r}: {what}; {failed} of {n} rows ({rate:.1%}) failed, "
                   f"{t.max_failure_rate:.1%} allowed.")
    return {"name": t.name, "kind": t.kind, "passed": passed, "failure_rate": rate, "n": n,
            "max_failure_rate": t.max_failure_rate, "examples": examples, "message": message}


def _same_side(old: pd.Series, new: pd.Series, points: Any) -> np.ndarray:
    """Rows where ``x <= t`` comes out the same for the old and the new value at every threshold ``t``
    of ``points`` (compared in the dtype of ``points``); a value only matches a missing one if missing."""
    t = np.asarray(points)
    a, b = (pd.to_numeric(v, errors="coerce").astype("float64").to_numpy(na_value=np.nan) for v in (old, new))
    a_nan, b_nan = np.isnan(a), np.isnan(b)
    with np.errstate(over="ignore"):  # beyond float32's range is beyond every threshold too
        side_a = np.searchsorted(t, a.astype(t.dtype), side="left")  # thresholds below the value
        side_b = np.searchsorted(t, b.astype(t.dtype), side="left")
    return (a_nan & b_nan) | (~a_nan & ~b_nan & (side_a == side_b))


def _run_perturbation(model: _Model, rows: pd.DataFrame, before: np.ndarray, t: Invariance | Directional,
                      split_points: Mapping[str, Any] | None = None) -> dict[str, Any]:
    _require_feature(model, rows, t.feature, f"Test {t.name!r}")
    old = rows[t.feature]
    new = t._new_values(old, model)
    changed = ~_same(old, new)
    if not changed.any():
        return _result(t, 0, 0, [], f"the perturbation of {t.feature!r} changed no value")
    b = before[changed]
    after = b.copy()  # rows on the same side of every threshold keep their score
    moves = np.ones(len(b), dtype=bool)
    if split_points is not None and t.feature in split_points:
        moves = ~_same_side(old[changed], new[changed], split_points[t.feature])
    if moves.any():
        at = np.flatnonzero(changed)[moves]
        moved = rows.iloc[at].assign(**{t.feature: new.to_numpy()[at]})
        after[moves] = np.asarray(model.predict_frame(moved), dtype=float)
    failed, severity = t._failures(after - b)
    worst = np.flatnonzero(failed)[np.argsort(-severity[failed], kind="stable")][:_N_EXAMPLES]
    idx, o, v = rows.index[changed], old[changed], new[changed]
    examples = [{"index": _py(idx[i]), "value_before": _py(o.iloc[i]), "value_after": _py(v.iloc[i]),
                 "score_before": float(b[i]), "score_after": float(after[i])} for i in worst]
    return _result(t, int(changed.sum()), int(failed.sum()), examples, t._describe())


def _run_minimum(model: _Model, t: MinimumFunctionality) -> dict[str, Any]:
    unknown = [key for row in t.rows for key in row if key not in model.features]
    if unknown:
        raise _unknown_feature(f"Test {t.name!r}: row key ", unknown[0], model)
    scores = np.asarray(model.predict_rows(list(t.rows)), dtype=float)
    bad = [i for i, s in enumerate(scores) if not t._ok(float(s))]
    examples = [{"index": i, "row": dict(t.rows[i]), "score": float(scores[i])} for i in bad[:_N_EXAMPLES]]
    what = f"expected {t.expected!r} scores (threshold {t.threshold:g})" if isinstance(t.expected, str) \
        else f"expected scores accepted by {getattr(t.expected, '__name__', repr(t.expected))}"
    return _result(t, len(scores), len(bad), examples, what)
