"""Online lookups in a serving process: the store's key text and the cache of decoded states."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopml.events import Replayer
from loopml.features import OnlineExecutor, SQLiteOnlineStore
from loopml.features import online as online_mod
from loopml.features.offline import records
from loopml.features.online import GroupState, encode_key
from loopml.timeutil import parse_time

_PARTS = st.one_of(st.text(), st.text(alphabet=st.characters(max_codepoint=127)), st.integers(), st.none(),
                   st.booleans(), st.floats(allow_nan=False, allow_infinity=False))


@given(st.lists(_PARTS, min_size=1, max_size=3).map(tuple))
def test_encode_key_is_exactly_the_compact_json_earlier_versions_stored(key):
    assert encode_key(key) == json.dumps(list(key), separators=(",", ":"))


def _requests(ws, p, t, n=60):
    import duckdb

    rows = duckdb.connect().execute(
        f"SELECT * FROM {ws.log.relation_sql('schedule')} WHERE available_time >= ? ORDER BY available_time LIMIT {n}",
        [t]).df()
    rows["sched_dep"] = rows["sched_dep"].dt.tz_convert("UTC")
    return list(records(rows, list(p.spine.request_fields)))


def _written_store(tmp_path, p, ws, t):
    """A SQLite store holding the state as of ``t`` (events from 2013-06-20), and the executor that wrote it."""
    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    writer = OnlineExecutor(p.features, store=store)
    for source, batch in Replayer(ws.log, writer.sources, start=parse_time("2013-06-20"),
                                  columns=writer.columns()).advance_to(t):
        writer.update(source, batch)
    writer.flush()
    return store, writer


def test_reader_decodes_each_stored_state_once_and_sees_every_new_flush(tmp_path, flights_project, flights_ws,
                                                                       monkeypatch):
    p = flights_project
    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    writer = OnlineExecutor(p.features, store=store)
    replayer = Replayer(flights_ws.log, writer.sources, start=parse_time("2013-06-20"), columns=writer.columns())
    t1, t2 = parse_time("2013-07-04T12:00:00Z"), parse_time("2013-07-04T18:00:00Z")
    for source, batch in replayer.advance_to(t1):
        writer.update(source, batch)
    writer.flush()
    reader = OnlineExecutor(p.features, store=store)
    decodes = []
    real = GroupState.from_bytes.__func__
    monkeypatch.setattr(online_mod.GroupState, "from_bytes",
                        classmethod(lambda cls, blob: decodes.append(1) or real(cls, blob)))
    requests = _requests(flights_ws, p, t2)
    at = [r["sched_dep"] - p.spine.lead for r in requests]
    reads = []
    real_get_many = store.get_many_versioned
    monkeypatch.setattr(store, "get_many_versioned", lambda pairs: reads.append(len(pairs)) or real_get_many(pairs))
    first = [reader.get(r, a) for r, a in zip(requests, at, strict=True)]
    n_first, n_reads = len(decodes), len(reads)
    again = [reader.get(r, a) for r, a in zip(requests, at, strict=True)]
    assert again == first and len(decodes) == n_first  # nothing changed in the store: no state parsed again
    assert len(reads) == n_reads  # ... nor read: SQLite's data_version says nothing was committed since
    other = SQLiteOnlineStore(tmp_path / "online.sqlite")  # a commit through another connection (an ingester)
    other.set_watermark(1)
    assert [reader.get(r, a) for r, a in zip(requests, at, strict=True)] == first and len(reads) > n_reads
    for source, batch in replayer.advance_to(t2):  # the writer moves on and flushes new state
        writer.update(source, batch)
    writer.flush()
    later = [reader.get(r, a) for r, a in zip(requests, at, strict=True)]
    assert later == [writer.get(r, a) for r, a in zip(requests, at, strict=True)]
    assert later != first and len(decodes) > n_first  # changed blobs were decoded afresh


def test_decode_cache_is_bounded(tmp_path, flights_project, flights_ws):
    p = flights_project
    t = parse_time("2013-07-04T12:00:00Z")
    store, writer = _written_store(tmp_path, p, flights_ws, t)
    reader = OnlineExecutor(p.features, store=store)
    reader.decode_cache_size = 5
    requests = _requests(flights_ws, p, t)
    for r in requests:
        a = r["sched_dep"] - p.spine.lead
        assert reader.get(r, a) == writer.get(r, a)
    assert len(reader._decode_cache) == 5


def test_versioned_read_returns_get_many_blobs_and_the_version_they_were_read_at(tmp_path):
    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    items = [(f"[{i}]", f"blob{i}".encode()) for i in range(450)]  # > 199 pairs: several statements
    store.put_many("g@1", items)
    for pairs in ([("g@1", "[7]")], [("g@1", "[404]")], [("g@1", "[3]"), ("h@1", "[3]"), ("g@1", "[1]")],
                  [("g@1", k) for k, _ in items] + [("g@1", "[9999]")]):
        version, blobs = store.get_many_versioned(pairs)
        assert blobs == store.get_many(pairs)
        assert version == store.version()
    before, _ = store.get_many_versioned([("g@1", "[1]")])
    SQLiteOnlineStore(tmp_path / "online.sqlite").put_many("g@1", [("[1]", b"new")])  # another connection commits
    after, blobs = store.get_many_versioned([("g@1", "[1]")])
    assert after != before and blobs == [b"new"]


def test_reader_without_cache_reads_the_store_on_every_lookup_and_agrees_with_the_cached_one(
        tmp_path, flights_project, flights_ws, monkeypatch):
    p = flights_project
    t = parse_time("2013-07-04T12:00:00Z")
    _, writer = _written_store(tmp_path, p, flights_ws, t)
    cached = OnlineExecutor(p.features, store=SQLiteOnlineStore(tmp_path / "online.sqlite"))
    uncached_store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    uncached = OnlineExecutor(p.features, store=uncached_store)
    uncached.decode_cache_size = 0
    reads = []
    real = uncached_store.get_many
    monkeypatch.setattr(uncached_store, "get_many", lambda pairs: reads.append(1) or real(pairs))
    requests = _requests(flights_ws, p, t, n=30)
    for _ in range(2):
        for r in requests:
            a = r["sched_dep"] - p.spine.lead
            assert uncached.get(r, a) == cached.get(r, a) == writer.get(r, a)
    assert len(reads) == 2 * len(requests)
    assert not uncached._fresh[1] and not uncached._fresh[2] and not uncached._decode_cache


def test_sqlite_store_page_cache_is_set_on_every_threads_connection_and_validated(tmp_path):
    import threading

    import pytest

    from loopml.errors import InvalidConfig

    store = SQLiteOnlineStore(tmp_path / "online.sqlite", cache_mib=16)
    seen = []
    worker = threading.Thread(target=lambda: seen.append(store._con().execute("PRAGMA cache_size").fetchone()[0]))
    worker.start()
    worker.join()
    assert seen == [store._con().execute("PRAGMA cache_size").fetchone()[0]] == [-16 * 1024]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InvalidConfig, match=rf"cache_mib must be a positive integer.*got {bad!r}"):
            SQLiteOnlineStore(tmp_path / "x.sqlite", cache_mib=bad)


def test_get_many_equals_get_per_request_and_reads_the_store_once_per_batch(tmp_path, flights_project, flights_ws):
    """A batch (as the server's micro-batcher scores it) gets exactly what one get per request gets."""
    p = flights_project
    t = parse_time("2013-07-04T12:00:00Z")
    store, writer = _written_store(tmp_path, p, flights_ws, t)
    requests = _requests(flights_ws, p, t, n=40)
    requests[3] = {**requests[3], "tailnum": None}           # a key that is missing
    requests[5] = {**requests[5], "origin": "XXX"}           # an entity with no state
    requests.append(dict(requests[0]))                       # the same entity twice in one batch
    times = [t + (i % 7) * (parse_time("2013-07-04T12:10:00Z") - t) for i in range(len(requests))]
    for reader in (OnlineExecutor(p.features, store=store), writer):  # through the store, and in memory
        want = [reader.get(r, when) for r, when in zip(requests, times, strict=True)]
        assert reader.get_many(requests, times) == want
        assert reader.get_many(requests, t) == [reader.get(r, t) for r in requests]
    fresh = OnlineExecutor(p.features, store=store)
    calls = []
    real = store.get_many_versioned
    store.get_many_versioned = lambda pairs: calls.append(len(pairs)) or real(pairs)
    fresh.get_many(requests, times)
    assert len(calls) == 1 and calls[0] > len(fresh.groups)  # every entity of the batch in one statement
    store.get_many_versioned = real
    with pytest.raises(ValueError, match="one time per request"):
        fresh.get_many(requests, times[:-1])
