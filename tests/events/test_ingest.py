"""Exactly-once ingestion from JSON-lines files and Redis Streams, on both online stores (in-process).

The SIGKILL test with a real subprocess is in test_stream_crash.py; here each failure point is forced
deterministically: a crash between commit and acknowledgement, a crash before the commit, a torn line.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from loopml.errors import EventLogError, NotReady
from loopml.events import (
    Column,
    EventBatch,
    JsonLinesTail,
    RedisStreamConsumer,
    RedisStreamProducer,
    SourceSchema,
    append_jsonl,
)
from loopml.events.stream import FIELD
from loopml.features import Aggregate, Latest, OnlineExecutor, RedisOnlineStore, SQLiteOnlineStore
from loopml.timeutil import to_us

REDIS = "redis://127.0.0.1:6379/0"
T0 = datetime(2013, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
FEATURES = [
    Aggregate("k_sum_2h", "s", "k", "sum", 2 * H, column="x"),
    Aggregate("k_mean_30m", "s", "k", "mean", H / 2, column="x"),
    Aggregate("k_count_1h", "s", "k", "count", H),
    Latest("k_last_x", "s", "k", "x"),
    Latest("k_label", "s", "k", "label", dtype="str"),
]
KEYS = ["a", "b", "c", "d", "e"]


def synthetic(n: int, seed: int = 0) -> list[dict]:
    """n events, mostly of source 's' (read by the features) and some of 'other' (read by none)."""
    rng = random.Random(seed)
    out, ids = [], {"s": 0, "other": 0}
    for i in range(n):
        t = to_us(T0) + i * 60_000_000
        source = "s" if rng.random() < 0.9 else "other"
        e = {"source": source, "event_id": ids[source], "event_time": t - rng.randrange(0, 600_000_000),
             "available_time": t, "k": rng.choice(KEYS), "x": rng.choice([None, round(rng.gauss(0, 10), 3)]),
             "label": rng.choice(["p", "q"])}
        ids[source] += 1
        out.append(e)
    return out


def reference(events: list[dict]) -> OnlineExecutor:
    """The same events applied directly, one batch, no store: the values an exactly-once consumer must reach."""
    ex = OnlineExecutor(FEATURES)
    rows = [e for e in events if e["source"] == "s"]
    cols = ["event_id", "event_time", "available_time", "k", "x", "label"]
    ex.update("s", EventBatch({c: [r.get(c) for r in rows] for c in cols}, len(rows)))
    return ex


def values(ex: OnlineExecutor, t: datetime) -> list[dict]:
    return [ex.get({"k": k}, t) for k in KEYS]


def fresh_reader(store) -> OnlineExecutor:
    return OnlineExecutor(FEATURES, store=store)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.services)])
def store_factory(request, tmp_path):
    """A function returning a new handle on one store (a restarted process opens its own)."""
    if request.param == "sqlite":
        yield lambda: SQLiteOnlineStore(tmp_path / "online.sqlite")
        return
    ns = f"loopml-test-{uuid.uuid4().hex}"
    yield lambda: RedisOnlineStore(REDIS, namespace=ns)
    RedisOnlineStore(REDIS, namespace=ns).clear()


@pytest.fixture
def stream():
    import redis

    name = f"loopml-test-stream-{uuid.uuid4().hex}"
    yield name
    redis.Redis.from_url(REDIS).delete(name)


def end_time(events: list[dict]) -> datetime:
    return datetime.fromtimestamp(events[-1]["available_time"] / 1e6, tz=UTC)


# -- JSON-lines files -----------------------------------------------------------------------------
def test_tail_applies_every_line_once_across_restarts_and_rotation(store_factory, tmp_path):
    events = synthetic(3000)
    d = tmp_path / "logs"
    d.mkdir()
    append_jsonl(d / "events-0001.jsonl", events[:1000])
    first = JsonLinesTail(OnlineExecutor(FEATURES, store=store_factory()), d / "*.jsonl", batch=300)
    first.run()
    assert first.ingestor.checkpoint.applied == 1000
    # the writer appends, then rotates to a new file; a new process resumes at the checkpoint
    append_jsonl(d / "events-0001.jsonl", events[1000:1700])
    append_jsonl(d / "events-0002.jsonl", events[1700:])
    second = JsonLinesTail(OnlineExecutor(FEATURES, store=store_factory()), d / "*.jsonl", batch=300)
    second.run()
    third = JsonLinesTail(OnlineExecutor(FEATURES, store=store_factory()), d / "*.jsonl", batch=300)
    third.run()  # nothing new: reads nothing, applies nothing
    assert third.stats.applied == 0
    assert third.ingestor.checkpoint.applied == 3000
    assert third.ingestor.checkpoint.position.endswith("events-0002.jsonl:" + str((d / "events-0002.jsonl").stat().st_size))
    t = end_time(events)
    assert values(fresh_reader(store_factory()), t) == values(reference(events), t)


def test_tail_with_a_crash_inside_a_commit_resumes_without_double_count(store_factory, tmp_path, monkeypatch):
    events = synthetic(2000, seed=1)
    path = tmp_path / "events.jsonl"
    append_jsonl(path, events)
    tail = JsonLinesTail(OnlineExecutor(FEATURES, store=store_factory()), path, batch=250)
    calls = {"n": 0}
    commit = tail.ingestor.sink.commit

    def dying_commit(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated crash before the 4th commit")
        return commit(*args, **kwargs)

    monkeypatch.setattr(tail.ingestor.sink, "commit", dying_commit)
    with pytest.raises(KeyboardInterrupt):
        tail.run()
    with pytest.raises(NotReady, match="restart the consumer"):
        tail.ingestor.apply([], "x")  # its memory is ahead of the store: it refuses to go on
    restarted = JsonLinesTail(OnlineExecutor(FEATURES, store=store_factory()), path, batch=250)
    assert restarted.ingestor.checkpoint.applied == 750
    restarted.run()
    assert restarted.ingestor.checkpoint.applied == 2000
    t = end_time(events)
    assert values(fresh_reader(store_factory()), t) == values(reference(events), t)


def test_tail_leaves_a_line_being_written_until_its_newline_arrives(tmp_path):
    events = synthetic(10)
    path = tmp_path / "events.jsonl"
    append_jsonl(path, events[:5])
    line = json.dumps(events[5])
    with open(path, "a") as f:
        f.write(line[:17])  # the writer is mid-line
    tail = JsonLinesTail(OnlineExecutor(FEATURES, store=SQLiteOnlineStore(tmp_path / "o.sqlite")), path)
    tail.run()
    assert tail.ingestor.checkpoint.applied == 5
    with open(path, "a") as f:
        f.write(line[17:] + "\n")
    tail.run()
    assert tail.ingestor.checkpoint.applied == 6
    assert tail.ingestor.checkpoint.quarantined == 0


def test_tail_refuses_a_truncated_file(tmp_path):
    path = tmp_path / "events.jsonl"
    append_jsonl(path, synthetic(20))
    tail = JsonLinesTail(OnlineExecutor(FEATURES, store=SQLiteOnlineStore(tmp_path / "o.sqlite")), path)
    tail.run()
    path.write_text("")
    with pytest.raises(EventLogError, match=r"shorter than the checkpointed offset \d+"):
        tail.run()


def test_bad_events_are_quarantined_with_the_reason_and_counted_never_coerced(store_factory, tmp_path):
    good = synthetic(6)
    path = tmp_path / "events.jsonl"
    bad_rows = [
        {**good[0], "event_id": 100, "x": "12.5"},                       # a string in an aggregated column
        {**good[0], "event_id": 101, "x": 5000.0},                       # outside the declared range
        {**good[0], "event_id": 102, "k": "zz"},                         # not an allowed key
        {**good[0], "event_id": 103, "available_time": "yesterday"},     # unparseable time
        {**good[0], "event_id": 104, "event_time": good[0]["available_time"] + 1},  # known before it happened
        {"event_id": 105, "x": 1.0},                                     # no source
    ]
    with open(path, "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in good[:3])
        f.writelines(json.dumps(e) + "\n" for e in bad_rows)
        f.write("{not json\n")
        f.writelines(json.dumps(e) + "\n" for e in good[3:])
    schema = SourceSchema("s", [Column("x", "float", min=-1000, max=1000), Column("k", "str", allowed=KEYS)])
    tail = JsonLinesTail(OnlineExecutor(FEATURES, store=store_factory()), path, schemas=[schema])
    tail.run()
    cp = tail.ingestor.checkpoint
    assert (cp.applied, cp.quarantined) == (6, 7)
    q = tail.ingestor.sink.quarantine(tail.ingestor.consumer)
    by_id = {r.event_id: r.reason for r in q}
    assert "x must be a number; got str '12.5'" in by_id[100]
    assert "x = 5000.0 is above the maximum 1000" in by_id[101]
    assert "k = 'zz' is not one of the allowed values" in by_id[102]
    assert "'s.available_time' must be an ISO-8601 timestamp" in by_id[103] and "'yesterday'" in by_id[103]
    assert "precedes event_time" in by_id[104]
    assert "'source' must be a source name" in by_id[105]
    assert by_id[None].startswith("not valid JSON")
    # each quarantined record points at its own line
    text = path.read_bytes()
    lines = {r.event_id: text[int(r.position.rpartition(":")[2]):].split(b"\n", 1)[0] for r in q}
    assert lines[None] == b"{not json"
    assert all(json.loads(lines[i])["event_id"] == i for i in range(100, 106))
    t = end_time(good)
    assert values(fresh_reader(store_factory()), t) == values(reference(good), t)


def test_events_of_a_source_arriving_late_are_quarantined_not_misapplied(tmp_path):
    events = [e for e in synthetic(40) if e["source"] == "s"]
    path = tmp_path / "events.jsonl"
    append_jsonl(path, [*events[:10], events[2] | {"event_id": 999}, *events[10:]])
    tail = JsonLinesTail(OnlineExecutor(FEATURES, store=SQLiteOnlineStore(tmp_path / "o.sqlite")), path)
    tail.run()
    (q,) = tail.ingestor.sink.quarantine(tail.ingestor.consumer)
    assert q.event_id == 999 and "is late" in q.reason
    t = end_time(events)
    assert values(fresh_reader(SQLiteOnlineStore(tmp_path / "o.sqlite")), t) == values(reference(events), t)


def test_after_skips_events_already_in_a_materialised_state(tmp_path):
    events = synthetic(100)
    path = tmp_path / "events.jsonl"
    append_jsonl(path, events)
    cut = end_time(events[:50])
    tail = JsonLinesTail(OnlineExecutor(FEATURES, store=SQLiteOnlineStore(tmp_path / "o.sqlite")), path, after=cut)
    tail.run()
    later = [e for e in events if e["available_time"] > to_us(cut)]
    assert tail.stats.applied == len(later)
    assert tail.stats.skipped == 50
    t = end_time(events)
    assert values(fresh_reader(SQLiteOnlineStore(tmp_path / "o.sqlite")), t) == values(reference(later), t)


# -- Redis Streams ----------------------------------------------------------------------------------
@pytest.mark.services
def test_stream_crash_between_commit_and_ack_redelivers_and_skips(store_factory, stream, monkeypatch):
    events = synthetic(1500, seed=2)
    assert RedisStreamProducer(REDIS, stream).publish(events) == 1500
    c = RedisStreamConsumer(OnlineExecutor(FEATURES, store=store_factory()), REDIS, stream, batch=200, block_ms=10)
    acks = {"n": 0}
    real_ack = c._redis.xack

    def dying_ack(*args):
        acks["n"] += 1
        if acks["n"] == 3:
            raise KeyboardInterrupt("simulated crash after the 3rd commit, before its XACK")
        return real_ack(*args)

    monkeypatch.setattr(c._redis, "xack", dying_ack)
    with pytest.raises(KeyboardInterrupt):
        c.run(idle_exit=0.05)
    # same consumer name after the restart: its pending entries come back with XREADGROUP 0
    again = RedisStreamConsumer(OnlineExecutor(FEATURES, store=store_factory()), REDIS, stream, batch=200, block_ms=10)
    assert again.ingestor.checkpoint.applied == 600
    stats = again.run(idle_exit=0.2)
    assert stats.duplicates == 200          # the batch committed but never acknowledged
    assert again.ingestor.checkpoint.applied == 1500
    assert again._redis.xpending(stream, "loopml")["pending"] == 0
    t = end_time(events)
    assert values(fresh_reader(store_factory()), t) == values(reference(events), t)


@pytest.mark.services
def test_stream_crash_before_commit_is_recovered_by_another_consumer_with_xautoclaim(store_factory, stream, monkeypatch):
    events = synthetic(1200, seed=3)
    RedisStreamProducer(REDIS, stream).publish(events)
    c = RedisStreamConsumer(OnlineExecutor(FEATURES, store=store_factory()), REDIS, stream, consumer="pod-a",
                            batch=300, block_ms=10)
    calls = {"n": 0}
    commit = c.ingestor.sink.commit

    def dying_commit(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash before the 2nd commit")
        return commit(*args, **kwargs)

    monkeypatch.setattr(c.ingestor.sink, "commit", dying_commit)
    with pytest.raises(KeyboardInterrupt):
        c.run(idle_exit=0.05)
    import redis

    r = redis.Redis.from_url(REDIS)
    assert r.xpending(stream, "loopml")["pending"] == 300    # read by pod-a, never acknowledged
    b = RedisStreamConsumer(OnlineExecutor(FEATURES, store=store_factory()), REDIS, stream, consumer="pod-b",
                            batch=300, block_ms=10, claim_idle_ms=50)
    assert b.recover() == 300                                # claimed from pod-a once idle 50 ms
    stats = b.run(idle_exit=0.2)
    assert stats.duplicates == 0
    assert b.ingestor.checkpoint.applied == 1200
    assert r.xpending(stream, "loopml")["pending"] == 0
    t = end_time(events)
    assert values(fresh_reader(store_factory()), t) == values(reference(events), t)


@pytest.mark.services
def test_stream_quarantines_an_entry_that_is_not_json(stream, tmp_path):
    import redis

    r = redis.Redis.from_url(REDIS)
    events = synthetic(5)
    RedisStreamProducer(REDIS, stream).publish(events[:2])
    bad_id = r.xadd(stream, {FIELD: b"{oops}"}).decode()
    RedisStreamProducer(REDIS, stream).publish(events[2:])
    c = RedisStreamConsumer(OnlineExecutor(FEATURES, store=SQLiteOnlineStore(tmp_path / "o.sqlite")), REDIS, stream,
                            block_ms=10)
    c.run(idle_exit=0.05)
    (q,) = c.ingestor.sink.quarantine(c.ingestor.consumer)
    assert q.position == bad_id and q.raw == "{oops}" and q.reason.startswith("not valid JSON")
    assert c.ingestor.checkpoint.applied == 5
