"""Point-in-time (PIT) training set for every flight of 2013: loopml vs pandas vs hand-written DuckDB SQL.

What is measured
----------------
Wall-clock seconds to compute the 13 *stored* features of ``examples/flights`` (6 windowed
aggregates, 7 latest values; the 6 request features are pure functions of the row and are left
out of the comparison) for the full 2013 spine (one row per scheduled flight, ~337k rows), starting
from the event log on disk (Parquet segments) and the spine DataFrame in memory, ending with one
float column per feature in spine order:

(a) loopml      ``OfflineExecutor(log, stored_features).join(spine)`` (the generated DuckDB SQL);
                also, for context, ``join`` with all 19 features (request features included).
(b) pandas      read each source into pandas; ``merge_asof`` per Latest feature, groupby + time-based
                ``rolling(window, closed='right')`` over events and spine rows concatenated.
(c) DuckDB SQL  one hand-written query: window functions over events UNION spine rows for the
                aggregates, ``ASOF LEFT JOIN`` for the latest values. This is the floor.

Each method runs once as a warm-up and is then timed ``--repeat`` times (best is reported); pandas
is timed once if its warm-up took longer than ``--slow`` seconds.

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
# (c) hand-written DuckDB SQL: the floor
# --------------------------------------------------------------------------------------------
# Frames are RANGE ... (window - 1 us) PRECEDING: a plain `INTERVAL 1 HOUR PRECEDING` frame is
# [t - 1h, t] and would wrongly include events exactly one window old (common: times are whole minutes).
# Latest: the value column's NULLs are filtered *before* the ASOF join (Latest skips missing values),
# and ties in available_time are broken by (event_time, event_id) so the ASOF match is deterministic.
SQL = """
WITH s AS (
    SELECT row_number() OVER () - 1 AS rid, prediction_time AS t, origin, carrier, dest, tailnum FROM spine
),
dep_w AS (
    SELECT rid,
        avg(dep_delay) OVER (PARTITION BY origin ORDER BY t
            RANGE BETWEEN (INTERVAL 1 HOUR - INTERVAL 1 MICROSECOND) PRECEDING AND CURRENT ROW) AS origin_dep_delay_mean_1h,
        avg(dep_delay) OVER w AS origin_dep_delay_mean_3h,
        coalesce(count(ev) OVER w, 0) AS origin_departures_3h
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
),
prev_arr AS (
    SELECT tailnum, available_time AS t, arr_delay FROM {outcomes}
    WHERE tailnum IS NOT NULL AND arr_delay IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY tailnum, available_time ORDER BY event_time DESC, event_id DESC) = 1
),
{weather_ctes},
{plane_ctes}
SELECT s.rid,
    dep_w.origin_dep_delay_mean_1h, dep_w.origin_dep_delay_mean_3h, dep_w.origin_departures_3h::DOUBLE AS origin_departures_3h,
    carrier_w.carrier_arr_delay_mean_24h, carrier_w.carrier_delayed_frac_7d, route_w.route_delayed_frac_7d,
    pa.arr_delay AS plane_prev_arr_delay,
    {weather_cols},
    {plane_cols}
