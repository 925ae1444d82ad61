"""Lookups keep the values they computed from a read-only state, for exactly the times they hold."""

from __future__ import annotations

import math
import random
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopml.features import Aggregate, Latest, OnlineExecutor, SQLiteOnlineStore
from loopml.features import online as online_mod
from loopml.features.online import GroupState, value_at, value_span
from loopml.timeutil import parse_time
from tests.features.test_online_lookup import _requests, _written_store

US = timedelta(microseconds=1)
AGGS = ["count", "sum", "mean", "min", "max", "std", "last", "last_k", "approx_distinct", "approx_quantile"]


def _feature(agg, w):
    extra = {"k": 3} if agg == "last_k" else {"quantile": 0.5, "kll_k": 200} if agg == "approx_quantile" else {}
    return Aggregate(f"{agg}_{w}", "ev", "k", agg, w * US, column=None if agg == "count" else "x", **extra)


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


events_st = st.lists(st.tuples(st.integers(-300, 3000), st.one_of(st.none(), st.integers(-5, 5).map(float))),
                     max_size=60).map(lambda es: sorted(es, key=lambda e: e[0]))
latest_st = st.one_of(st.none(), st.tuples(st.integers(-300, 3000), st.integers(-600, 0)))


@settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events_st, latest_st, st.integers(0, 40), st.lists(st.tuples(st.integers(-700, 3800), st.integers(1, 900)),
                                                       min_size=1, max_size=12))
def test_a_value_is_the_same_at_every_time_of_its_span(events, latest, tile_us, reads):
    state = GroupState()
    state.empty_like(["x"], ["x"])
    state.items["x"] = []
    state.use_tiles(tile_us)
    for ts, v in events:
        state.append(ts, [("x", v)])
    if latest is not None:  # available at latest[0], observed latest[1] before that
        state.latest["y"] = [latest[0], latest[0] + latest[1], 1, 7.0]
    for t, w in reads:
        feats = [_feature(agg, w) for agg in AGGS] + [Latest("y_any", "ev", "k", "y"),
                                                      Latest(f"y_{w}", "ev", "k", "y", max_age=w * US)]
        for f in feats:
            lo, hi = value_span(f, state, t)
            assert lo <= t < hi, (f.name, t, lo, hi)
            want = value_at(f, state, t)
            inside = {lo, hi - 1, t - 1, t + 1, *(random.Random(t).randint(max(lo, -5000), min(hi - 1, 9000))
                                                   for _ in range(3) if max(lo, -5000) <= min(hi - 1, 9000))}
            for u in inside:
                if lo <= u < hi:
                    assert _same(value_at(f, state, u), want), (f.name, t, u, lo, hi)
        assert value_span(feats[0], None, t) == (-(1 << 63), 1 << 63)


def test_the_span_ends_where_an_event_enters_or_leaves_the_window():
    state = GroupState()
    state.empty_like(["x"])
    for ts in (100, 200, 350):
        state.append(ts, [("x", 1.0)])
    f = _feature("sum", 100)  # the events in (t - 100, t]
    assert value_span(f, state, 250) == (200, 300)  # 200 entered at 200; leaves at 300
    assert value_span(f, state, 320) == (300, 350)  # 350 enters at 350
    assert value_span(f, state, 50) == (-(1 << 63), 100)
    assert value_span(f, state, 460) == (450, 1 << 63)
    late = Latest("y", "ev", "k", "y", max_age=50 * US)
    state.latest["y"] = [120, 100, 1, 3.0]  # observed at 100, available at 120, too old after 150
    assert [value_span(late, state, t) for t in (110, 130, 151)] == [(-(1 << 63), 120), (120, 151), (151, 1 << 63)]


def test_batched_lookups_reuse_kept_values_and_equal_fresh_reads(tmp_path, flights_project, flights_ws, monkeypatch):
    p = flights_project
    t = parse_time("2013-07-04T12:00:00Z")
    store, writer = _written_store(tmp_path, p, flights_ws, t)
    requests = _requests(flights_ws, p, t, n=40)
    # times before, at and after the state's end, each asked several times and out of order
    times = [t + timedelta(minutes=m) for m in (-400, -90, -61, -60, -59, -1, 0, 0, 1, 30, 30, 180, 2000)]
    rng = random.Random(0)
    asked = [(r, w) for r in requests for w in times]
    rng.shuffle(asked)
    reader = OnlineExecutor(p.features, store=store)
    plain = OnlineExecutor(p.features, store=store)
    plain.decode_cache_size = 0  # decodes every read: nothing kept between lookups
    calls = []
    real = online_mod.value_at

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(online_mod, "value_at", counted)
    for lo in range(0, len(asked), 16):
        part = asked[lo:lo + 16]
        got = reader.get_many([r for r, _ in part], [w for _, w in part])
        fresh = plain.get_many([r for r, _ in part], [w for _, w in part])
        for (r, w), a, b in zip(part, got, fresh, strict=True):
            want = writer.get(r, w)  # in memory: computed afresh
            assert list(a) == list(want) == list(b)
            assert all(_same(a[k], want[k]) and _same(b[k], want[k]) for k in want), (r, w)
    # a second pass in time order, as a server sees it: entities asked at the same time share kept values
    in_order = sorted(asked, key=lambda rw: rw[1])
    calls.clear()
    again = reader.get_many([r for r, _ in in_order], [w for _, w in in_order])
    kept = len(calls)
    calls.clear()
    assert again == plain.get_many([r for r, _ in in_order], [w for _, w in in_order])
    assert kept < len(calls) / 4, (kept, len(calls))  # the plain reader computes every value


