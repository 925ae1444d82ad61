"""Point-in-time (PIT) training set for every flight of 2013: loopml vs pandas vs hand-written DuckDB SQL.

What is measured
----------------
Wall-clock seconds to compute the 13 *stored* features of ``examples/flights`` (6 windowed
aggregates, 7 latest values; the 6 request features are pure functions of the row and are left
out of the comparison) for the full 2013 spine (one row per scheduled flight, ~337k rows), starting
from the event log on disk (Parquet segments) and the spine DataFrame in memory, ending with one
float column per feature in spine order:

(a) loopml      ``OfflineExecutor(log, stored_features).join(spine)`` (the generated DuckDB SQL);
                also, for context, ``join`` with all 19 features (request features included) and
                with only the 6 aggregates / only the 7 latest values.
(b) pandas      read each source into pandas; ``merge_asof`` per Latest feature, groupby + time-based
                ``rolling(window, closed='right')`` over events and spine rows concatenated.
(c) DuckDB SQL  one hand-written query: window functions over events UNION spine rows for the
                aggregates (RANGE frames), ``ASOF LEFT JOIN`` for the latest values -- the most
                direct SQL, meant as the floor.

Each method runs once as a warm-up (its result is the one verified), then ``--repeat`` rounds run
every method once each, round-robin, so load bursts on a shared machine hit all methods alike; the
best round is reported. A method whose warm-up exceeds ``--slow`` seconds is timed by its warm-up only.

Before timing is trusted, (b) and (c) are checked value for value against (a) on the full spine:
floats equal within 1e-9 (absolute), missing equals missing. The number of mismatches per feature
is printed; a non-zero count is a bug in one of the implementations and is shown with examples.

Semantics (src/loopml/features/definitions.py), for a prediction at time t:
  Aggregate  events whose available_time is in (t - window, t]; count is 0 when there are none,
             mean is missing; missing input values are ignored.
  Latest     the most recently *available* non-missing value (available_time <= t; ties broken by
             event_time, then event_id); with max_age, missing if that value's event_time < t - max_age.

Run:  .venv/bin/python bench/bench_pit.py   (state goes to bench/.out/, gitignored)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from loopml import load_project
from loopml.datasets import build_spine
from loopml.features import OfflineExecutor
from loopml.features.definitions import Aggregate, Latest, RequestFeature
from loopml.timeutil import parse_time
from loopml.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / "bench" / ".out" / "state"
TOL = 1e-9


# --------------------------------------------------------------------------------------------
# (b) pandas, written the way a careful engineer would
# --------------------------------------------------------------------------------------------
def _read(log, source: str, columns: list[str]) -> pd.DataFrame:
    """One event-log source as pandas, in (available_time, event_time, event_id) order, UTC."""
    df = log.read(source, columns=columns).to_pandas()
    for c in ("event_time", "available_time"):
        df[c] = df[c].dt.tz_convert("UTC")
    return df.sort_values(["available_time", "event_time", "event_id"], kind="stable", ignore_index=True)


def _rolling(events: pd.DataFrame, keys: list[str], spine: pd.DataFrame,
             specs: list[tuple[str, str | None, str, pd.Timedelta]]) -> dict[str, np.ndarray]:
    """Windowed aggregates at spine times. specs: (feature name, column or None, 'mean'|'count', window).

    Events and spine rows are concatenated per key and sorted by time with events *before* spine
    rows at equal times: a time-based rolling window ends at the current row, so an event available
    exactly at t must sort ahead of the spine row at t to be inside (t - window, t].
    """
    cols = sorted({c for _, c, _, _ in specs if c is not None})
    ev = events.dropna(subset=keys)[[*keys, "available_time", *cols]].rename(columns={"available_time": "ts"})
    ev["n_events"] = 1.0
    ev["spine_row"] = -1
    sp = spine[[*keys, "prediction_time"]].rename(columns={"prediction_time": "ts"})
    for c in cols:
        sp[c] = np.nan
    sp["n_events"] = 0.0
    sp["spine_row"] = np.arange(len(sp))
    sp = sp.dropna(subset=keys)  # a row without a key has no events: count 0, mean missing
    both = pd.concat([ev, sp], ignore_index=True)
    both["is_spine"] = both["spine_row"] >= 0
    both = both.sort_values([*keys, "ts", "is_spine"], kind="stable", ignore_index=True)
    is_spine = both["is_spine"].to_numpy()
    rows = both["spine_row"].to_numpy()[is_spine]
    grouped = both.groupby(keys, sort=False)
    out = {}
    for name, col, agg, window in specs:
        roll = grouped.rolling(window, on="ts", closed="right")
        vals = roll["n_events"].sum() if agg == "count" else roll[col].mean()
        # `both` is sorted by key, so groups come out in `both`'s row order: align positionally
        assert (vals.index.get_level_values("ts") == both["ts"]).all()
        vals = vals.to_numpy()
        res = np.full(len(spine), np.nan)
        res[rows] = vals[is_spine]
        if agg == "count":
            res = np.nan_to_num(res, nan=0.0)  # spine rows whose key has no events at all
        out[name] = res
    return out


def _latest(events: pd.DataFrame, keys: list[str], column: str, spine: pd.DataFrame,
            max_age: pd.Timedelta | None) -> np.ndarray:
    """Latest non-missing ``column`` per key as of each spine time (merge_asof, backward, inclusive)."""
    ev = events.dropna(subset=[*keys, column])[[*keys, "available_time", column]]  # already time-sorted
    left = spine[[*keys, "prediction_time"]]
    m = pd.merge_asof(left, ev, left_on="prediction_time", right_on="available_time", by=keys,
                      direction="backward", allow_exact_matches=True, tolerance=max_age)
    return m[column].to_numpy(dtype="float64")


def pandas_pit(log, spine: pd.DataFrame) -> pd.DataFrame:
    H, D = pd.Timedelta(hours=1), pd.Timedelta(days=1)
    dep = _read(log, "departures", ["origin", "dep_delay"])
    out_ev = _read(log, "outcomes", ["carrier", "origin", "dest", "tailnum", "arr_delay", "delayed"])
    weather = _read(log, "weather", ["origin", "temp", "wind_speed", "visib", "precip"])
    planes = _read(log, "planes", ["tailnum", "age_years", "seats"])
    # merge_asof's tolerance measures available_time; max_age is defined on event_time. For
    # weather the two are the same instant (an hourly observation is published on the hour).
    assert (weather["event_time"] == weather["available_time"]).all()
    cols: dict[str, np.ndarray] = {}
    cols |= _rolling(dep, ["origin"], spine, [
        ("origin_dep_delay_mean_1h", "dep_delay", "mean", 1 * H),
        ("origin_dep_delay_mean_3h", "dep_delay", "mean", 3 * H),
        ("origin_departures_3h", None, "count", 3 * H)])
    cols |= _rolling(out_ev, ["carrier"], spine, [
        ("carrier_arr_delay_mean_24h", "arr_delay", "mean", 24 * H),
        ("carrier_delayed_frac_7d", "delayed", "mean", 7 * D)])
    cols |= _rolling(out_ev, ["origin", "dest"], spine, [
        ("route_delayed_frac_7d", "delayed", "mean", 7 * D)])
    cols["plane_prev_arr_delay"] = _latest(out_ev, ["tailnum"], "arr_delay", spine, None)
    for c in ("temp", "wind_speed", "visib", "precip"):
        cols[f"origin_{c}"] = _latest(weather, ["origin"], c, spine, 3 * H)
    cols["plane_age_years"] = _latest(planes, ["tailnum"], "age_years", spine, None)
    cols["plane_seats"] = _latest(planes, ["tailnum"], "seats", spine, None)
    return pd.DataFrame(cols, index=spine.index)


# --------------------------------------------------------------------------------------------
# (c) hand-written DuckDB SQL, window functions + ASOF joins
# --------------------------------------------------------------------------------------------
# Frames are RANGE ... (window - 1 us) PRECEDING: a plain `INTERVAL 1 HOUR PRECEDING` frame is
# [t - 1h, t] and would wrongly include events exactly one window old (common: times are whole minutes).
# CURRENT ROW in RANGE mode takes every peer, so events available exactly at t are inside.
WINDOW_AGGS = """
dep_w AS (
    SELECT rid,
        avg(dep_delay) OVER (PARTITION BY origin ORDER BY t
            RANGE BETWEEN (INTERVAL 1 HOUR - INTERVAL 1 MICROSECOND) PRECEDING AND CURRENT ROW) AS origin_dep_delay_mean_1h,
        avg(dep_delay) OVER w AS origin_dep_delay_mean_3h,
        count(ev) OVER w AS origin_departures_3h
    FROM (
        SELECT origin, available_time AS t, dep_delay, 1 AS ev, NULL::BIGINT AS rid
        FROM {departures} WHERE origin IS NOT NULL
        UNION ALL
        SELECT origin, t, NULL, NULL, rid FROM s
    )
    WINDOW w AS (PARTITION BY origin ORDER BY t
                 RANGE BETWEEN (INTERVAL 3 HOUR - INTERVAL 1 MICROSECOND) PRECEDING AND CURRENT ROW)
    QUALIFY rid IS NOT NULL
),
carrier_w AS (
    SELECT rid,
        avg(arr_delay) OVER (PARTITION BY carrier ORDER BY t
            RANGE BETWEEN (INTERVAL 24 HOUR - INTERVAL 1 MICROSECOND) PRECEDING AND CURRENT ROW) AS carrier_arr_delay_mean_24h,
        avg(delayed) OVER (PARTITION BY carrier ORDER BY t
            RANGE BETWEEN (INTERVAL 168 HOUR - INTERVAL 1 MICROSECOND) PRECEDING AND CURRENT ROW) AS carrier_delayed_frac_7d
    FROM (
        SELECT carrier, available_time AS t, arr_delay, delayed::DOUBLE AS delayed, NULL::BIGINT AS rid
        FROM {outcomes} WHERE carrier IS NOT NULL
        UNION ALL
        SELECT carrier, t, NULL, NULL, rid FROM s
    )
    QUALIFY rid IS NOT NULL
),
route_w AS (
    SELECT rid,
        avg(delayed) OVER (PARTITION BY origin, dest ORDER BY t
            RANGE BETWEEN (INTERVAL 168 HOUR - INTERVAL 1 MICROSECOND) PRECEDING AND CURRENT ROW) AS route_delayed_frac_7d
    FROM (
        SELECT origin, dest, available_time AS t, delayed::DOUBLE AS delayed, NULL::BIGINT AS rid
        FROM {outcomes} WHERE origin IS NOT NULL AND dest IS NOT NULL
        UNION ALL
        SELECT origin, dest, t, NULL, rid FROM s
    )
    QUALIFY rid IS NOT NULL
)"""
WINDOW_SELECT = """dep_w.origin_dep_delay_mean_1h, dep_w.origin_dep_delay_mean_3h, dep_w.origin_departures_3h,
    carrier_w.carrier_arr_delay_mean_24h, carrier_w.carrier_delayed_frac_7d, route_w.route_delayed_frac_7d"""
WINDOW_JOINS = "JOIN dep_w USING (rid) JOIN carrier_w USING (rid) JOIN route_w USING (rid)"

# --------------------------------------------------------------------------------------------
# (c) continued: latest values and the query skeleton
# --------------------------------------------------------------------------------------------
# The value column's NULLs are filtered *before* the ASOF join (Latest skips missing values), and
# ties in available_time are kept to one row, the greatest (event_time, event_id), so the ASOF
# match is deterministic. max_age compares the matched value's event_time with t - max_age.
SKELETON = """
WITH s AS (SELECT rid, prediction_time AS t, origin, carrier, dest, tailnum FROM spine),
{aggs},
{latest_ctes}
SELECT s.rid,
    {agg_select},
    {latest_select}
