"""SIGKILL the stream consumer mid-stream, restart it, and get exactly the offline executor's values.

Real flights events (every feature source, available before 2013-01-09) are published to a Redis
Stream; ``loopml stream`` consumes them in a subprocess that is killed twice (SIGKILL, no cleanup):
the first restart uses another consumer name (the dead one's pending entries come back with
XAUTOCLAIM), the second the same name (they come back with XREADGROUP 0). The final online state,
read by a fresh executor from the store, must equal the offline executor's values at the same time
for every request, and an uninterrupted in-process consumer's values exactly. Both online stores.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pandas as pd
import pytest

from loopml.events import RedisStreamProducer, events_from_log
from loopml.events.checkpoint import checkpoint_sink
from loopml.features import OfflineExecutor, OnlineExecutor, RedisOnlineStore, SQLiteOnlineStore
from loopml.features.offline import records
from loopml.timeutil import parse_time

pytestmark = [pytest.mark.services, pytest.mark.slow]

REDIS = "redis://127.0.0.1:6379/0"
END = parse_time("2013-01-09T00:00:00Z")          # events available before END are streamed
AT = END - timedelta(microseconds=1)              # ... so the state is the state as of AT
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROJECT = os.path.join(ROOT, "examples", "flights")


def _same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or pd.isna(b)
    if b is None or pd.isna(b):
        return False
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return abs(float(a) - float(b)) <= 1e-9


@pytest.fixture(params=["sqlite", "redis"])
def online(request, tmp_path):
    """(store URL for the CLI, namespace, factory for a new handle on the same store)."""
    if request.param == "sqlite":
        path = str(tmp_path / "online.sqlite")
        yield path, "loopml", lambda: SQLiteOnlineStore(path)
        return
    ns = f"loopml-test-{uuid.uuid4().hex}"
    yield REDIS, ns, lambda: RedisOnlineStore(REDIS, namespace=ns)
    RedisOnlineStore(REDIS, namespace=ns).clear()


@pytest.fixture
def stream():
    import redis

    name = f"loopml-test-stream-{uuid.uuid4().hex}"
    yield name
    redis.Redis.from_url(REDIS).delete(name)


def _consumer(tmp_path, stream: str, store: str, namespace: str, name: str) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from loopml.cli import main; main()", "stream", "--project", PROJECT,
           "--state", str(tmp_path / "state"), "--redis-stream", stream, "--online-store", store,
           "--namespace", namespace, "--consumer", name, "--batch", "40", "--claim-idle-ms", "200",
           "--idle-exit", "2", "--json"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, sink, checkpoint: str, at_least: int) -> int:
    """SIGKILL ``proc`` as soon as its committed count reaches ``at_least``; return the count seen then."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        applied = sink.load(checkpoint).applied
        if applied >= at_least:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return applied
        if proc.poll() is not None:
            raise AssertionError(f"consumer exited ({proc.returncode}) before reaching {at_least} events: "
                                 f"{proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.002)
    proc.kill()
    raise AssertionError(f"consumer did not reach {at_least} events in time")


def test_sigkilled_consumer_restarts_to_the_offline_values_exactly_once(flights_project, flights_ws, online,
                                                                       stream, tmp_path):
    p, log = flights_project, flights_ws.log
    store_url, namespace, new_store = online
    columns = OnlineExecutor(p.features).columns()
    events = list(events_from_log(log, columns, end=END))
    total = len(events)
    assert total > 15_000 and {e["source"] for e in events} == set(columns)
    assert RedisStreamProducer(REDIS, stream).publish(events) == total

    sink = checkpoint_sink(new_store())
    name = f"redis:{stream}:loopml"
    seen1 = _kill_when(_consumer(tmp_path, stream, store_url, namespace, "pod-a"), sink, name, total // 5)
    # a replacement pod: pod-a's unacknowledged entries are claimed with XAUTOCLAIM
    seen2 = _kill_when(_consumer(tmp_path, stream, store_url, namespace, "pod-b"), sink, name, total // 2)
    # pod-b restarts under its own name: its pending entries come back with XREADGROUP 0
    last = _consumer(tmp_path, stream, store_url, namespace, "pod-b")
    out, errs = last.communicate(timeout=300)
    assert last.returncode == 0, errs.decode()[-2000:]
    assert 0 < seen1 < seen2 < total                         # both kills landed mid-stream

    cp = sink.load(name)
    assert cp.applied == total and cp.quarantined == 0       # every event counted once: none lost, none twice
    import redis

    assert redis.Redis.from_url(REDIS).xpending(stream, "loopml")["pending"] == 0

    # the final state, read by a fresh process-like executor from the store ...
    reader = OnlineExecutor(p.features, store=new_store())
    sched = log.read("schedule", start=END, end=END + timedelta(days=1)).to_pandas()
    sched["sched_dep"] = sched["sched_dep"].dt.tz_convert("UTC")
    requests = records(sched, list(p.spine.request_fields))
    assert len(requests) > 500
    got = [reader.get(r, AT) for r in requests]
    # ... equals the offline executor's values at the same time
    spine = sched.assign(prediction_time=pd.Timestamp(AT))
    offline = OfflineExecutor(log, p.features).join(spine)
    mismatches = [(i, n, g[n], offline[n].iloc[i]) for i, g in enumerate(got) for n in p.feature_names
                  if not _same(g[n], offline[n].iloc[i])]
    assert mismatches == []
    # ... and an uninterrupted consumer's values, exactly
    direct = OnlineExecutor(p.features)
    for source, batch in _batches(events):
        direct.update(source, batch)
    assert got == [direct.get(r, AT) for r in requests]
    # not a vacuous comparison: windowed and latest features have values
    assert sum(g["carrier_delayed_frac_7d"] is not None for g in got) > 0.9 * len(got)
    assert sum(g["plane_prev_arr_delay"] is not None for g in got) > 0.5 * len(got)


def _batches(events):
    from loopml.events import EventBatch

    by_source: dict[str, list[dict]] = {}
    for e in events:
        by_source.setdefault(e["source"], []).append(e)
    for source, rows in by_source.items():
        cols = [c for c in rows[0] if c != "source"]
        yield source, EventBatch({c: [r.get(c) for r in rows] for c in cols}, len(rows))
