"""The in-process Predictor: online features + model + prediction log."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loopml.errors import SchemaError
from loopml.features.online import OnlineExecutor
from loopml.project import Project
from loopml.serving.metrics import ServingMetrics
from loopml.serving.predictionlog import PredictionLog
from loopml.serving.schema import RequestSchema
from loopml.training.model import GBMModel

__all__ = ["Prediction", "Predictor", "new_request_id"]


def _reseed() -> None:
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX, _ID_COUNTER = os.urandom(8).hex(), itertools.count()


_ID_PREFIX, _ID_COUNTER = "", itertools.count()
_reseed()
os.register_at_fork(after_in_child=_reseed)  # a forked worker must not hand out its parent's ids


def new_request_id() -> str:
    """A request id: 32 hex digits, 16 random per process (and per fork) then a counter.

    Unique like ``uuid4().hex`` for as many requests as a process can serve, without a ``getrandom`` call
    and a UUID object per request.
    """
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


@dataclass(frozen=True)
class Prediction:
    request_id: str
    score: float
    model_version: int
    at: datetime
    features: dict[str, Any]


class Predictor:
    """Score requests with online features and log every prediction.

    The prediction time of a request is its ``at`` if given, else the spine's rule (for flights,
    scheduled departure minus two hours). Features are the online executor's values at that time.

    Parameters
    ----------
    project, online, model, version, log, schema
        What it needs; ``schema`` validates incoming requests (see :class:`RequestSchema`).
    """

    def __init__(self, project: Project, online: OnlineExecutor, model: GBMModel, version: int,
                 log: PredictionLog | None, schema: RequestSchema, *, metrics: ServingMetrics | None = None) -> None:
        self.project = project
        self.online = online
        self.log = log
        self.schema = schema
        self.metrics = metrics
        self.swap(model, version)

    def swap(self, model: GBMModel, version: int) -> None:
        """Serve ``model`` as ``version`` from the next request on (atomic: one reference)."""
        self._current = (model, version)
        if self.metrics is not None:
            self.metrics.model_version.set(version)

    @property
    def version(self) -> int:
        return self._current[1]

    @property
    def model(self) -> GBMModel:
        return self._current[0]

    def prediction_time(self, request: Mapping[str, Any]) -> datetime:
        column = self.project.spine.time_column
        try:
            return request[column] - self.project.spine.lead
        except OverflowError:
            raise SchemaError(f"request field {column!r} is {request[column].isoformat()}; the prediction time "
                              f"{self.project.spine.lead} before it is out of range") from None

    def predict(self, request: Mapping[str, Any], *, at: datetime | None = None, entity_id: str | None = None,
                request_id: str | None = None, extra: Mapping[str, Any] | None = None) -> Prediction:
        return self.predict_many([request], at=at, entity_ids=[entity_id], request_ids=[request_id],
                                 extra=extra)[0]

    def explain(self, request: Mapping[str, Any], *, at: datetime | None = None) -> dict[str, Any]:
        """Why this request scores as it does: the features as served and their SHAP contributions.

        Contributions (LightGBM ``pred_contrib``) add up, with ``bias``, to the raw log-odds; ``score``
        is the served (recalibrated, if the version carries a calibrator) probability. Nothing is
        logged: an explanation is not a prediction.
        """
        model, version = self._current
        clean = self.schema.validate(request)
        t = at or self.prediction_time(clean)
        features = self.online.get(clean, t)
        contrib = model.contributions_rows([features]).iloc[0]
        ranked = sorted(((f, float(contrib[f])) for f in model.features), key=lambda kv: -abs(kv[1]))
        return {"model_version": version, "prediction_time": t.isoformat(), "features": features,
                "score": float(model.predict_rows([features])[0]), "bias": float(contrib["bias"]),
                "raw_log_odds": float(contrib.sum()), "contributions": dict(ranked)}

    def predict_many(self, requests: Sequence[Mapping[str, Any]], *, at: datetime | None = None,
                     entity_ids: Sequence[str | None] | None = None, request_ids: Sequence[str | None] | None = None,
                     extra: Mapping[str, Any] | None = None, validated: bool = False,
                     ats: Sequence[datetime | None] | None = None) -> list[Prediction]:
        """Score a batch in one model call; every prediction is on disk in the log before this returns.

        ``at`` sets one prediction time for every request, ``ats`` one per request (None: the spine's rule).
        """
        preds, ticket = self.score_and_log(requests, at=at, entity_ids=entity_ids, request_ids=request_ids,
                                           extra=extra, validated=validated, ats=ats)
        if ticket is not None and self.log is not None:
            self.log.wait(ticket)
        return preds

    async def apredict_many(self, requests: Sequence[Mapping[str, Any]], *, at: datetime | None = None,
                            entity_ids: Sequence[str | None] | None = None,
                            request_ids: Sequence[str | None] | None = None, extra: Mapping[str, Any] | None = None,
                            validated: bool = False, ats: Sequence[datetime | None] | None = None) -> list[Prediction]:
        """:meth:`predict_many` for an event loop: the wait for the log's fsync does not block the loop."""
        preds, ticket = self.score_and_log(requests, at=at, entity_ids=entity_ids, request_ids=request_ids,
                                           extra=extra, validated=validated, ats=ats)
        if ticket is not None and self.log is not None:
            await self.log.durable(ticket)
        return preds

    def score_and_log(self, requests: Sequence[Mapping[str, Any]], *, at: datetime | None = None,
                      entity_ids: Sequence[str | None] | None = None, request_ids: Sequence[str | None] | None = None,
                      extra: Mapping[str, Any] | None = None, validated: bool = False,
                      ats: Sequence[datetime | None] | None = None) -> tuple[list[Prediction], int | None]:
        """Score a batch and write it to the log; return the predictions and the log's ticket.

        The predictions are written (a killed process does not lose them) but not yet fsynced: do not
        acknowledge them before ``log.wait(ticket)`` or ``await log.durable(ticket)`` (None: nothing logged).
        """
        model, version = self._current
        clean = list(requests) if validated else [self.schema.validate(r) for r in requests]
        if ats is not None:
            times = [t or self.prediction_time(r) for r, t in zip(clean, ats, strict=True)]
        else:
            times = [at or self.prediction_time(r) for r in clean]
        t0 = time.perf_counter()
        rows = self.online.get_many(clean, times)  # one store read (and change check) for the batch
        if self.metrics is not None and rows:
            self.metrics.lookup.observe((time.perf_counter() - t0) / len(rows))
            self.metrics.batch_size.observe(len(rows))
            for feats in rows:
                if None in feats.values():  # most rows have every value: one scan in C, no loop
                    for name, value in feats.items():
                        if value is None:
                            self.metrics.missing.labels(name).inc()
        scores = model.predict_rows(rows).tolist() if rows else []
        return self._log(version, clean, times, rows, scores, entity_ids, request_ids, extra)

    def score_features(self, rows: Sequence[Mapping[str, Any]], *, request_ids: Sequence[str | None] | None = None,
                       at: datetime | None = None) -> tuple[list[Prediction], int | None]:
        """Score rows of model features given by the caller (no online lookup) and write them to the log.

        Each row maps the served model's feature names to values (None: missing; a category as its text). The
        prediction time is ``at`` (default: now, UTC); the log records the rows as the features served, with an
        empty request and ``"input": "features"``. Acknowledge only after the ticket is durable, as for
        :meth:`score_and_log`.
        """
        model, version = self._current
        if self.metrics is not None and rows:
            self.metrics.batch_size.observe(len(rows))
        scores = model.predict_rows(rows).tolist() if rows else []
        t = at or datetime.now(UTC)
        feats = [dict(r) for r in rows]
        return self._log(version, [{}] * len(feats), [t] * len(feats), feats, scores, None, request_ids,
                         {"input": "features"})

    async def apredict_features(self, rows: Sequence[Mapping[str, Any]], *,
                                request_ids: Sequence[str | None] | None = None) -> list[Prediction]:
        """:meth:`score_features`, answered once the log's fsync covers the predictions (without blocking the loop)."""
        preds, ticket = self.score_features(rows, request_ids=request_ids)
        if ticket is not None and self.log is not None:
            await self.log.durable(ticket)
        return preds

    def _log(self, version: int, requests: Sequence[Mapping[str, Any]], times: Sequence[datetime],
             rows: Sequence[dict[str, Any]], scores: Sequence[float], entity_ids: Sequence[str | None] | None,
             request_ids: Sequence[str | None] | None, extra: Mapping[str, Any] | None) -> tuple[list[Prediction], int | None]:
        out = []
        records: list[dict[str, Any]] | None = [] if self.log is not None else None  # no log: nothing to build
        for i, (r, t, feats, s) in enumerate(zip(requests, times, rows, scores, strict=True)):
            rid = (request_ids[i] if request_ids else None) or new_request_id()
            out.append(Prediction(rid, s, version, t, feats))
            if records is not None:
                records.append({"request_id": rid, "entity_id": entity_ids[i] if entity_ids else None,
                                "model_version": version, "at": t.isoformat(), "score": s, "request": r,
                                "features": feats, **(extra or {})})
        if self.log is None or not records:
            return out, None
        return out, self.log.append_predictions(records)