FROM s
{agg_joins}
{latest_joins}
ORDER BY s.rid
"""
LATEST = [  # (feature, source, key, column, max_age in hours or None)
    ("plane_prev_arr_delay", "outcomes", "tailnum", "arr_delay", None),
    ("origin_temp", "weather", "origin", "temp", 3),
    ("origin_wind_speed", "weather", "origin", "wind_speed", 3),
    ("origin_visib", "weather", "origin", "visib", 3),
    ("origin_precip", "weather", "origin", "precip", 3),
    ("plane_age_years", "planes", "tailnum", "age_years", None),
    ("plane_seats", "planes", "tailnum", "seats", None),
]


def sql_text(log) -> str:
    src = {s: log.relation_sql(s) for s in ("departures", "outcomes", "weather", "planes")}
    ctes, cols, joins = [], [], []
    for i, (name, source, key, column, max_age) in enumerate(LATEST):
        ctes.append(f"""l{i} AS (
    SELECT {key}, available_time AS ts, event_time AS et, {column} AS v FROM {src[source]}
    WHERE {key} IS NOT NULL AND {column} IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY {key}, available_time ORDER BY event_time DESC, event_id DESC) = 1
)""")
        value = (f"l{i}.v" if max_age is None
                 else f"CASE WHEN l{i}.et >= s.t - INTERVAL {max_age} HOUR THEN l{i}.v END")
        cols.append(f"{value} AS {name}")
        joins.append(f"ASOF LEFT JOIN l{i} ON l{i}.{key} = s.{key} AND s.t >= l{i}.ts")
    return SKELETON.format(
        aggs=WINDOW_AGGS.strip().format(departures=src["departures"], outcomes=src["outcomes"]),
        latest_ctes=",\n".join(ctes), agg_select=WINDOW_SELECT, latest_select=",\n    ".join(cols),
        agg_joins=WINDOW_JOINS, latest_joins="\n".join(joins))


def sql_pit(log, spine: pd.DataFrame, sql: str) -> pd.DataFrame:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    sp = spine[["prediction_time", "origin", "carrier", "dest", "tailnum"]].assign(rid=np.arange(len(spine)))
    con.register("spine", sp)
    frame = con.execute(sql).df()
    con.close()
    assert (frame["rid"].to_numpy() == np.arange(len(spine))).all()
    frame.index = spine.index
    return frame.drop(columns="rid").astype("float64")


# --------------------------------------------------------------------------------------------
# harness
# --------------------------------------------------------------------------------------------
def time_all(methods: dict[str, Callable[[], object]], repeat: int, slow: float
             ) -> tuple[dict[str, float], dict[str, int], dict[str, object]]:
    """Warm up every method (keeping its result), then time ``repeat`` round-robin rounds.

    Round-robin rather than method after method, so that a burst of load on this shared machine
    hits every method alike; each method's best round is its time. A method whose warm-up took
    longer than ``slow`` seconds keeps its warm-up time and sits the rounds out.
    """
    results, runs = {}, {}
    for label, fn in methods.items():
        t0 = time.perf_counter()
        results[label] = fn()
        runs[label] = [time.perf_counter() - t0]
        print(f"  warm-up  {label:<58} {runs[label][0]:6.2f}", flush=True)
    timed = [label for label in methods if runs[label][0] <= slow]
    for label in timed:
        runs[label] = []
    for r in range(repeat):
        for label in timed:
            t0 = time.perf_counter()
            methods[label]()
            runs[label].append(time.perf_counter() - t0)
            print(f"  round {r + 1}  {label:<58} {runs[label][-1]:6.2f}", flush=True)
    return {k: min(v) for k, v in runs.items()}, {k: len(v) for k, v in runs.items()}, results


def compare(ref: pd.DataFrame, other: pd.DataFrame, names: list[str], spine: pd.DataFrame,
            label: str) -> int:
    total = 0
    print(f"\nmismatches of {label} vs loopml ({len(ref):,} rows; |diff| <= {TOL:g}, missing == missing):")
    for n in names:
        a = ref[n].to_numpy(dtype="float64")
        b = other[n].to_numpy(dtype="float64")
        both_nan = np.isnan(a) & np.isnan(b)
        close = np.abs(a - b) <= TOL
        bad = ~(both_nan | close)
        k = int(bad.sum())
        total += k
        print(f"  {n:<28} {k:>7}")
        for i in np.flatnonzero(bad)[:3]:
            r = spine.iloc[i]
            print(f"      row {i}: {r['flight_id']} t={r['prediction_time']} "
                  f"loopml={a[i]!r} {label}={b[i]!r}")
    return total


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())  # 1/5/15-minute run-queue averages


def _code_version() -> str:
    """The git commit measured, and whether src/ differed from it (the venv installs src/ editable)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"{head}" + (f" + uncommitted changes in {', '.join(changed)}" if changed else " (src clean)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--slow", type=float, default=60.0, help="time a method once if its warm-up exceeds this")
    args = ap.parse_args()

    load0 = _load()
    p = load_project(ROOT / "examples" / "flights")
    ws = Workspace.for_project(p, STATE)
    t0 = time.perf_counter()
    if ws.ensure_ingested(p):
        print(f"ingested the event log in {time.perf_counter() - t0:.1f} s")
    log = ws.log
    spine = build_spine(log, p, parse_time("2013-01-01"), parse_time("2014-01-01"))
    # the 13 stored features the pandas/SQL versions implement; `distance` (a static per-route
    # Latest since d2a88a0) is left out of the comparison
    stored = [f for f in p.features if not isinstance(f, RequestFeature) and f.name != "distance"]
    names = [f.name for f in stored]
    assert len([f for f in stored if isinstance(f, Aggregate)]) == 6
    assert len([f for f in stored if isinstance(f, Latest)]) == 7
    threads = duckdb.connect().execute("SELECT current_setting('threads')").fetchone()[0]
    print(f"spine: {len(spine):,} flights, prediction_time {spine['prediction_time'].min()} .. "
          f"{spine['prediction_time'].max()}; {len(stored)} stored features; duckdb threads: {threads}")
    sql = sql_text(log)

    aggs = [f for f in stored if isinstance(f, Aggregate)]
    latest = [f for f in stored if isinstance(f, Latest)]
    loopml = "loopml OfflineExecutor.join, 13 stored features"
    pandas_ = "pandas merge_asof + groupby-rolling"
    sql_ = "hand-written DuckDB SQL (window functions + ASOF joins)"
    methods = {
        loopml: lambda: OfflineExecutor(log, stored).join(spine),
        "loopml OfflineExecutor.join, all 19 features": lambda: OfflineExecutor(log, p.features).join(spine),
        "  of which: loopml, the 6 aggregates only": lambda: OfflineExecutor(log, aggs).join(spine),
        "  of which: loopml, the 7 latest values only": lambda: OfflineExecutor(log, latest).join(spine),
        pandas_: lambda: pandas_pit(log, spine),
        sql_: lambda: sql_pit(log, spine, sql),
    }
    print("\ntiming (seconds):")
    best, n, results = time_all(methods, args.repeat, args.slow)

    ref = results[loopml]
    bad = (compare(ref, results[pandas_], names, spine, "pandas")
           + compare(ref, results[sql_], names, spine, "sql"))

    print("\n| method | seconds (best of n) | n | ratio to loopml (13 stored) |")
    print("|---|---:|---:|---:|")
    for label in methods:
        print(f"| {label} | {best[label]:.2f} | {n[label]} | {best[label] / best[loopml]:.2f} |")
    print(f"\npython {sys.version.split()[0]}, duckdb {duckdb.__version__}, pandas {pd.__version__}, "
          f"numpy {np.__version__}; load average at start {load0}, at end {_load()}")
    print(f"loopml code: {_code_version()}")
    if bad:
        print(f"\nVALUES DISAGREE ({bad} mismatching cells): the timings above compare different answers")
        return 1
    print("\nall three methods agree on every feature of every row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
