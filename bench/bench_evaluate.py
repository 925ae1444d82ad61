"""`loopml evaluate` on one month: CPU and wall seconds of the whole command, new code vs an old revision.

What is measured
----------------
One run is the command of issue 4's contract in a fresh process,

    loopml evaluate --project examples/flights --state bench/.out/eval-state \
        --model-version champion --from 2013-06-01 --to 2013-07-01 --json

(everything `evaluate` computes: metrics with 1,000-resample bootstrap intervals for the model and
its baselines, calibration and reliability, split and Mondrian conformal sets, slices and the
worst-slice search, behavioural tests, robustness probes, leakage checks, SHAP, ROC/PR curves, gates,
the model card and the HTML report with its plots). CPU is the child's user + system time from
``getrusage(RUSAGE_CHILDREN)`` (all threads, start-up and imports included, and the process the command
starts to draw the report's plots, which it waits for); wall is ``perf_counter``. The per-stage CPU
printed for ``new`` is ``evaluate_version``'s own process time, without that plotting process.
Issue 4 asks for wall time ("in a few seconds"), and since the ONNX batches, SHAP, the DuckDB
builds (beside the imports and the scoring) and the plots (beside the bootstrap) run on both cores,
wall can be well under CPU; but on this shared 2-core machine wall depends on whether the other core
is free -- with a load average of 2 or more there is none, and the overlap then buys nothing while its
small CPU overhead still counts -- so each run prints the 1-minute load average at its start, and the
per-round wall ratios are printed beside the CPU ones (compare runs at similar load).

- ``new``: loopml's source at ``--new`` (default: the checkout's ``src/`` as it is; give a revision
  to run a clean git worktree of it under bench/.out/evaluate/ instead, away from uncommitted edits).
- ``old``: the source at ``--old`` (default 2104489, the revision before this benchmark's changes),
  a git worktree under bench/.out/evaluate/.

Rounds alternate which goes first; medians over rounds and the median of the per-round CPU ratios.
Both must print the same evaluation document, timings and file paths aside: every number equal, or
within 1e-12 relative where a computation changed method (the leakage AUC by ranks instead of
scikit-learn's curve differs in the last bit); the script exits 1 otherwise, and prints how many
numbers differ at all. The state (the flights event log and v1, trained on 2013-01-01..2013-03-01 as in
bench/RESULTS.md's earlier measurement) is built on first use (~2 min).

Run:  .venv/bin/python bench/bench_evaluate.py [--rounds 3] [--month 2013-06] [--old REV] [--new REV]
      [--model-version V] (``--model-version 2`` after training a second version into the state
      exercises the champion baseline and the per-slice comparison with it)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _revisions import worktree  # bench/ is on sys.path when a script here runs

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / ".out" / "evaluate"
STATE = ROOT / "bench" / ".out" / "eval-state"
PY = ROOT / ".venv" / "bin" / "python"
OLD = "2104489"
CLI = "from loopml.cli import main; main()"  # what the `loopml` command runs
IGNORED = {"timings", "cpu_timings", "report", "model_card"}  # per-run timings and output paths


def ensure_state() -> None:
    if (STATE / "registry.sqlite").exists():
        return
    print(f"building {STATE} (ingest + train v1 on 2013-01-01..2013-03-01)", flush=True)
    subprocess.run([str(PY), "-c", CLI, "train", "--project", str(ROOT / "examples" / "flights"), "--from",
                    "2013-01-01", "--to", "2013-03-01", "--state", str(STATE), "--json"], check=True,
                   stdout=subprocess.DEVNULL)


def run(tree: Path, month: str, version: str) -> tuple[float, float, dict[str, Any]]:
    """CPU seconds, wall seconds and the JSON document of one `loopml evaluate` in a fresh process."""
    start = f"{month}-01"
    y, m = map(int, month.split("-"))
    end = f"{y + m // 12}-{m % 12 + 1:02d}-01"
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([str(PY), "-c", CLI, "evaluate", "--project", str(tree / "examples" / "flights"),
                          "--state", str(STATE), "--model-version", version, "--from", start, "--to", end,
                          "--json"], check=False, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"loopml evaluate failed for {tree}:\n{out.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, json.loads(out.stdout)


def differences(a: Any, b: Any, rel: float, path: str = "") -> list[str]:
    """Paths where two evaluation documents differ (floats by more than ``rel`` relative; NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only in one" for k in sorted(set(a) ^ set(b), key=str) if k not in IGNORED]
        for k in a:
            if k in b and k not in IGNORED:
                out += differences(a[k], b[k], rel, f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (u, v) in enumerate(zip(a, b, strict=True)) for d in differences(u, v, rel, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and (
            (math.isnan(a) and math.isnan(b)) or abs(a - b) <= rel * max(1.0, abs(a), abs(b))):
        return []
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--month", default="2013-06", help="YYYY-MM, evaluated from its first day to the next month's")
    ap.add_argument("--old", default=OLD, help=f"revision to compare with (default {OLD})")
    ap.add_argument("--new", help="revision of the new code (default: the checkout's src/ as it is)")
    ap.add_argument("--model-version", default="champion",
                    help="version to evaluate; one other than the champion adds the champion as a baseline")
    a = ap.parse_args()
    ensure_state()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()
    trees = {"new": worktree(a.new, OUT) if a.new else ROOT, "old": worktree(a.old, OUT)}
    label = {"new": f"new ({a.new or 'checkout at ' + head})", "old": f"old ({a.old})"}
    print(f"loopml evaluate, model version {a.model_version}, month {a.month}; HEAD {head}; load average at start "
          + "/".join(f"{x:.1f}" for x in os.getloadavg()), flush=True)
    cpu: dict[str, list[float]] = {"new": [], "old": []}
    wall: dict[str, list[float]] = {"new": [], "old": []}
    docs: dict[str, dict[str, Any]] = {}
    for r in range(a.rounds):
        for name in (("new", "old") if r % 2 == 0 else ("old", "new")):
            load = os.getloadavg()[0]
            c, w, docs[name] = run(trees[name], a.month, a.model_version)
            cpu[name].append(c)
            wall[name].append(w)
            print(f"  round {r + 1} {name}: CPU {c:.2f} s, wall {w:.2f} s (load {load:.1f} at start)", flush=True)
    print(f"load average at end {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"\nrows evaluated: {docs['new']['n']:,}; medians of {a.rounds} rounds\n")
    print("| code | CPU s | wall s |\n|---|---:|---:|")
    for name in ("old", "new"):
        print(f"| {label[name]} | {statistics.median(cpu[name]):.2f} | {statistics.median(wall[name]):.2f} |")
    ratios = [o / n for o, n in zip(cpu["old"], cpu["new"], strict=True)]
    print(f"\nCPU old/new: median of per-round ratios {statistics.median(ratios):.2f}x "
          f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
    walls = [o / n for o, n in zip(wall["old"], wall["new"], strict=True)]
    print(f"wall old/new: median of per-round ratios {statistics.median(walls):.2f}x "
          f"(rounds: {', '.join(f'{x:.2f}' for x in walls)}); new's wall/CPU {statistics.median(wall['new']) / statistics.median(cpu['new']):.2f}")
    stages = docs["new"].get("cpu_timings")
    if stages:
        print("new, CPU s per stage of evaluate_version (last round): "
              + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()) + f"; sum {sum(stages.values()):.2f}")
    exact = differences(docs["old"], docs["new"], 0.0)
    diff = differences(docs["old"], docs["new"], 1e-12)
    if diff:
        print(f"\nDIFFERENT RESULTS ({len(diff)} values), e.g.:\n  " + "\n  ".join(diff[:20]))
        return 1
    print(f"\nold and new documents agree (timings and file paths aside): {len(exact)} numbers differ at all, "
          "none by more than 1e-12 relative" + (f", e.g. {exact[0]}" if exact else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