FROM s
JOIN dep_w USING (rid) JOIN carrier_w USING (rid) JOIN route_w USING (rid)
ASOF LEFT JOIN prev_arr pa ON pa.tailnum = s.tailnum AND s.t >= pa.t
{weather_joins}
{plane_joins}
ORDER BY s.rid
"""


def _latest_cte(name: str, source: str, key: str, column: str) -> str:
    return f"""{name} AS (
    SELECT {key}, available_time AS t, event_time AS et, {column} AS v FROM {source}
    WHERE {key} IS NOT NULL AND {column} IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY {key}, available_time ORDER BY event_time DESC, event_id DESC) = 1
)"""


def sql_text(log) -> str:
    src = {s: log.relation_sql(s) for s in ("departures", "outcomes", "weather", "planes")}
    wx = ("temp", "wind_speed", "visib", "precip")
    pl = ("age_years", "seats")
    return SQL.format(
        departures=src["departures"], outcomes=src["outcomes"],
        weather_ctes=",\n".join(_latest_cte(f"wx_{c}", src["weather"], "origin", c) for c in wx),
        plane_ctes=",\n".join(_latest_cte(f"pl_{c}", src["planes"], "tailnum", c) for c in pl),
        weather_cols=", ".join(f"CASE WHEN wx_{c}.et >= s.t - INTERVAL 3 HOUR THEN wx_{c}.v END AS origin_{c}" for c in wx),
        plane_cols=", ".join(f"pl_{c}.v AS plane_{c}" for c in pl),
        weather_joins="\n".join(f"ASOF LEFT JOIN wx_{c} ON wx_{c}.origin = s.origin AND s.t >= wx_{c}.t" for c in wx),
        plane_joins="\n".join(f"ASOF LEFT JOIN pl_{c} ON pl_{c}.tailnum = s.tailnum AND s.t >= pl_{c}.t" for c in pl),
    )


def sql_pit(log, spine: pd.DataFrame, sql: str) -> pd.DataFrame:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("spine", spine[["prediction_time", "origin", "carrier", "dest", "tailnum"]])
    frame = con.execute(sql).df()
    con.close()
    frame.index = spine.index
    return frame.drop(columns="rid").astype("float64")


# --------------------------------------------------------------------------------------------
# harness
# --------------------------------------------------------------------------------------------
def timed(label: str, fn: Callable[[], object], repeat: int, slow: float) -> tuple[float, object, int]:
    t0 = time.perf_counter()
    result = fn()  # warm-up (also the result we verify)
    first = time.perf_counter() - t0
    if first > slow:
        print(f"  {label}: {first:.2f} s (warm-up > {slow:.0f} s: timed once)", flush=True)
        return first, result, 1
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    print(f"  {label}: warm-up {first:.2f} s, runs " + ", ".join(f"{r:.2f}" for r in runs), flush=True)
    return min(runs), result, repeat


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
            print(f"      row {i}: {r['flight_id']} t={r['prediction_time']} loopml={a[i]!r} {label}={b[i]!r}")
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--slow", type=float, default=60.0, help="time a method once if its warm-up exceeds this")
    args = ap.parse_args()

    p = load_project(ROOT / "examples" / "flights")
    ws = Workspace.for_project(p, STATE)
    t0 = time.perf_counter()
    if ws.ensure_ingested(p):
        print(f"ingested the event log in {time.perf_counter() - t0:.1f} s")
    log = ws.log
    spine = build_spine(log, p, parse_time("2013-01-01"), parse_time("2014-01-01"))
    stored = [f for f in p.features if not isinstance(f, RequestFeature)]
    names = [f.name for f in stored]
    assert len([f for f in stored if isinstance(f, Aggregate)]) == 6
    assert len([f for f in stored if isinstance(f, Latest)]) == 7
    threads = duckdb.connect().execute("SELECT current_setting('threads')").fetchone()[0]
    print(f"spine: {len(spine):,} flights, prediction_time {spine['prediction_time'].min()} .. "
          f"{spine['prediction_time'].max()}; {len(stored)} stored features; duckdb threads: {threads}")
    sql = sql_text(log)

    print("\ntiming (seconds):")
    rows = []
    t_l, ref, n_l = timed("loopml (13 stored)", lambda: OfflineExecutor(log, stored).join(spine), args.repeat, args.slow)
    rows.append(("loopml OfflineExecutor.join, 13 stored features", t_l, n_l))
    t_a, _, n_a = timed("loopml (all 19)", lambda: OfflineExecutor(log, p.features).join(spine), args.repeat, args.slow)
    rows.append(("loopml OfflineExecutor.join, all 19 features", t_a, n_a))
    t_p, pdf, n_p = timed("pandas", lambda: pandas_pit(log, spine), args.repeat, args.slow)
    rows.append(("pandas merge_asof + groupby-rolling", t_p, n_p))
    t_s, sdf, n_s = timed("duckdb hand SQL", lambda: sql_pit(log, spine, sql), args.repeat, args.slow)
    rows.append(("hand-written DuckDB SQL (floor)", t_s, n_s))

    bad = compare(ref, pdf, names, spine, "pandas") + compare(ref, sdf, names, spine, "sql")

    print(f"\n| method | seconds (best of n) | n | ratio to loopml (13 stored) |")
    print("|---|---:|---:|---:|")
    for label, secs, n in rows:
        print(f"| {label} | {secs:.2f} | {n} | {secs / t_l:.2f} |")
    print(f"\npython {sys.version.split()[0]}, duckdb {duckdb.__version__}, pandas {pd.__version__}, numpy {np.__version__}")
    if bad:
        print(f"\nVALUES DISAGREE ({bad} mismatching cells): the timings above compare different answers")
        return 1
    print("\nall three methods agree on every feature of every row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
