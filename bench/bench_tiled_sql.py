"""Would SQL over tiles make the offline executor's windowed aggregates faster?  (It does not.)

Issue 3 asks for windowed aggregates "computed by SQL over the same tiles" offline. This times, in one
DuckDB connection and one process, the two plans for ``max`` and ``sum`` of a float column over 7- and
30-day windows ``(t - w, t]`` for 500,000 spine rows over 2,000,000 synthetic events (200 keys, one
year, values N(10, 5); seeded):

- ``range``: what ``OfflineExecutor`` runs -- one window over events and spine rows,
  ``RANGE BETWEEN w - 1 PRECEDING AND CURRENT ROW`` (DuckDB answers each frame from a segment tree);
- ``tiled``: a one-level tiled plan with the online executor's tile lengths (3 hours for 7 days, 12
  hours for 30): per-(key, tile) aggregates by GROUP BY, the tiles wholly inside each window by a
  frame with per-row offsets over the tile rows, and the two edge tiles by within-tile running
  aggregates (forward and backward) found with ASOF joins.

Both plans run twice, alternated; the script checks that ``max`` is identical and ``sum`` agrees
within 1e-6 on every row. Synthetic data on purpose: a dense key (10,000 events per key per year) is
where tiles should help most.

Run:  .venv/bin/python bench/bench_tiled_sql.py
"""

from __future__ import annotations

import os
import time

import duckdb
import numpy as np
import pyarrow as pa

RANGE = """
WITH u AS (SELECT k, ts, v, NULL::BIGINT rid FROM ev0 UNION ALL SELECT k, t, NULL, rid FROM sp)
SELECT rid, max(v) OVER w1 mx, sum(v) OVER w1 s FROM u
WINDOW w1 AS (PARTITION BY k ORDER BY ts RANGE BETWEEN {w_1} PRECEDING AND CURRENT ROW)
QUALIFY rid IS NOT NULL"""

TILED = """
WITH ev AS (SELECT k, ts, (ts - 1) // {L} AS tk, v FROM ev0),
s2 AS (SELECT k, t, rid, (t - {w}) // {L} AS kl, (t - 1) // {L} AS kr FROM sp),
tl AS (SELECT k, tk, max(v) mx, sum(v) s FROM ev GROUP BY ALL),
tu AS (SELECT k, 2 * tk AS o, mx, s, NULL::BIGINT rid, 0::BIGINT span FROM tl
       UNION ALL SELECT k, 2 * kr - 1, NULL, NULL, rid, greatest(2 * kr - 1 - 2 * (kl + 1), 0) FROM s2),
tp AS (SELECT rid, max(mx) OVER f mx, sum(s) OVER f s FROM tu
       WINDOW f AS (PARTITION BY k ORDER BY o RANGE BETWEEN span PRECEDING AND CURRENT ROW) QUALIFY rid IS NOT NULL),
re AS (SELECT k, tk, ts, max(v) OVER r mx, sum(v) OVER r s FROM ev
       WINDOW r AS (PARTITION BY k, tk ORDER BY ts RANGE UNBOUNDED PRECEDING)),
le AS (SELECT k, tk, ts, max(v) OVER r mx, sum(v) OVER r s FROM ev
       WINDOW r AS (PARTITION BY k, tk ORDER BY ts RANGE BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING)),
rp AS (SELECT s2.rid, re.mx, re.s FROM s2 ASOF LEFT JOIN re ON s2.k = re.k AND s2.kr = re.tk AND s2.t >= re.ts),
lp AS (SELECT s2.rid, le.mx, le.s FROM s2 ASOF LEFT JOIN le ON s2.k = le.k AND s2.kl = le.tk AND s2.t - {w} < le.ts)
SELECT s2.rid, greatest(tp.mx, rp.mx, lp.mx) mx, coalesce(tp.s, 0) + coalesce(rp.s, 0) + coalesce(lp.s, 0) s
FROM s2 JOIN tp USING (rid) JOIN rp USING (rid) JOIN lp USING (rid)"""


def main() -> None:
    rng = np.random.default_rng(0)
    k, n, s = 200, 2_000_000, 500_000
    year = 365 * 86400 * 10**6
    ev = pa.table({"k": rng.integers(0, k, n), "ts": np.sort(rng.integers(1, year, n)), "v": rng.normal(10, 5, n)})
    sp = pa.table({"k": rng.integers(0, k, s), "t": rng.integers(1, year, s), "rid": np.arange(s)})
    con = duckdb.connect()
    con.register("ev0", ev)
    con.register("sp", sp)
    print("| window | plan | round 1 s | round 2 s |\n|---|---|---:|---:|")
    for days, tile in ((7, 3 * 3600 * 10**6), (30, 12 * 3600 * 10**6)):
        w = days * 86400 * 10**6
        plans = {"range": RANGE.format(w_1=w - 1), "tiled": TILED.format(w=w, L=tile)}
        times: dict[str, list[float]] = {"range": [], "tiled": []}
        out = {}
        for name in ("range", "tiled", "range", "tiled"):
            t0 = time.perf_counter()
            out[name] = con.execute(plans[name] + " ORDER BY rid").df()
            times[name].append(time.perf_counter() - t0)
        for name, ts in times.items():
            print(f"| {days} days | {name} | {ts[0]:.2f} | {ts[1]:.2f} |")
        a, b = out["range"], out["tiled"]
        same_max = bool((a.mx.fillna(-1e300) == b.mx.fillna(-1e300)).all())
        close_sum = bool(np.isclose(a.s.fillna(0), b.s, atol=1e-6).all())
        print(f"|  | same values: max identical {same_max}, sum within 1e-6 {close_sum} | | |")
    print(f"load average at end {os.getloadavg()}; duckdb {duckdb.__version__}")


if __name__ == "__main__":
    main()
