"""The continual-learning controller, driven by a clock.

``LoopController.run(start, until)`` walks time forward: events become visible to the online
executor as their available time passes, requests (spine events) are scored by the champion
through the :class:`~loopml.serving.Predictor` and logged, labels are joined to logged predictions
as they land (log and wait), and at each month boundary a challenger is trained on a trailing
window using only labels available by then. The challenger replaces the champion only if it beats
it on a recent holdout neither model was trained on; every step is recorded in the registry.

A clock drives it (:mod:`loopml.loop.clock`): each step processes everything that has become
available by ``clock.now()`` -- events, requests and policy checks, in time order -- and then sleeps
until the next due action. On a :class:`~loopml.loop.clock.ReplayClock` that sleep is a jump, so
history replays as fast as the work allows; on a :class:`~loopml.loop.clock.WallClock` it is real,
the event log is re-read each step for what ingestion appended (:mod:`loopml.loop.feed`), and a
checkpoint file lets a stopped run resume. There is no separate simulation path.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from loopml.datasets.build import build_dataset
from loopml.errors import InvalidConfig
from loopml.evaluation.calibration import expected_calibration_error
from loopml.evaluation.metrics import binary_metrics
from loopml.events.log import duckdb_connect
from loopml.events.replay import EventBatch
from loopml.features.materialize import materialize
from loopml.features.online import OnlineExecutor
from loopml.features.store import SQLiteOnlineStore
from loopml.loop.clock import Clock, ReplayClock
from loopml.loop.feed import LogFeed
from loopml.loop.jobs import train_and_register
from loopml.loop.live import LiveSource
from loopml.loop.policy import RetrainPolicy
from loopml.loop.quality import served_quality
from loopml.project import Project
from loopml.registry.artifacts import ArtifactStore
from loopml.registry.registry import Registry
from loopml.serving.predictionlog import PredictionLog
from loopml.serving.predictor import Predictor
from loopml.serving.schema import RequestSchema
from loopml.timeutil import from_us, parse_time, to_us
from loopml.workspace import Workspace

__all__ = ["LoopController", "LoopResult", "RetrainPolicy", "month_starts", "week_starts"]


def week_starts(start: datetime, until: datetime) -> list[datetime]:
    """Mondays 00:00 UTC after ``start`` and before ``until``."""
    d = datetime(start.year, start.month, start.day, tzinfo=start.tzinfo) + timedelta(days=1)
    d += timedelta(days=(7 - d.weekday()) % 7)
    out = []
    while d < until:
        out.append(d)
        d += timedelta(days=7)
    return out


@dataclass
class LoopResult:
    months: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    weekly: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, list[float]] = field(default_factory=dict)
    retrainings: int = 0
    retrain_cpu_seconds: float = 0.0
    finished: bool = True
    done_until: str | None = None
    late_events: int = 0
    quality: dict[str, Any] = field(default_factory=dict)


def month_starts(start: datetime, until: datetime) -> list[datetime]:
    """First instants (UTC) of each month after ``start`` and before ``until``."""
    out = []
    m = datetime(start.year, start.month, 1, tzinfo=start.tzinfo)
    while True:
        m = datetime(m.year + (m.month == 12), m.month % 12 + 1, 1, tzinfo=start.tzinfo)
        if m >= until:
            return out
        out.append(m)


class LoopController:
    """Serve, watch labels and retrain over a clock (see module docstring)."""

    def __init__(self, project: Project, workspace: Workspace, *, policy: RetrainPolicy | None = None,
                 progress: Callable[[str, int, int], None] | None = None) -> None:
        self.project = project
        self.ws = workspace
        self.policy = RetrainPolicy.coerce(policy if policy is not None else project.policy)
        self.progress = progress or (lambda stage, done, total: None)
        self.log = workspace.log
        self.registry = Registry(workspace.registry_url, ArtifactStore(workspace.artifacts))

    # -- the initial champion ------------------------------------------------------------------
    def bootstrap(self) -> int:
        """Train and promote a first champion on the project's default window if none exists."""
        name = self.project.name
        if any(Registry.CHAMPION in v.aliases for v in self.registry.versions(name)):
            return self.registry.resolve(name, Registry.CHAMPION)
        start, end = parse_time(self.project.train_from), parse_time(self.project.train_to)
        self.progress("training initial model", 0, 1)
        mv, _, _ = train_and_register(self.project, self.log, self.registry, start, end,
                                      info={"trigger": "bootstrap"}, at=end)
        self.registry.promote(name, mv.version, reason="first model: no champion yet", at=end.isoformat())
        self.progress("training initial model", 1, 1)
        return mv.version

    # -- the loop --------------------------------------------------------------------------------
    def run(self, start: datetime, until: datetime, *, clock: Clock | None = None,
            stop: threading.Event | None = None, ingest: LiveSource | None = None,
            checkpoint: Path | None = None, poll_seconds: float = 1.0, quality: bool = True) -> LoopResult:
        """Serve requests scheduled in [start, until), join labels, retrain by policy, on ``clock``.

        Parameters
        ----------
        clock
            :class:`ReplayClock` (default: history as fast as the work allows) or :class:`WallClock`.
            The controller processes everything that has become available by ``clock.now()``, then
            sleeps until its next due action (a request, a policy check, the end).
        stop
            Set it (e.g. from a Ctrl-C handler) to stop after the current step; the checkpoint then
            lets a later call with the same arguments resume where this one stopped.
        ingest
            Live ingestion run in step with the clock: before each step it appends to the event log
            what has become available by then (see :class:`~loopml.loop.live.LiveSource`).
        checkpoint
            JSON file recording how far the loop got; if it exists and is unfinished, the run
            resumes from it (online state rebuilt as of that time, nothing served twice).
        poll_seconds
            On a live clock without ``ingest``, how often (real seconds) to look for new events.
        quality
            Check the data quality of everything served (against the champion's training window)
            and the staleness of its features; the result is in ``LoopResult.quality``.
        """
        if until <= start:
            raise InvalidConfig(f"--until ({until.isoformat()}) must be after the start ({start.isoformat()})")
        p, sp, lb = self.project, self.project.spine, self.project.label
        clock = clock or ReplayClock(start)
        drain = until + self.policy.label_wait  # serving stops at `until`; labels of its last predictions still land
        saved = _read_checkpoint(checkpoint, self.policy, start, until)
        resumed = parse_time(saved["done_until"]) if saved else None
        if ingest is not None:
            ingest.append_until(resumed or start)  # history up to the start is there before the first model
        self.bootstrap()
        mv, model = self.registry.load(p.name, Registry.CHAMPION)
        store = SQLiteOnlineStore(self.ws.online_path)
        if resumed is not None:
            store.clear()  # state flushed after the checkpoint would be from the future
            online = materialize(self.log, p.features, resumed, store=store)
        else:
            online = OnlineExecutor(p.features, store=store)
        schema = RequestSchema.from_arrow(self.log.schema(sp.source), sp.request_fields)
        plog = PredictionLog(self.ws.predictions)
        predictor = Predictor(p, online, model, mv.version, plog, schema)

        feature_sources, label_source = online.sources, lb.source
        columns = online.columns()
        columns[label_source] = sorted({*columns.get(label_source, []), lb.id, lb.column})
        events = LogFeed(self.log, sorted({*feature_sources, label_source}), columns=columns, after=resumed)
        request_columns = sorted({sp.id, sp.time_column, *sp.request_fields})
        requests = LogFeed(self.log, [sp.source], columns={sp.source: request_columns}, after=resumed,
                           bounds={sp.source: (start, until)})
        timestamps = {f.name for f in self.log.schema(sp.source) if pa.types.is_timestamp(f.type)}
        cadence = {"monthly": month_starts, "weekly": week_starts}.get(self.policy.cadence)
        boundaries = [b for b in (cadence(start, until) if cadence else []) if resumed is None or b > resumed]
        pending, served_after = (self._unlabelled(plog, resumed) if resumed is not None else ({}, set()))
        self.retrain_cpu_seconds = float(saved["retrain_cpu_seconds"]) if saved else 0.0
        self.retrainings = int(saved["retrainings"]) if saved else 0
        until_us, day, checked = to_us(until), [None], [False]
        last_ticket: list[int | None] = [None]

        def advance(t: datetime) -> None:
            for source, batch in events.advance_to(min(t, until)):
                if source in feature_sources:
                    online.update(source, batch)
                if source == label_source:
                    self._join_labels(batch, pending, plog)
            if t > until:
                for _, batch in events.advance_to(t, sources=[label_source]):
                    self._join_labels(batch, pending, plog)

        def serve(group: EventBatch) -> None:
            t_us = group["available_time"][0]
            t = from_us(t_us)
            advance(t)
            if day[0] != t.date():
                day[0] = t.date()
                online.flush()
            reqs, ids = [], []
            for i in range(group.n):
                req = {c: (from_us(group[c][i]) if c in timestamps and group[c][i] is not None else group[c][i])
                       for c in sp.request_fields}
                if to_us(req[sp.time_column] - sp.lead) != t_us:
                    raise InvalidConfig(f"spine source {sp.source!r}: available_time must equal {sp.time_column} - "
                                        f"lead (a request arrives at its prediction time); event "
                                        f"{group['event_id'][i]} does not")
                eid = str(group[sp.id][i])
                if eid in served_after:  # served before a crash, after the checkpoint
                    continue
                reqs.append(req)
                ids.append(eid)
            # No client waits on these answers, so they are not held for their fsync one time step at a
            # time: the log's flusher syncs in the background, and a checkpoint waits for the last ticket.
            preds, ticket = predictor.score_and_log(reqs, at=t, entity_ids=ids, validated=True)
            if ticket is not None:
                last_ticket[0] = ticket
            for eid, pr in zip(ids, preds, strict=True):
                pending[eid] = pr.request_id

        def step(horizon: datetime) -> None:
            """Everything due at or before ``horizon``, in time order (a check before requests at its time)."""
            h_us = to_us(horizon)
            while True:
                t_req = requests.next_time_us(sp.source)
                if boundaries and boundaries[0] <= horizon and (t_req is None or to_us(boundaries[0]) <= t_req):
                    b = boundaries.pop(0)
                    advance(b)
                    online.flush()
                    self._check(b, predictor, plog)
                    checked[0] = True
                elif t_req is not None and t_req <= h_us and t_req < until_us:
                    group = requests.peek_group(sp.source)
                    assert group is not None
                    requests.consume(sp.source, group.n)
                    serve(group)
                    self.progress("serving", int(min(t_req, until_us) - to_us(start)) // 60_000_000,
                                  int(until_us - to_us(start)) // 60_000_000)
                else:
                    break
            advance(horizon)

        refreshed, last_save = False, time.monotonic()
        finished = False
        while True:
            now = min(clock.now(), drain)
            if ingest is not None:
                ingest.append_until(now)
            if clock.live or ingest is not None or not refreshed:
                events.refresh()
                requests.refresh()
                refreshed = True
            step(now)
            if now >= drain:
                finished = True
                break
            if stop is not None and stop.is_set():
                break
            if checked[0] or time.monotonic() - last_save > 5:
                checked[0] = False
                if last_ticket[0] is not None:
                    plog.wait(last_ticket[0])  # what the checkpoint says was served is on disk
                _write_checkpoint(checkpoint, self.policy, start, until, now, self, finished=False)
                last_save = time.monotonic()
            due = [drain, until] + boundaries[:1]
            t_req = requests.next_time_us(sp.source)
            if t_req is not None and t_req < until_us:
                due.append(from_us(t_req))
            if ingest is not None and (t_in := ingest.next_time()) is not None:
                due.append(t_in)
            if clock.live and ingest is None:
                due.append(now + timedelta(seconds=poll_seconds * getattr(clock, "speed", 1.0)))
            nxt = min(d for d in due if d > now) if any(d > now for d in due) else drain
            clock.sleep_until(nxt, stop)
        online.flush()
        plog.close()
        _write_checkpoint(checkpoint, self.policy, start, until, now, self, finished=finished)
        result = self.summarize(start, min(now, until))
        result.retrainings, result.retrain_cpu_seconds = self.retrainings, round(self.retrain_cpu_seconds, 1)
        result.finished, result.done_until, result.late_events = finished, now.isoformat(), events.late + requests.late
        if quality:
            self.progress("checking data quality", 0, 1)
            result.quality = served_quality(p, self.log, self.registry, PredictionLog(self.ws.predictions), start,
                                            min(now, until))
            self.progress("checking data quality", 1, 1)
        return result

    def _unlabelled(self, plog: PredictionLog, after: datetime) -> tuple[dict[str, str], set[str]]:
        """After a restart: predictions still waiting for labels, and entities served after ``after``."""
        joined = plog.joined()
        if joined.empty:
            return {}, set()
        waiting = joined[joined["label"].isna() & joined["entity_id"].notna()]
        later = joined[(joined["at"] > pd.Timestamp(after)) & joined["entity_id"].notna()]
        return dict(zip(waiting["entity_id"], waiting["request_id"], strict=True)), set(later["entity_id"])

    def _join_labels(self, events: EventBatch, pending: dict[str, str], plog: PredictionLog) -> None:
        lb = self.project.label
        out = []
        for fid, y, lt in zip(events[lb.id], events[lb.column], events["available_time"], strict=True):
            rid = pending.pop(str(fid), None)
            if rid is not None and y is not None:
                out.append({"request_id": rid, "label": float(y), "label_time": from_us(lt).isoformat()})
        if out:
            plog.log_labels(out)

    def _check(self, at: datetime, predictor: Predictor, plog: PredictionLog) -> None:
        """At a check time: decide whether to retrain (the trigger), then retrain and maybe promote."""
        pol, name = self.policy, self.project.name
        details: dict[str, Any] = {"kind": pol.trigger, "at": at.isoformat()}
        if pol.trigger == "performance":
            joined = plog.joined(start=at - timedelta(days=35), end=at, labelled_by=at)
            joined = joined[joined["label"].notna()]
            recent = joined[joined["at"] >= pd.Timestamp(at - timedelta(days=7))]
            before = joined[joined["at"] < pd.Timestamp(at - timedelta(days=7))]
            if len(recent) < pol.min_holdout_labels or len(before) < pol.min_holdout_labels:
                return
            ll_recent = binary_metrics(recent["label"].to_numpy(float), recent["score"].to_numpy(float))["log_loss"]
            ll_before = binary_metrics(before["label"].to_numpy(float), before["score"].to_numpy(float))["log_loss"]
            details.update(recent_log_loss=ll_recent, previous_log_loss=ll_before, labelled=len(recent))
            if ll_recent <= ll_before * (1 + pol.performance_threshold):
                return
        elif pol.trigger == "labels":
            champion = self.registry.get(name, self.registry.resolve(name, Registry.CHAMPION))
            since = pd.Timestamp(champion.label_cutoff or champion.train_to).to_pydatetime()
            new = _labels_between(self.log, self.project, since, at)
            details.update(new_labels=new, since=since.isoformat(), threshold=pol.min_new_labels)
            if new < pol.min_new_labels:
                return
        elif pol.trigger == "drift":
            drift = self._drift(at, plog)
            if drift is None:
                return
            details.update(drift)
            if not drift["drifted"]:
                return
        self.registry.record(name, "trigger", details=details, at=at.isoformat())
        cpu = time.process_time()
        self._retrain(at, predictor)
        self.retrain_cpu_seconds += time.process_time() - cpu
        self.retrainings += 1

    def _drift(self, at: datetime, plog: PredictionLog) -> dict[str, Any] | None:
        """Drift of the last 7 days' served features vs the champion's training window (None: too few rows)."""
        from loopml.loop.monitor import served_features
        from loopml.monitoring import DriftDetector

        name, pol = self.project.name, self.policy
        served = served_features(plog, at - timedelta(days=7), at)
        if len(served) < pol.min_holdout_labels:
            return None
        version = self.registry.resolve(name, Registry.CHAMPION)
        cached = getattr(self, "_drift_reference", None)
        if cached is None or cached[0] != version:
            mv = self.registry.get(name, version)
            ref = build_dataset(self.log, self.project, pd.Timestamp(mv.train_from).to_pydatetime(),
                                pd.Timestamp(mv.train_to).to_pydatetime(), label_cutoff=at)
            columns = [f for f in self.project.feature_names if f in served.columns]
            detector = DriftDetector(alpha=pol.drift_alpha, min_wasserstein=0.05, min_psi=0.02, columns=columns)
            self._drift_reference = cached = (version, detector.fit(ref[columns]))
        result = cached[1].test(served[cached[1].columns_])
        return {"drifted": bool(result.drifted), "drifted_features": [str(c) for c in result.drifted_columns],
                "served_rows": len(served), "champion_version": version}

    def _retrain(self, at: datetime, predictor: Predictor) -> None:
        """Train a challenger at ``at``; promote it if it beats the champion on the holdout."""
        p, pol, name = self.project, self.policy, self.project.name
        self.progress(f"retraining at {at.date()}", 0, 1)
        champion_v = self.registry.resolve(name, Registry.CHAMPION)
        _, champion = self.registry.load(name, champion_v)
        holdout_start = at - pol.holdout
        if pol.mode == "stateful":
            train_start = holdout_start - pol.period
            project = replace(p, model_params={**p.model_params, "n_estimators": pol.stateful_rounds})
            init = champion
        else:
            train_start, project, init = at - pol.train_window, p, None
        mv, _, _ = train_and_register(
            project, self.log, self.registry, train_start, holdout_start, label_cutoff=at, parent=champion_v,
            init_model=init, info={"trigger": pol.trigger, "cadence": pol.cadence, "mode": pol.mode,
                                   "at": at.isoformat()}, at=at)
        _, challenger = self.registry.load(name, mv.version)  # as it will be served: verified, with its recorded engine
        hold = build_dataset(self.log, p, holdout_start, at, label_cutoff=at)
        hold = hold[hold[p.label.name].notna()]
        y = hold[p.label.name].astype(float).to_numpy()
        evidence = {
            "holdout": [holdout_start.isoformat(), at.isoformat()], "labelled": len(y),
            "challenger": binary_metrics(y, challenger.predict_frame(hold)),
            "champion": binary_metrics(y, champion.predict_frame(hold)),
            "challenger_version": mv.version, "champion_version": champion_v, "mode": pol.mode,
        }
        evidence["gates"] = self._gates(hold, y, challenger, champion, holdout_start)
        failed = [g["gate"] for g in evidence["gates"] if not g["passed"]]
        wins = (len(y) >= pol.min_holdout_labels and not failed
                and evidence["challenger"]["log_loss"] < evidence["champion"]["log_loss"])
        evidence["decision"] = "promote" if wins else "keep champion"
        if failed:
            evidence["failed_gates"] = failed
        if wins:
            self.registry.promote(name, mv.version, reason="challenger beat champion on holdout log loss and passed "
                                  "the project's gates",
                                  evidence=evidence, at=at.isoformat())
            predictor.swap(challenger, mv.version)
        else:
            self.registry.record(name, "rejected", version=mv.version, details=evidence, at=at.isoformat())
        self.progress(f"retraining at {at.date()}", 1, 1)

    def _gates(self, hold: pd.DataFrame, y: np.ndarray, challenger: Any, champion: Any,
               holdout_start: datetime) -> list[dict[str, Any]]:
        """The project's promotion gates (:class:`~loopml.evaluation.gates.Gates`) on the holdout.

        Leakage checks are left to ``loopml evaluate``: they need cross-validated single-feature
        models, too slow to run at every weekly retraining.
        """
        from loopml.evaluation import compare_slices, expected_calibration_error, run_behaviour_tests
        from loopml.evaluation.gates import check_gates
        from loopml.loop.assess import BANDS, SLICE_COLUMNS

        gates = self.project.gates
        if len(y) == 0:
            return []
        p_new, p_old = challenger.predict_frame(hold), champion.predict_frame(hold)
        prior = _prior(self.log, self.project, holdout_start)
        prior_ll = binary_metrics(y, np.full(len(y), prior))["log_loss"]
        behaviour = (run_behaviour_tests(challenger, hold.reset_index(drop=True), self.project.behaviour, sample=2000)
                     if self.project.behaviour else [])
        columns = [c for c in SLICE_COLUMNS if c in hold.columns]
        worse = compare_slices(hold, y, p_new, p_old, columns, min_support=gates.min_slice_support,
                               max_worse=gates.max_slice_worse, bands=BANDS)
        results = check_gates(gates, log_loss=binary_metrics(y, p_new)["log_loss"], prior_log_loss=prior_ll,
                              ece=expected_calibration_error(y, p_new, n_bins=10), behaviour=behaviour,
                              champion_log_loss=binary_metrics(y, p_old)["log_loss"],
                              champion_ece=expected_calibration_error(y, p_old, n_bins=10), slices_worse=worse)
        for g in results:  # keep the registry record small: names of failing tests and slices only
            g.pop("slices", None)
        return results

    # -- results -------------------------------------------------------------------------------
    def summarize(self, start: datetime, until: datetime) -> LoopResult:
        """Per-month and per-week metrics of served predictions with their labels."""
        plog = PredictionLog(self.ws.predictions)
        joined = plog.joined(start=start, end=until)
        lab = joined[joined["label"].notna()].copy()
        months = []
        for m0 in [start.replace(day=1, hour=0, minute=0, second=0, microsecond=0), *month_starts(start, until)]:
            m1 = (month_starts(m0, until + timedelta(days=62)) or [until])[0]
            served = joined[(joined["at"] >= pd.Timestamp(max(m0, start))) & (joined["at"] < pd.Timestamp(min(m1, until)))]
            part = served[served["label"].notna()]
            y, s = part["label"].to_numpy(float), part["score"].to_numpy(float)
            prior = _prior(self.log, self.project, m0)
            mm = binary_metrics(y, s)
            base = binary_metrics(y, np.full(len(y), prior)) if len(y) else {"log_loss": float("nan")}
            versions = served["model_version"].value_counts()
            months.append({
                "month": m0.strftime("%Y-%m"),
                "model_version": int(versions.index[0]) if len(versions) else None,
                "model_versions": sorted(int(v) for v in versions.index),
                "predictions": len(served), "labelled": len(part),
                "log_loss": mm["log_loss"], "auc": mm["auc"], "brier": mm["brier"],
                "baseline_log_loss": base["log_loss"], "baseline_rate": prior,
            })
        weekly = []
        if len(lab):
            lab["week"] = lab["at"].dt.tz_convert("UTC").dt.tz_localize(None).dt.to_period("W-SUN").dt.start_time
            for wk, g in lab.groupby("week"):
                y_w, s_w = g["label"].to_numpy(float), g["score"].to_numpy(float)
                mm = binary_metrics(y_w, s_w)
                weekly.append({"week": str(wk.date()), "log_loss": mm["log_loss"], "auc": mm["auc"],
                               "ece": expected_calibration_error(y_w, s_w, n_bins=10), "labelled": mm["n"]})
        calibration = {}
        if len(lab):
            bins = np.linspace(0, 1, 11)
            idx = np.clip(np.digitize(lab["score"], bins) - 1, 0, 9)
            frame = pd.DataFrame({"b": idx, "s": lab["score"], "y": lab["label"]}).groupby("b")
            calibration = {"mean_score": frame["s"].mean().tolist(), "observed": frame["y"].mean().tolist(),
                           "count": frame["y"].size().tolist()}
        return LoopResult(months=months, decisions=self.registry.decisions(self.project.name), weekly=weekly,
                          calibration=calibration)


def _labels_between(log: Any, project: Project, after: datetime, until: datetime) -> int:
    """Labels that became available in (after, until]."""
    sql = f"SELECT count(*) FROM {log.relation_sql(project.label.source)} WHERE available_time > ? AND available_time <= ?"
    return int(duckdb_connect().execute(sql, [after, until]).fetchall()[0][0])


def _prior(log: Any, project: Project, before: datetime) -> float:
    """Positive rate of every label available before ``before``: the baseline known at that time."""
    lb = project.label
    sql = f'SELECT avg(CAST("{lb.column}" AS DOUBLE)) FROM {log.relation_sql(lb.source)} WHERE available_time < ?'
    value = duckdb_connect().execute(sql, [before]).fetchall()[0][0]
    return float(value) if value is not None else float("nan")


_CHECKPOINT = "loopml.loop/1"


def _policy_doc(policy: RetrainPolicy) -> dict[str, Any]:
    return {k: (v.total_seconds() if isinstance(v, timedelta) else v) for k, v in policy.__dict__.items()}


def _read_checkpoint(path: Path | None, policy: RetrainPolicy, start: datetime, until: datetime) -> dict[str, Any] | None:
    """The saved progress of an unfinished run with the same policy and window (None: start fresh)."""
    if path is None or not path.exists():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("format") != _CHECKPOINT:
        raise InvalidConfig(f"{path} is not a loop checkpoint (format {doc.get('format')!r}, expected {_CHECKPOINT!r})")
    if doc["finished"]:
        raise InvalidConfig(f"the loop recorded in {path} finished at {doc['done_until']}; use a new state folder "
                            "(or delete the checkpoint) to run it again")
    mine = {"policy": _policy_doc(policy), "start": start.isoformat(), "until": until.isoformat()}
    for key, value in mine.items():
        if doc[key] != value:
            raise InvalidConfig(f"cannot resume: {key} of the unfinished run in {path} is {doc[key]!r}; got {value!r}")
    return doc


def checkpoint_info(path: Path) -> Mapping[str, Any] | None:
    """What a checkpoint file says (policy, window, progress), or None if there is none."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _write_checkpoint(path: Path | None, policy: RetrainPolicy, start: datetime, until: datetime, done: datetime,
                      controller: LoopController, *, finished: bool) -> None:
    if path is None:
        return
    doc = {"format": _CHECKPOINT, "policy": _policy_doc(policy), "start": start.isoformat(),
           "until": until.isoformat(), "done_until": done.isoformat(), "finished": finished,
           "retrainings": controller.retrainings, "retrain_cpu_seconds": controller.retrain_cpu_seconds}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    os.replace(tmp, path)
