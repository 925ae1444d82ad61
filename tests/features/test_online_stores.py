"""One suite, both online stores: SQLite (embedded) and Redis (127.0.0.1:6379, real server)."""

from __future__ import annotations

import uuid

import pytest

from loopml.events import Replayer
from loopml.features import OnlineExecutor, RedisOnlineStore, SQLiteOnlineStore
from loopml.features.offline import records
from loopml.timeutil import parse_time


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.services)])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield SQLiteOnlineStore(tmp_path / "online.sqlite")
        return
    s = RedisOnlineStore("redis://127.0.0.1:6379/0", namespace=f"loopml-test-{uuid.uuid4().hex}")
    yield s
    s.clear()


def test_put_get_round_trip_and_missing_is_none(store):
    store.put_many("g/k", [("[\"a\"]", b"\x00\x01blob"), ("[\"b\"]", b"other")])
    assert store.get("g/k", "[\"a\"]") == b"\x00\x01blob"
    assert store.get("g/k", "[\"zz\"]") is None
    assert store.get("other/k", "[\"a\"]") is None
    assert store.get_many([("g/k", "[\"b\"]"), ("g/k", "[\"zz\"]"), ("g/k", "[\"a\"]")]) == [b"other", None, b"\x00\x01blob"]
    assert store.get_many([("g/k", "[\"b\"]")]) == [b"other"]  # one pair: the lookup's common case
    assert store.get_many([("g/k", "[\"zz\"]")]) == [None]


def test_overwrite_replaces_and_watermark_round_trips(store):
    store.put_many("g/k", [("x", b"1")])
    store.put_many("g/k", [("x", b"2")])
    assert store.get("g/k", "x") == b"2"
    assert store.get_watermark() is None
    store.set_watermark(1_370_000_000_000_000)
    assert store.get_watermark() == 1_370_000_000_000_000
    assert store.count() == 1


def test_many_keys_in_one_get_many(store):
    items = [(f"k{i}", str(i).encode()) for i in range(1000)]
    store.put_many("g", items)
    got = store.get_many([("g", k) for k, _ in items])
    assert got == [b for _, b in items]


def test_serving_reads_from_the_store_what_ingestion_computed(store, flights_project, flights_ws):
    p = flights_project
    t = parse_time("2013-07-04T15:00:00Z")
    writer = OnlineExecutor(p.features, store=store)
    replayer = Replayer(flights_ws.log, writer.sources, start=parse_time("2013-06-01"), columns=writer.columns())
    for source, batch in replayer.advance_to(t):
        writer.update(source, batch)
    writer.flush()
    reader = OnlineExecutor(p.features, store=store)
    import duckdb

    rows = duckdb.connect().execute(
        f"SELECT * FROM {flights_ws.log.relation_sql('schedule')} WHERE available_time >= ? ORDER BY available_time LIMIT 200",
        [t]).df()
    for c in ("sched_dep",):
        rows[c] = rows[c].dt.tz_convert("UTC")
    for request in records(rows, list(p.spine.request_fields)):
        at = request["sched_dep"] - p.spine.lead
        assert reader.get(request, at) == writer.get(request, at)
