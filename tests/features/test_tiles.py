"""Tiles: reads that merge sealed tiles equal reads over the raw events; tile state is canonical."""

from __future__ import annotations

import math
from datetime import timedelta
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopml.features import Aggregate, tiles
from loopml.features.online import GroupState, OnlineExecutor, value_at
from loopml.features.tiles import TILED_AGGREGATIONS, tile_length

US = timedelta(microseconds=1)
TILED = sorted(TILED_AGGREGATIONS)


def _build(events, tile_us):
    st_ = GroupState()
    st_.empty_like(["x"])
    st_.use_tiles(tile_us)
    for ts, v in events:
        st_.append(ts, [("x", v)])
    return st_


def _events(values):
    """Random events, sorted by available time (us, the log's order), in 50-us slots of 0 to 12 events:
    dense tiles (sealed) beside sparse ones (read raw) and empty ones, whatever the tile length."""
    counts = st.lists(st.sampled_from([0, 0, 1, 2, 5, 12]), min_size=8, max_size=60)
    times = counts.map(lambda ks: [i * 50 + 1 + (j * 7) % 50 for i, k in enumerate(ks) for j in range(k)])
    # some logs start before the epoch (negative times) and cross it
    times = st.tuples(times, st.sampled_from([0, 0, -1500])).map(lambda to: [t + to[1] for t in to[0]])
    return times.filter(bool).flatmap(
        lambda ts: st.lists(st.one_of(st.none(), values), min_size=len(ts), max_size=len(ts))
        .map(lambda vs: sorted(zip(ts, vs, strict=True), key=lambda e: e[0])))


reads_st = st.lists(st.tuples(st.integers(-1500, 3200), st.integers(1, 3000)), min_size=1, max_size=30)


def _sparse(min_events=1, numpy_from=48):
    """Seal tiles of ``min_events`` or more (with numpy from ``numpy_from`` values) and read through
    tiles wherever two fit: the cost heuristics must not hide a wrong merge from small random logs."""
    return mock.patch.multiple(tiles, MIN_TILE_EVENTS=min_events, MIN_WINDOW_EVENTS=0, _NUMPY_FROM=numpy_from)


def _check(events, tile_us, reads, close, min_events=1, numpy_from=48):
    with _sparse(min_events, numpy_from):
        return _check_reads(events, tile_us, reads, close)


def _check_reads(events, tile_us, reads, close):
    tiled, raw = _build(events, tile_us), _build(events, 0)
    back = GroupState.from_bytes(tiled.to_bytes())
    assert back.to_bytes() == tiled.to_bytes()
    used = 0
    for t, w in reads:
        for agg in TILED:
            f = Aggregate(f"{agg}_{w}", "ev", "k", agg, w * US, column="x")
            want = value_at(f, raw, t)
            for state in (tiled, back):
                got = value_at(f, state, t)
                assert (got is None) == (want is None), (agg, t, w, got, want)
                if want is not None:
                    assert close(agg, got, want, events), (agg, t, w, got, want)
        if tiled.tiles.start:
            hi = sum(1 for e in events if e[0] <= t)
            lo = sum(1 for e in events if e[0] <= t - w)
            used += tiled.tiles.window(lo, hi) is not None
    return used


def _exact(agg, got, want, events):
    return got == want


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_events(st.integers(-10**6, 10**6)), tile_us=st.sampled_from([1, 7, 50, 400]), reads=reads_st,
       min_events=st.sampled_from([1, 3, 6]), numpy_from=st.sampled_from([2, 48]))
def test_tiled_reads_equal_raw_reads_exactly_on_integer_values(events, tile_us, reads, min_events, numpy_from):
    # integer partial sums are exact, so sum and mean agree bit for bit; std is compared loosely
    def close(agg, got, want, events):
        if agg == "std":
            return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
        return got == want
    _check(events, tile_us, reads, close, min_events, numpy_from)


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_events(st.floats(-1e6, 1e6, allow_nan=False)), tile_us=st.sampled_from([1, 7, 50]), reads=reads_st,
       numpy_from=st.sampled_from([2, 48]))
def test_tiled_reads_equal_raw_reads_within_rounding_on_float_values(events, tile_us, reads, numpy_from):
    scale = max((abs(e[1]) for e in events if e[1] is not None), default=1.0) * len(events)

    def close(agg, got, want, events):
        if agg in ("min", "max"):
            return got == want
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12 * scale)
    _check(events, tile_us, reads, close, numpy_from=numpy_from)


def test_reads_of_long_windows_go_through_tiles():
    # 1,000 events, 16 per tile: dense enough for the default cost heuristic to choose tiles
    events = [(ts, float(ts % 13)) for ts in range(1, 3001, 3)]
    assert _check_reads(events, 50, [(3000, 2000), (2500, 1000), (1234, 777), (3000, 100)], _exact) == 3


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_events(st.integers(-1000, 1000)), tile_us=st.sampled_from([1, 7, 50]), cut=st.integers(0, 400),
       min_events=st.sampled_from([1, 2, 4]), split=st.integers(0, 400))
def test_trimmed_state_is_byte_identical_to_state_built_from_the_kept_events(events, tile_us, cut, min_events, split):
    """Which tiles are sealed depends on the kept events only: replay-then-trim == materialise,
    also when the replay stored its state half way and went on from the stored bytes."""
    cut, split = min(cut, len(events)), min(split, len(events))
    with _sparse(min_events, numpy_from=2):
        trimmed = GroupState.from_bytes(_build(events[:split], tile_us).to_bytes())
        for ts, v in events[split:]:
            trimmed.append(ts, [("x", v)])
        trimmed.trim(cut)
        assert trimmed.to_bytes() == _build(events[cut:], tile_us).to_bytes()


