"""Data quality of a batch against a reference: loopml vs Evidently 0.7 vs a plain pandas loop (the floor).

100,000 reference and 100,000 current rows, 50 numeric and 10 categorical columns. Six columns of the
current batch carry injected problems: three numeric columns with 5% extra missing values, two
numeric columns with 1% of values far outside the reference range, one categorical column with 2%
of a category never seen before. The other 54 columns are fresh draws from the same distribution.

Each tool runs in a fresh process per round (Evidently in its own virtual environment under
bench/.out/quality/, created on first use), the order rotates between rounds, and the table shows
median CPU seconds and the median per-round ratio to loopml, plus which columns each tool flagged:

* loopml: ``DataQuality().fit(ref).check(cur)``; a column is flagged if its missing rate rose by more
  than 1 point, more than 0.1% of its values are outside the reference range, or more than 0.1% of
  its categories are unseen (an exact ``[min, max]`` range is exceeded by chance in about half of
  unchanged columns, by a handful of rows: hence a rate floor, not "any value").
* Evidently: ``Report([DataSummaryPreset()], include_tests=True).run(cur, ref)``; a column is
  flagged if any of its tests fails (the tests it derives from the reference).
* floor: the same three rules as loopml written as a pandas loop.

    .venv/bin/python bench/bench_quality.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / ".out" / "quality"
N, N_NUM, N_CAT = 100_000, 50, 10
NUM = [f"x{j:02d}" for j in range(N_NUM)]
CAT = [f"c{j:02d}" for j in range(N_CAT)]
MISSING, RANGE, UNSEEN = ["x00", "x01", "x02"], ["x03", "x04"], ["c00"]
INJECTED = sorted(MISSING + RANGE + UNSEEN)
EVIDENTLY = "evidently==0.7.23"


def make_data() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    if (OUT / "cur.parquet").exists():
        return
    rng = np.random.default_rng(0)

    def draw() -> pd.DataFrame:
        df = pd.DataFrame(rng.normal(size=(N, N_NUM)), columns=NUM)
        for c in NUM[::5]:  # some columns with a baseline of missing values
            df.loc[rng.random(N) < 0.02, c] = np.nan
        for j, c in enumerate(CAT):
            levels = np.array([f"L{k:02d}" for k in range(3 + j)], dtype=object)
            df[c] = levels[rng.integers(0, len(levels), N)]
        return df

    ref, cur = draw(), draw()
    for c in MISSING:
        cur.loc[rng.random(N) < 0.05, c] = np.nan
    for c in RANGE:
        cur.loc[rng.random(N) < 0.01, c] = 25.0
    cur.loc[rng.random(N) < 0.02, UNSEEN[0]] = "NEW"
    ref.to_parquet(OUT / "ref.parquet")
    cur.to_parquet(OUT / "cur.parquet")


def evidently_python() -> Path:
    venv = OUT / "venv_evidently"
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", EVIDENTLY, "pandas<3", "pyarrow"], check=True)
    return py


WORKER = r'''
import json, sys, time
import pandas as pd
tool, out = sys.argv[1], sys.argv[2]
ref, cur = pd.read_parquet(out + "/ref.parquet"), pd.read_parquet(out + "/cur.parquet")
flag = set()
c0, w0 = time.process_time(), time.perf_counter()
if tool == "loopml":
    from loopml.monitoring.quality import DataQuality
    report = DataQuality().fit(ref).check(cur)
    for c in report["columns"]:
        if (c["missing_rate"] - c["reference_missing_rate"] > 0.01 or c.get("out_of_range_rate", 0) > 0.001
                or c.get("unseen_category_rate", 0) > 0.001):
            flag.add(c["column"])
elif tool == "floor":
    for c in ref.columns:
        r, k = ref[c], cur[c]
        if k.isna().mean() - r.isna().mean() > 0.01:
            flag.add(c)
        if r.dtype.kind == "f":
            lo, hi = r.min(), r.max()
            v = k.dropna()
            if ((v < lo) | (v > hi)).mean() > 0.001:
                flag.add(c)
        else:
            if (~k.dropna().isin(set(r.dropna()))).mean() > 0.001:
                flag.add(c)
elif tool == "evidently":
    from evidently import Report
    from evidently.presets import DataSummaryPreset
    snap = Report([DataSummaryPreset()], include_tests=True).run(cur, ref)
    doc = snap.dict()
    for t in doc.get("tests", []):
        if str(t.get("status")).endswith("FAIL"):
            text = str(t.get("description")) + str(t.get("name"))
            for c in ref.columns:
                if f"'{c}'" in text:
                    flag.add(c)
print(json.dumps({"tool": tool, "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0,
                  "flagged": sorted(flag)}))
'''


def run(tool: str, py: Path) -> dict:
    proc = subprocess.run([str(py), "-c", WORKER, tool, str(OUT)], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    make_data()
    load0 = os.getloadavg()[0]
    pythons = {"loopml": Path(sys.executable), "floor": Path(sys.executable), "evidently": evidently_python()}
    tools = list(pythons)
    rows: dict[str, list[dict]] = {t: [] for t in tools}
    for r in range(args.rounds):
        order = tools[r % len(tools):] + tools[:r % len(tools)]
        for t in order:
            rows[t].append(run(t, pythons[t]))
            print(f"round {r + 1}: {t} {rows[t][-1]['cpu_s']:.2f} s CPU", file=sys.stderr, flush=True)
    print(f"\n{time.strftime('%Y-%m-%d')}: {N:,} + {N:,} rows, {N_NUM} numeric + {N_CAT} categorical columns, "
          f"{len(INJECTED)} with injected problems {INJECTED}; median of {args.rounds} rounds; "
          f"load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end\n")
    print("| tool | CPU s | wall s | CPU ratio to loopml | injected caught | clean columns flagged |")
    print("|---|---:|---:|---:|---:|---:|")
    for t in tools:
        cpu = statistics.median(x["cpu_s"] for x in rows[t])
        wall = statistics.median(x["wall_s"] for x in rows[t])
        ratio = statistics.median(x["cpu_s"] / y["cpu_s"] for x, y in zip(rows[t], rows["loopml"], strict=True))
        flagged = set(rows[t][-1]["flagged"])
        print(f"| {t} | {cpu:.2f} | {wall:.2f} | {ratio:.2f}x | {len(flagged & set(INJECTED))}/{len(INJECTED)} | "
              f"{len(flagged - set(INJECTED))}/{N_NUM + N_CAT - len(INJECTED)} |")


if __name__ == "__main__":
    main()