def test_a_kept_list_value_is_not_shared_with_the_caller(tmp_path):
    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    f = Aggregate("last3", "ev", "k", "last_k", timedelta(hours=1), column="x", k=3)
    writer = OnlineExecutor([f], store=store)
    import pyarrow as pa

    writer.update("ev", pa.table({"k": ["a"] * 3, "x": [1.0, 2.0, 3.0], "available_time": [10, 20, 30],
                                  "event_time": [10, 20, 30], "event_id": [1, 2, 3]}))
    writer.flush()
    reader = OnlineExecutor([f], store=store)
    at = parse_time("1970-01-01T00:00:00.000040Z")
    first = reader.get_many([{"k": "a"}], at)[0]
    first["last3"].append(99.0)
    assert reader.get_many([{"k": "a"}], at)[0]["last3"] == [3.0, 2.0, 1.0]


def test_states_found_by_key_tuple_are_exactly_those_stored_under_its_text(tmp_path, monkeypatch):
    """A reader finds states it read before by key tuple (no key text), only while the store's version holds, and
    never for a key equal to a stored one but of another type (1.0 == 1 == True; their texts differ)."""
    import pyarrow as pa

    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    f = Aggregate("n", "ev", "k", "count", timedelta(hours=1))
    writer = OnlineExecutor([f], store=SQLiteOnlineStore(tmp_path / "online.sqlite"))  # another connection
    next_id = iter(range(1, 100))

    def write(keys):
        n = len(keys)
        writer.update("ev", pa.table({"k": keys, "available_time": [10] * n, "event_time": [10] * n,
                                      "event_id": [next(next_id) for _ in keys]}))
        writer.flush()

    write([1, 1])
    write(["1"])
    reader = OnlineExecutor([f], store=store)
    at = parse_time("1970-01-01T00:00:00.000040Z")
    texts = []
    real = online_mod.encode_key
    monkeypatch.setattr(online_mod, "encode_key", lambda key: texts.append(key) or real(key))
    assert reader.get_many([{"k": 1}, {"k": "1"}], at) == [{"n": 2}, {"n": 1}]
    texts.clear()
    # read before, same version: found by tuple, no key text built
    assert reader.get_many([{"k": 1}, {"k": "1"}, {"k": 1}], at) == [{"n": 2}, {"n": 1}, {"n": 2}]
    assert texts == []
    # equal keys of other types are looked up by their own text: nothing is stored under '[1.0]' or '[true]'
    assert reader.get_many([{"k": 1.0}, {"k": True}], at) == [{"n": 0}, {"n": 0}]
    assert texts == [(1.0,), (True,)]
    # another connection commits: the version moves, and the tuple's state is read again
    write([1])
    texts.clear()
    assert reader.get_many([{"k": 1}], at) == [{"n": 3}]
    assert texts == [(1,)]


def test_a_lookup_from_another_thread_never_trusts_a_version_read_on_this_one(tmp_path):
    """``data_version`` counts per connection (one per thread): a version read on one thread must not validate
    what a thread with a fresh connection sees, or a commit made between them would be missed."""
    import threading

    import pyarrow as pa

    f = Aggregate("n", "ev", "k", "count", timedelta(hours=1))
    writer = OnlineExecutor([f], store=SQLiteOnlineStore(tmp_path / "online.sqlite"))
    next_id = iter(range(1, 100))

    def write(n):
        writer.update("ev", pa.table({"k": ["a"] * n, "available_time": [10] * n, "event_time": [10] * n,
                                      "event_id": [next(next_id) for _ in range(n)]}))
        writer.flush()

    write(1)
    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    reader = OnlineExecutor([f], store=store)
    at = parse_time("1970-01-01T00:00:00.000040Z")
    assert reader.get_many([{"k": "a"}], at) == [{"n": 1}]  # cached under this thread's connection's version
    write(1)  # another connection commits
    seen = []
    worker = threading.Thread(target=lambda: seen.extend(reader.get_many([{"k": "a"}, {"k": "a"}], at)))
    worker.start()
    worker.join()
    assert seen == [{"n": 2}, {"n": 2}]
    assert reader.get_many([{"k": "a"}], at) == [{"n": 2}]
    versions = []
    worker = threading.Thread(target=lambda: versions.append(store.version()))
    worker.start()
    worker.join()
    assert versions[0] != store.version()  # equal counts on two connections are not the same version


def test_states_read_by_text_are_found_by_tuple_afterwards(tmp_path, monkeypatch):
    import pyarrow as pa

    f = Aggregate("n", "ev", "k", "count", timedelta(hours=1))
    writer = OnlineExecutor([f], store=SQLiteOnlineStore(tmp_path / "online.sqlite"))
    writer.update("ev", pa.table({"k": ["a"], "available_time": [10], "event_time": [10], "event_id": [1]}))
    writer.flush()
    reader = OnlineExecutor([f], store=SQLiteOnlineStore(tmp_path / "online.sqlite"))
    at = parse_time("1970-01-01T00:00:00.000040Z")
    assert reader.get({"k": "a"}, at) == {"n": 1}  # read by key text (get)
    texts = []
    real = online_mod.encode_key
    monkeypatch.setattr(online_mod, "encode_key", lambda key: texts.append(key) or real(key))
    assert reader.get_many([{"k": "a"}], at) == [{"n": 1}]  # the same version: kept by tuple now
    assert reader.get_many([{"k": "a"}], at) == [{"n": 1}]
    assert texts == [("a",)]
