"""Feature drift on 100,000 + 100,000 rows, 60 columns, 7 shifted: loopml vs Evidently vs NannyML vs SciPy.

Workload (``bench/drift_peers/gen_data.py``, the shared peer harness's generator): a reference and a
current window of 100,000 rows each, 50 numeric columns (normal and lognormal) and 10 categorical
ones (10 to 46 string levels). Seven columns are shifted in the current window: num_00 and num_01
by +0.1 sd, num_02 to num_04 scaled by 1.1, cat_00 mixed 20% towards another distribution, cat_01
with 3 points of share moved from its most to its least frequent level. The other 53 are drawn
from the same distribution as the reference. Three more windows with nothing shifted
(``cur_same_a/b/c``) are checked for false alarms by loopml (untimed).

Methods, each timed in a fresh process (data loading and imports are not timed):

floor       the plain SciPy loop of the peer harness (``worker.py scipy``): ``ks_2samp`` per numeric
            column, ``chi2_contingency`` on pandas ``value_counts`` per categorical one, Bonferroni
            over the 60 columns. Runs in loopml's venv (same NumPy/SciPy/pandas as loopml).
loopml fit  ``DriftDetector().fit(reference)`` and pickling the fitted detector to disk: done once
            per reference window.
loopml test unpickling that stored detector and ``test(current)``: what checking each new window
            costs (the reference is not read again). Default settings (Benjamini-Hochberg, effect
            floors of 0.02 sd Wasserstein / 0.02 Jensen-Shannon); flags are also reported without
            the floors, with BH and with ``correction="bonferroni"`` (the floor's rule).
evidently   Evidently 0.7 ``Report([DataDriftPreset()]).run(cur, ref)`` and ``.dict()`` (no HTML
            export), its default per-column rule, in its own venv.
nannyml     NannyML ``UnivariateDriftCalculator`` (Jensen-Shannon, chunks of 10,000 rows, its default
            thresholds) fit + calculate; a column counts as flagged if any chunk alerts. Own venv.

Every round runs each method once, in an order rotated from round to round, so a burst of load on
the shared machine hits all of them alike; the table shows medians over rounds and the ratios are
medians of per-round ratios. The peers' venvs (``bench/.out/drift/venv_*``) are created on the first
run (``--no-install`` to skip). Exit status 1 if loopml's KS or chi-square p-values differ from the
floor's (the timings would then compare different computations).

Run: ``.venv/bin/python bench/bench_drift.py [--rounds 3] [--only floor,loopml-fit,loopml-test]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / ".out" / "drift"
DATA = OUT / "data"
PEERS = HERE / "drift_peers"
STORED = OUT / "reference.pkl"
CURRENT = "cur_drift"
NULL_WINDOWS = ("cur_same_a", "cur_same_b", "cur_same_c")
METHODS = ("floor", "loopml-fit", "loopml-test", "evidently", "nannyml")
VENVS = {
    # versions resolved on 2026-11-26: evidently 0.7.23, nannyml 0.13.1, both with pandas 2.3.3
    "evidently": ["evidently>=0.7,<0.8", "psutil", "pandas<3"],
    "nannyml": ["nannyml>=0.13,<0.14", "psutil", "statsmodels", "pandas<3"],
}
PEER_ENV = {"PYTHONWARNINGS": "ignore", "NML_DISABLE_USAGE_LOGGING": "1", "DO_NOT_TRACK": "1",
            "MON_DATA": str(DATA), "MON_OUT": str(OUT / "peer-out"), "MON_HTML": "0"}


# --- the loopml side, run as `bench_drift.py --worker fit|test` in a fresh process ---------------------

def _load_frame(name: str, meta: dict):  # the same frame worker.py builds: string categories
    import numpy as np
    import pandas as pd

    x = np.load(DATA / f"{name}_num.npy")
    c = np.load(DATA / f"{name}_cat.npy")
    frame = pd.DataFrame(x, columns=meta["num_cols"])
    for j, col in enumerate(meta["cat_cols"]):
        levels = np.array([f"L{k:02d}" for k in range(meta["cat_levels"][j])], dtype=object)
        frame[col] = levels[c[:, j]]
    return frame


class _Timer:
    def __init__(self, into: dict, key: str) -> None:
        self.into, self.key = into, key

    def __enter__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def __exit__(self, *exc: object) -> None:
        self.into[f"{self.key}_s"] = time.perf_counter() - self.wall
        self.into[f"{self.key}_cpu_s"] = time.process_time() - self.cpu


def _worker(kind: str, stored: Path) -> None:
    from loopml.monitoring import DriftDetector

    meta = json.loads((DATA / "meta.json").read_text())
    t: dict = {}
    if kind == "fit":
        reference = _load_frame("ref", meta)
        with _Timer(t, "total"):
            with _Timer(t, "fit"):
                detector = DriftDetector().fit(reference)
            with _Timer(t, "store"):
                stored.write_bytes(pickle.dumps(detector, protocol=pickle.HIGHEST_PROTOCOL))
        res = {"stored_bytes": stored.stat().st_size}
    else:
        current = _load_frame(CURRENT, meta)
        with _Timer(t, "total"):
            with _Timer(t, "load_stored"):
                detector = pickle.loads(stored.read_bytes())
            with _Timer(t, "test"):
                result = detector.test(current)
        # untimed: the floor's correction, an effect floor, and false alarms on windows where nothing moved
        no_floor = {"min_wasserstein": 0.0, "min_jensen_shannon": 0.0}
        floors = {k: detector.get_params()[k] for k in no_floor}
        flags = {"default (bh + effect floors)": result.drifted_columns,
                 "bh, no floors": detector.set_params(**no_floor).test(current).drifted_columns,
                 "bonferroni, no floors": detector.set_params(correction="bonferroni").test(current).drifted_columns}
        detector.set_params(correction="bh", **floors)
        null_flags: dict = {"bh": [], "bonferroni": []}
        for name in NULL_WINDOWS:
            window = _load_frame(name, meta)
            for correction in ("bh", "bonferroni"):
                null_flags[correction].append(detector.set_params(correction=correction).test(window).drifted_columns)
        res = {"flags": flags, "null_flags": null_flags,
               "pvalues": {c.column: c.p_value for c in result.columns},
               "effects": {c.column: {"psi": c.psi, "wasserstein_sd": c.wasserstein_sd,
                                      "jensen_shannon": c.jensen_shannon} for c in result.columns}}
    print("RESULT " + json.dumps({"tool": f"loopml-{kind}", "total_s": t["total_s"],
                                  "total_cpu_s": t["total_cpu_s"], "sub": t, "res": res}))


# --- the driver ----------------------------------------------------------------------------------

def _venv_python(tool: str) -> Path:
    return OUT / f"venv_{tool}" / "bin" / "python"


def _prepare(methods: list[str], install: bool) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "peer-out").mkdir(exist_ok=True)
    if not (DATA / "meta.json").exists():
        DATA.mkdir(parents=True, exist_ok=True)
        print("generating the data (5 windows of 100,000 rows) ...", flush=True)
        subprocess.run([sys.executable, str(PEERS / "gen_data.py"), str(DATA)], check=True)
    for tool, specs in VENVS.items():
        if tool in methods and not _venv_python(tool).exists():
            if not install:
                sys.exit(f"{_venv_python(tool)} is missing; run without --no-install to create it")
            print(f"creating {OUT / f'venv_{tool}'} ({' '.join(specs)}) ...", flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(OUT / f"venv_{tool}")], check=True)
            subprocess.run([str(_venv_python(tool)), "-m", "pip", "install", "-q", *specs], check=True)


def _command(method: str) -> list[str]:
    here = str(Path(__file__).resolve())
    if method == "floor":
        return [sys.executable, str(PEERS / "worker.py"), "scipy", CURRENT]
    if method in ("loopml-fit", "loopml-test"):
        stored = OUT / "reference-timed.pkl" if method == "loopml-fit" else STORED
        return [sys.executable, here, "--worker", method.split("-")[1], "--stored", str(stored)]
    return [str(_venv_python(method)), str(PEERS / "worker.py"), method, CURRENT]


def _run(method: str) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(_command(method), capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **PEER_ENV})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{method} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[0][len("RESULT "):])
    result["process_wall_s"] = time.perf_counter() - start
    return result


def _flags(method: str, result: dict) -> dict[str, list[str]]:
    res = result["res"]
    if method == "floor":
        return {"bonferroni": res["flags"]["bonferroni60"], "alpha 0.05, uncorrected": res["flags"]["alpha0.05"]}
    if method == "loopml-test":
        return res["flags"]
    if method == "evidently":
        return {"default rule": res["flags"]["default"]}
    if method == "nannyml":
        return {"any chunk alerts": res["flags"]["any_chunk_alert"], "most chunks alert": res["flags"]["majority_chunks"]}
    return {}


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _commit() -> str:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    # the editable install runs src/ as it is; only the monitoring package matters here
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src/loopml/monitoring"],
                           capture_output=True, text=True, cwd=ROOT).stdout
    return rev + ("-dirty (uncommitted changes under src/loopml/monitoring are what runs)" if dirty.strip() else "")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--no-install", action="store_true", help="do not create the peers' venvs")
    parser.add_argument("--worker", choices=["fit", "test"], help=argparse.SUPPRESS)
    parser.add_argument("--stored", type=Path, default=STORED, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.stored)
        return 0

    methods = [m for m in METHODS if m in args.only.split(",")]
    _prepare(methods, install=not args.no_install)
    meta = json.loads((DATA / "meta.json").read_text())
    shifted = set(meta["drifted"])
    columns = meta["num_cols"] + meta["cat_cols"]
    print(f"commit {_commit()}; load average at start {_loadavg()}; {os.cpu_count()} CPUs", flush=True)
    # untimed: store the reference once (what loopml-test reads) and warm the file cache
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", "fit", "--stored", str(STORED)],
                   check=True, capture_output=True, cwd=ROOT)

    runs: dict[str, list[dict]] = {m: [] for m in methods}
    log = (OUT / "results.jsonl").open("a")
    for r in range(args.rounds):
        order = methods[r % len(methods):] + methods[:r % len(methods)]
        for method in order:
            result = _run(method)
            result["round"], result["loadavg"] = r, _loadavg()
            runs[method].append(result)
            log.write(json.dumps({"method": method, **result}) + "\n")
            log.flush()
            print(f"round {r} {method:12s} cpu {result['total_cpu_s']:7.2f} s  wall {result['total_s']:7.2f} s  "
                  f"load {result['loadavg']}", flush=True)

    def per_round(method: str, key: str) -> list[float]:
        return [x[key] for x in runs.get(method, [])]

    # loopml fit + test, round by round
    if "loopml-fit" in runs and "loopml-test" in runs:
        runs["loopml fit+test"] = [{"total_cpu_s": f["total_cpu_s"] + t["total_cpu_s"], "total_s": f["total_s"] + t["total_s"]}
                                   for f, t in zip(runs["loopml-fit"], runs["loopml-test"], strict=True)]

    def ratio(a: str, b: str, key: str) -> float:
        if a not in runs or b not in runs:
            return float("nan")
        return _median([x / y for x, y in zip(per_round(a, key), per_round(b, key), strict=True)])

    print(f"\nload average at end {_loadavg()}; medians over {args.rounds} rounds; "
          f"caught of {len(shifted)} shifted, false positives of {len(columns) - len(shifted)} unshifted")
    print(f"{'method':16s} {'CPU s':>7s} {'wall s':>7s} {'CPU/floor':>9s} {'wall/floor':>10s} "
          f"{'Evidently CPU/this':>18s} {'Evidently wall/this':>19s}  flags")
    for method in [*methods, "loopml fit+test"]:
        if method not in runs:
            continue
        flags = _flags(method, runs[method][-1]) if method in methods else {}
        verdicts = "; ".join(f"{rule}: {len(shifted & set(f))}/{len(shifted)} caught, {len(set(f) - shifted)} FP"
                             + (f" ({', '.join(sorted(set(f) - shifted))})" if set(f) - shifted else "")
                             for rule, f in flags.items())
        print(f"{method:16s} {_median(per_round(method, 'total_cpu_s')):7.2f} {_median(per_round(method, 'total_s')):7.2f} "
              f"{ratio(method, 'floor', 'total_cpu_s'):9.2f} {ratio(method, 'floor', 'total_s'):10.2f} "
              f"{ratio('evidently', method, 'total_cpu_s'):18.1f} {ratio('evidently', method, 'total_s'):19.1f}  {verdicts}")

    status = 0
    if "loopml-test" in runs:
        test = runs["loopml-test"][-1]["res"]
        nulls = test["null_flags"]
        print(f"\nloopml on the {len(NULL_WINDOWS)} windows where nothing moved: "
              + "; ".join(f"{k}: {sum(map(len, v))} FP ({', '.join(c for f in v for c in f) or 'none'})" for k, v in nulls.items()))
        fx = test["effects"]
        print("loopml effect sizes, shifted columns: " + ", ".join(
            f"{c} psi={fx[c]['psi']:.4f} " + (f"w_sd={fx[c]['wasserstein_sd']:.3f}" if c.startswith("num") else f"js={fx[c]['jensen_shannon']:.4f}")
            for c in meta["drifted"]))
        if "floor" in runs:
            floor_p = runs["floor"][0]["res"]["pvalues"]
            ks_bad = [c for c in meta["num_cols"] if test["pvalues"][c] != floor_p[c]]
            chi_bad = [c for c in meta["cat_cols"]
                       if abs(test["pvalues"][c] - floor_p[c]) > 1e-9 * max(abs(floor_p[c]), 1e-300)]
            print(f"p-values vs the floor: KS identical in {len(meta['num_cols']) - len(ks_bad)}/{len(meta['num_cols'])} columns, "
                  f"chi-square within 1e-9 (relative) in {len(meta['cat_cols']) - len(chi_bad)}/{len(meta['cat_cols'])}")
            if ks_bad or chi_bad:
                print(f"MISMATCH: {ks_bad + chi_bad}")
                status = 1
    print(f"results appended to {OUT / 'results.jsonl'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
