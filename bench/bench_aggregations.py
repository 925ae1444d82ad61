"""last, last_k, approx_distinct, approx_quantile for every flight of 2013: loopml vs hand-written DuckDB.

What is measured
----------------
Wall-clock seconds to compute four windowed features for the full 2013 spine (~337k rows) from the
event log on disk, and how each answer compares with the exact one:

  origin_dep_delay_last_3h     last dep_delay of the origin in (t - 3h, t]
  origin_dep_delay_last5_3h    the 5 last, newest first
  origin_dep_delay_p90_3h      approx 0.9-quantile (loopml: DataSketches KLL, k=200)
  carrier_dests_24h            approx distinct destinations of the carrier's landed flights, 24h
                               (loopml: DataSketches HLL, lg_k=12)

(a) loopml     ``OfflineExecutor(log, features).join(spine)``; offline == online by construction
               (features/offline_extra.py runs the online read function).
(b) DuckDB     one hand-written query per source: window functions over events UNION spine rows,
               RANGE frames; ``arg_max`` by (available, event time, id) for last, ``list`` for
               last_k, ``quantile_disc`` (exact) and ``approx_count_distinct`` (DuckDB's own HLL)
               plus ``count(DISTINCT ...)`` (exact) for the reference answers.

Each method runs once as a warm-up, then ``--repeat`` rounds alternate the two; the median of the
per-round ratios is printed. Agreement: last/last_k/p90 against DuckDB's exact answers, distinct
against ``count(DISTINCT)`` (relative error; HLL's 3-sigma bound is printed beside it).

Run:  .venv/bin/python bench/bench_aggregations.py   (state goes to bench/.out/, gitignored)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from loopml import load_project
from loopml.datasets import build_spine
from loopml.features import OfflineExecutor
from loopml.features.definitions import Aggregate
from loopml.features.sketches import distinct_error
from loopml.timeutil import parse_time
from loopml.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / "bench" / ".out" / "state"
H = timedelta(hours=1)

FEATURES = [
    Aggregate("origin_dep_delay_last_3h", "departures", "origin", "last", 3 * H, column="dep_delay"),
    Aggregate("origin_dep_delay_last5_3h", "departures", "origin", "last_k", 3 * H, column="dep_delay", k=5),
    Aggregate("origin_dep_delay_p90_3h", "departures", "origin", "approx_quantile", 3 * H, column="dep_delay",
              quantile=0.9),
    Aggregate("carrier_dests_24h", "outcomes", "carrier", "approx_distinct", 24 * H, column="dest"),
]


def loopml(log, spine: pd.DataFrame) -> pd.DataFrame:
    return OfflineExecutor(log, FEATURES).join(spine)


def duckdb_sql(log, spine: pd.DataFrame) -> pd.DataFrame:
    con = duckdb.connect()
    sp = pd.DataFrame({"rid": np.arange(len(spine)), "origin": spine["origin"], "carrier": spine["carrier"],
                       "ts": spine["prediction_time"].astype("datetime64[us, UTC]").dt.tz_localize(None)
                       .to_numpy().astype("int64")})
    con.register("sp", sp)
    w3, w24 = 3 * 3600 * 10**6 - 1, 24 * 3600 * 10**6 - 1
    dep = con.execute(f"""
        WITH u AS (
            SELECT origin, epoch_us(available_time) AS ts, epoch_us(event_time) AS et, event_id,
                   CAST(dep_delay AS DOUBLE) AS v, NULL::BIGINT AS rid
            FROM {log.relation_sql("departures")} WHERE origin IS NOT NULL
            UNION ALL SELECT origin, ts, NULL, NULL, NULL, rid FROM sp)
        SELECT rid,
               arg_max(v, (ts, et, event_id)) FILTER (WHERE v IS NOT NULL) OVER w AS last,
               list(v ORDER BY ts DESC, et DESC, event_id DESC) FILTER (WHERE v IS NOT NULL) OVER w AS lst,
               quantile_disc(v, 0.9) OVER w AS p90
        FROM u WINDOW w AS (PARTITION BY origin ORDER BY ts RANGE BETWEEN {w3} PRECEDING AND CURRENT ROW)
        QUALIFY rid IS NOT NULL ORDER BY rid""").df()
    out = con.execute(f"""
        WITH u AS (
            SELECT carrier, epoch_us(available_time) AS ts, dest, NULL::BIGINT AS rid
            FROM {log.relation_sql("outcomes")} WHERE carrier IS NOT NULL
            UNION ALL SELECT carrier, ts, NULL, rid FROM sp)
        SELECT rid, approx_count_distinct(dest) OVER w AS approx, count(DISTINCT dest) OVER w AS exact
        FROM u WINDOW w AS (PARTITION BY carrier ORDER BY ts RANGE BETWEEN {w24} PRECEDING AND CURRENT ROW)
        QUALIFY rid IS NOT NULL ORDER BY rid""").df()
    con.close()
    last5 = [list(v[:5]) if isinstance(v, list | np.ndarray) and len(v) else None for v in dep["lst"]]
    return pd.DataFrame({"last": dep["last"], "last5": last5,
                         "p90": dep["p90"], "approx": out["approx"], "exact": out["exact"]})


def _time(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    res = fn(*args)
    return time.perf_counter() - t0, res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    p = load_project(ROOT / "examples" / "flights")
    ws = Workspace.for_project(p, STATE)
    ws.ensure_ingested(p)
    log = ws.log
    spine = build_spine(log, p, parse_time("2013-01-01"), parse_time("2014-01-01"))
    print(f"spine: {len(spine):,} rows; load average {os.getloadavg()[0]:.1f}")
    t_a, a = _time(loopml, log, spine)
    t_b, b = _time(duckdb_sql, log, spine)
    print(f"warm-up: loopml {t_a:.2f} s, DuckDB {t_b:.2f} s")

    def missing(v: object) -> bool:
        return v is None or (isinstance(v, float) and np.isnan(v))

    last_ok = sum((missing(x) and missing(y)) or x == y for x, y in zip(a["origin_dep_delay_last_3h"], b["last"],
                                                                         strict=True))
    last5_ok = sum((missing(x) and y is None) or (isinstance(x, list) and x == y)
                   for x, y in zip(a["origin_dep_delay_last5_3h"], b["last5"], strict=True))
    p90_ok = sum((missing(x) and missing(y)) or x == y for x, y in zip(a["origin_dep_delay_p90_3h"], b["p90"],
                                                                        strict=True))
    exact = b["exact"].to_numpy(dtype=float)
    has = exact > 0
    rel_loopml = np.abs(a["carrier_dests_24h"].to_numpy(dtype=float)[has] - exact[has]) / exact[has]
    rel_duck = np.abs(b["approx"].to_numpy(dtype=float)[has] - exact[has]) / exact[has]
    n = len(spine)
    print(f"agreement with exact answers over {n:,} rows:")
    print(f"  last            {last_ok:,}/{n:,} identical")
    print(f"  last_k (k=5)    {last5_ok:,}/{n:,} identical")
    print(f"  p90 (KLL)       {p90_ok:,}/{n:,} identical to quantile_disc (windows hold <= 200 values: exact regime)")
    print(f"  distinct (HLL)  loopml max rel. error {rel_loopml.max():.4f} (mean {rel_loopml.mean():.5f}); "
          f"DuckDB approx_count_distinct max {rel_duck.max():.4f} (mean {rel_duck.mean():.5f}); "
          f"HLL lg_k=12 3-sigma bound {distinct_error(12, 3):.4f}")
    ratios, ta, tb = [], [], []
    for r in range(args.repeat):
        order = [("loopml", loopml), ("duckdb", duckdb_sql)]
        if r % 2:
            order.reverse()
        got = {name: _time(fn, log, spine)[0] for name, fn in order}
        ta.append(got["loopml"])
        tb.append(got["duckdb"])
        ratios.append(got["loopml"] / got["duckdb"])
        print(f"round {r + 1}: loopml {got['loopml']:.2f} s, DuckDB {got['duckdb']:.2f} s, "
              f"ratio {ratios[-1]:.2f}")
    print(f"median: loopml {statistics.median(ta):.2f} s, DuckDB hand-written {statistics.median(tb):.2f} s, "
          f"loopml/DuckDB {statistics.median(ratios):.2f}x; load average {os.getloadavg()[0]:.1f}")
    return 0 if last_ok == n and last5_ok == n else 1


if __name__ == "__main__":
    raise SystemExit(main())