@settings(max_examples=100, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_events(st.integers(-1000, 1000)), tile_us=st.sampled_from([1, 7, 50]),
       min_events=st.sampled_from([1, 2, 4]))
def test_state_stored_without_tiles_gets_the_same_tiles_when_loaded(events, tile_us, min_events):
    """A blob written before tiles existed (or with another tile length) is retiled on load, identically."""
    with _sparse(min_events):
        want = _build(events, tile_us).to_bytes()
        old = GroupState.from_bytes(_build(events, 0).to_bytes())
        old.use_tiles(tile_us)
        assert old.to_bytes() == want
        other = GroupState.from_bytes(_build(events, tile_us * 3).to_bytes())
        other.use_tiles(tile_us)
        assert other.to_bytes() == want


def test_groups_get_tiles_only_for_long_windows_of_tiled_aggregations():
    h, d = timedelta(hours=1), timedelta(days=1)
    assert tile_length([]) == 0
    assert tile_length([int((3 * h) / US)]) == 0                        # 3 hours: raw reads
    assert tile_length([int((7 * d) / US)]) == int((3 * h) / US)        # 7 days: 3-hour tiles (56 of them)
    assert tile_length([int((24 * h) / US)]) == int((h / 4) / US)       # 1 day: quarter-hour tiles
    ex = OnlineExecutor([Aggregate("m7", "ev", "k", "mean", 7 * d, column="x"),
                         Aggregate("q7", "ev", "c", "approx_quantile", 7 * d, column="x", quantile=0.5)])
    by_keys = {g.keys: g.tile_us for g in ex.groups}
    assert by_keys == {("k",): int((3 * h) / US), ("c",): 0}  # a quantile cannot be merged from tiles


def test_untiled_state_keeps_its_bytes():
    """Groups without tiled aggregations store exactly what they stored before tiles existed."""
    st_ = _build([(5, 1.0), (6, None)], 0)
    assert b"tile_us" not in st_.to_bytes()


def test_sparse_tiles_are_not_sealed():
    """A tile of fewer than MIN_TILE_EVENTS events is read raw: no ingestion or storage cost for it."""
    sparse = [(ts, 1.0) for ts in range(1, 3001, 60)]          # one event per 50-us tile
    assert _build(sparse, 50).tiles.count == 0
    mixed = [(ts, 1.0) for ts in [*range(1, 1001, 3), *range(1001, 2001, 60), *range(2001, 3001, 3)]]
    st_ = _build(mixed, 50)
    assert 0 < st_.tiles.count < 3000 // 50 and all(e - s >= tiles.MIN_TILE_EVENTS
                                                      for s, e in zip(st_.tiles.start, st_.tiles.end, strict=True))
    # a window across the sparse middle reads the dense tiles on both sides and the gaps between them raw
    assert _check_reads(mixed, 50, [(3000, 2900), (2500, 2000)], _exact) == 2


def test_values_that_overflow_a_tile_sum_leave_the_tile_raw_and_ingestion_going():
    """A tile whose sum overflows is not sealed: reads of it fail (or not) exactly as raw reads do."""
    h = 3600 * 10**6
    events = [((i + 1) * 600 * 10**6, 1e308 if 20 <= i < 30 else (1e160 if 40 <= i < 45 else 1.0)) for i in range(90)]
    tiled, raw = _build(events, 3 * h), _build(events, 0)
    assert 0 < tiled.tiles.count and GroupState.from_bytes(tiled.to_bytes()).to_bytes() == tiled.to_bytes()
    t = events[-1][0]
    for agg in TILED:
        for w in (3 * h, 12 * h, 20 * h):
            f = Aggregate(f"{agg}_{w}", "ev", "k", agg, w * US, column="x")
            outcomes = []
            for state in (tiled, raw):
                try:
                    outcomes.append(("value", value_at(f, state, t)))
                except (OverflowError, ValueError) as exc:
                    outcomes.append(("error", type(exc)))
            assert outcomes[0] == outcomes[1], (agg, w, outcomes)


def test_std_of_a_large_mean_with_a_small_spread_keeps_its_precision():
    """The merge carries each tile's rounding residue, so tiled std is as close to exact as the raw one."""
    from fractions import Fraction
    vals = [1e9 + ((i * 7919) % 1000) / 1000 + (i % 3) / 10 for i in range(5000)]  # mean 1e9, sd ~0.3
    events = [((i + 1) * 60_000_000, v) for i, v in enumerate(vals)]
    tiled, raw = _build(events, 3600 * 10**6), _build(events, 0)
    f = Aggregate("std", "ev", "k", "std", timedelta(days=4), column="x")
    exact = [Fraction(v) for v in vals]
    mean = sum(exact) / len(exact)
    want = math.sqrt(float(sum((v - mean) ** 2 for v in exact) / (len(exact) - 1)))
    got_tiled, got_raw = value_at(f, tiled, events[-1][0]), value_at(f, raw, events[-1][0])
    assert tiled.tiles.count > 10
    assert abs(got_tiled - want) <= max(abs(got_raw - want), 1e-13 * want)
