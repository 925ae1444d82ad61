"""The 2013 experiment: which retraining policy serves the flights best, March to December?

Runs `loopml replay` over 2013-03-01..2014-01-01 under four policies, each in its own state folder
(sharing one ingested event log), two at a time, and prints per policy: log loss, ROC AUC and ECE of
all served predictions (labels joined from the prediction log), retrainings, promotions, rejected
challengers with the gates they failed, the CPU seconds the retrainings took (the controller's
``retrain_cpu_seconds``), the whole replay's CPU seconds (user + system of the replay process and its
children, from ``os.wait4`` on that one process, so two replays running at once do not mix) and its
wall seconds; then weekly log loss, AUC, ECE, mean score and delay rate per policy.

The code measured is one commit, not the working tree: the script exports ``--rev`` (default HEAD)
with ``git archive`` under ``bench/.out/policies/code-<sha>/`` and re-runs itself from there with
``PYTHONPATH`` on that ``src/``, so edits made in the checkout during the 30-90 minutes of the run
do not leak into it.

Writes the committed summary that ``loop_report`` shows (``examples/flights/results/``):
``policies.csv`` (one row per policy, with the commit and date measured), ``policies-weekly.csv``
and ``policies.png``; and the raw replay outputs under ``bench/.out/policies/<policy>/``.

Policies (loopml.loop.RetrainPolicy.named):
  static           trained on Jan-Feb, never retrained
  monthly          stateless retrain on the trailing 59 days at each month start
  weekly-stateful  continue boosting the champion with the past week's data every Monday
  triggered        weekly check; retrain (stateless) only if last week's log loss is >5% worse than the 4 weeks before
A challenger is promoted only if it beats the champion's log loss on the last 7 days' labels and
passes the project's gates there.

Usage: bench_policies.py [--rev=REV] [--only=a,b] [--summarize] [--ablation]
  --only reruns some policies and re-reads the others from their state folders (and their saved
  replay.json / rusage.json); --summarize reruns none.
  --ablation replays monthly and triggered again with only the holdout log-loss gate (the project's ECE
  and slice gates off: ``max_ece=1``, no slice large enough to be compared) into ``<policy>-loss-gate-only``
  state folders and prints them beside the runs with the project's gates (which must exist); it does not
  touch the committed summary. --workers=1 runs them one after the other (leaves a core free).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tarfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parents[1]  # the snapshot when re-run from one
REPO = Path(os.environ.get("BENCH_POLICIES_REPO", HERE))
POLICIES = ["static", "monthly", "weekly-stateful", "triggered"]
LOOPML = [sys.executable, "-m", "loopml.cli"]
START = "2013-03-01"
# --until and --out are for a quick check of the script itself (e.g. --until=2013-03-08 --out=/tmp/x)
UNTIL = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--until=")), "2014-01-01")
OUT = Path(next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--out=")),
                REPO / "bench" / ".out" / "policies"))
RESULTS = OUT / "results" if any(a.startswith("--out=") for a in sys.argv) else REPO / "examples" / "flights" / "results"


def _snapshot(rev: str) -> tuple[str, Path]:
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", rev], capture_output=True, text=True,
                         check=True).stdout.strip()
    code = REPO / "bench" / ".out" / "policies" / f"code-{sha[:12]}"
    if not (code / "src" / "loopml").is_dir():
        code.mkdir(parents=True, exist_ok=True)
        tar = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", sha, "src", "examples", "bench"],
                             capture_output=True, check=True).stdout
        import io

        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            tf.extractall(code, filter="data")
    return sha, code


def _reexec_from_snapshot() -> None:
    rev = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--rev=")), "HEAD")
    sha, code = _snapshot(rev)
    env = {**os.environ, "PYTHONPATH": str(code / "src"), "BENCH_POLICIES_SHA": sha, "BENCH_POLICIES_REPO": str(REPO)}
    print(f"measuring commit {sha[:12]} from {code}", file=sys.stderr, flush=True)
    os.execve(sys.executable, [sys.executable, str(code / "bench" / "bench_policies.py"), *sys.argv[1:]], env)


def run(policy: str, events: Path, *, project: Path | None = None, name: str | None = None) -> dict:
    """One full replay in its own state folder; its CPU seconds from wait4 on that process alone."""
    state = OUT / (name or policy)
    if state.exists():
        subprocess.run(["rm", "-rf", str(state)], check=True)
    state.mkdir(parents=True)
    (state / "events").symlink_to(events, target_is_directory=True)
    t0 = time.perf_counter()
    with open(state / "replay.json", "w") as out, open(state / "replay.err", "w") as err:
        proc = subprocess.Popen([*LOOPML, "replay", "--project", str(project or HERE / "examples" / "flights"),
                                 "--state", str(state), "--from", START, "--until", UNTIL, "--policy", policy,
                                 "--json"], stdout=out, stderr=err)
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{policy} failed (exit {proc.returncode}):\n{(state / 'replay.err').read_text()[-3000:]}")
    usage = {"commit": os.environ["BENCH_POLICIES_SHA"][:7], "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
             "max_rss_mb": ru.ru_maxrss / 1024}
    (state / "rusage.json").write_text(json.dumps(usage))
    print(f"{policy}: done in {wall:.0f} s wall, {usage['cpu_s']:.0f} s CPU", file=sys.stderr, flush=True)
    return _from_state(state)


def _rejection_reasons(details: dict) -> list[str]:
    """The gates a rejected challenger failed, or why it lost without failing one."""
    if details.get("failed_gates"):
        return list(details["failed_gates"])
    if details.get("labelled", 0) < 1000:
        return ["too few holdout labels"]
    return ["holdout log loss"]


def _from_state(state: Path) -> dict:
    """A finished replay's numbers, re-read from its state folder (registry, prediction log, saved outputs)."""
    from loopml.registry import ArtifactStore, Registry

    reg = Registry(f"sqlite:///{state / 'registry.sqlite'}", ArtifactStore(state / "artifacts"))
    decisions = reg.decisions("flights")
    replay = json.loads((state / "replay.json").read_text()) if (state / "replay.json").exists() else {}
    usage = json.loads((state / "rusage.json").read_text()) if (state / "rusage.json").exists() else {}
    nan = float("nan")
    rejected = [d for d in decisions if d["kind"] == "rejected"]
    # per gate: a rejected challenger can fail several, so these add up to more than the rejections
    reasons = Counter(g for d in rejected for g in _rejection_reasons(d["details"] or {}))
    return {"state": state, "decisions": decisions,
            "retrainings": sum(1 for d in decisions if d["kind"] == "trigger"),
            # the initial champion (trained on Jan-Feb) is promoted by the replay itself, not by a policy
            "promotions": sum(1 for d in decisions if d["kind"] == "promoted") - 1,
            "rejections": len(rejected),
            "rejected_why": ", ".join(f"{k} {v}" for k, v in reasons.most_common()),
            "retrain_cpu_s": replay.get("retrain_cpu_seconds", nan),
            "replay_cpu_s": usage.get("cpu_s", nan), "wall_s": usage.get("wall_s", nan),
            "max_rss_mb": usage.get("max_rss_mb", nan), "commit": usage.get("commit", "?")}


def _labelled(state: Path) -> pd.DataFrame:
    from loopml.serving.predictionlog import PredictionLog

    joined = PredictionLog(state / "predictions").joined()
    lab = joined[joined["label"].notna()].copy()
    lab["week"] = lab["at"].dt.tz_convert("UTC").dt.tz_localize(None).dt.to_period("W-SUN").dt.start_time
    lab.attrs["served"] = len(joined)
    return lab


def summarize(docs: dict[str, dict], measured: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    from loopml.evaluation import binary_metrics, expected_calibration_error

    rows, weekly = [], []
    for policy, doc in docs.items():
        lab = _labelled(doc["state"])
        y, p = lab["label"].to_numpy(float), lab["score"].to_numpy(float)
        m = binary_metrics(y, p)
        rows.append({"policy": policy, "predictions": lab.attrs["served"], "labelled": len(lab),
                     "log_loss": m["log_loss"], "auc": m["auc"], "ece": expected_calibration_error(y, p, n_bins=10),
                     **{k: doc[k] for k in ("retrainings", "promotions", "rejections", "rejected_why", "retrain_cpu_s",
                                            "replay_cpu_s", "wall_s", "max_rss_mb")}})
        for w, g in lab.groupby("week"):
            yw, pw = g["label"].to_numpy(float), g["score"].to_numpy(float)
            mw = binary_metrics(yw, pw)
            weekly.append({"policy": policy, "week": str(w.date()), "labelled": len(g), "log_loss": mw["log_loss"],
                           "auc": mw["auc"], "ece": expected_calibration_error(yw, pw, n_bins=10),
                           "mean_score": float(pw.mean()), "delay_rate": float(yw.mean())})
    table = pd.DataFrame(rows)
    base = float(table.loc[table["policy"] == "static", "log_loss"].iloc[0])
    table.insert(table.columns.get_loc("auc"), "vs_static", table["log_loss"] / base - 1)
    wk = pd.DataFrame(weekly)
    pivot = wk.pivot(index="week", columns="policy", values="log_loss")
    # a tie (the same model served the same flights) is not a win: compare beyond float noise
    beats = pivot.lt(pivot["static"] * (1 - 1e-9), axis=0)
    table["weeks_beating_static"] = [float(beats[p].mean()) if p != "static" else float("nan")
                                     for p in table["policy"]]
    # the commit each policy's replay ran at (one, unless --only reran some at another --rev)
    table["commit"], table["measured"] = [docs[p]["commit"] for p in table["policy"]], measured
    return table, wk


def plot(weekly: pd.DataFrame, path: Path) -> None:
    """Weekly log loss per policy; below it, the weekly delay rate beside each policy's mean score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=[3, 2])
    for policy, g in weekly.groupby("policy", sort=False):
        x = pd.to_datetime(g["week"])
        top.plot(x, g["log_loss"], label=policy, marker=".")
        bottom.plot(x, g["mean_score"], label=f"{policy}: mean score", alpha=0.8)
    first = weekly[weekly["policy"] == weekly["policy"].iloc[0]]
    bottom.plot(pd.to_datetime(first["week"]), first["delay_rate"], color="black", linewidth=2, label="delay rate")
    top.set_ylabel("weekly log loss")
    top.set_title("2013 flights: served predictions per week under each retraining policy")
    top.legend(fontsize=8)
    bottom.set_ylabel("share delayed")
    bottom.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def decisions_table(docs: dict[str, dict]) -> pd.DataFrame:
    """Every challenger's holdout evidence: log loss and ECE of challenger and champion, gates failed."""
    rows = []
    for policy, doc in docs.items():
        for d in doc["decisions"]:
            if d["kind"] not in ("promoted", "rejected") or not d["details"]:
                continue
            ev = d["details"].get("evidence", d["details"]) if d["kind"] == "promoted" else d["details"]
            if "challenger" not in ev:
                continue  # the replay's first champion
            ece = next((g for g in ev.get("gates", []) if g["gate"] == "ece"), {})
            rows.append({"policy": policy, "at": str(d["at"])[:10], "decision": d["kind"],
                         "challenger_ll": ev["challenger"]["log_loss"], "champion_ll": ev["champion"]["log_loss"],
                         "challenger_ece": ece.get("value"), "ece_limit": ece.get("threshold"),
                         "failed": "+".join(ev.get("failed_gates", []))})
    return pd.DataFrame(rows)


ABLATION = ["monthly", "triggered"]


def ablation(events: Path) -> None:
    """Do the ECE and slice gates help? The same replays with only the holdout log-loss gate."""
    variant = OUT / "loss-gate-only-project"
    variant.mkdir(parents=True, exist_ok=True)
    (variant / "project.py").write_text(
        '"""The flights project with only the holdout log-loss gate (bench_policies.py --ablation)."""\n'
        "import dataclasses\n\nfrom loopml import load_project\n\n"
        f"_base = load_project({str(HERE / 'examples' / 'flights')!r})\n"
        "project = dataclasses.replace(_base, gates=dataclasses.replace(_base.gates, max_ece=1.0, min_slice_support=2**62))\n")
    workers = int(next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--workers=")), "2"))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        docs = dict(zip(ABLATION, pool.map(lambda p: run(p, events, project=variant, name=f"{p}-loss-gate-only"),
                                           ABLATION), strict=True))
    table, _ = summarize({"static": _from_state(OUT / "static"),
                          **{p: _from_state(OUT / p) for p in ABLATION},
                          **{f"{p}-loss-gate-only": d for p, d in docs.items()}}, "")
    pd.set_option("display.width", 250)
    print(table[["policy", "log_loss", "vs_static", "auc", "ece", "retrainings", "promotions", "rejections",
                 "rejected_why", "replay_cpu_s", "wall_s"]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def main() -> None:
    if "BENCH_POLICIES_SHA" not in os.environ:
        _reexec_from_snapshot()
    sha = os.environ["BENCH_POLICIES_SHA"]
    import loopml
    from loopml import load_project
    from loopml.workspace import Workspace

    if not Path(loopml.__file__).resolve().is_relative_to(HERE / "src"):
        raise SystemExit(f"loopml imported from {loopml.__file__}, not the snapshot {HERE / 'src'}")
    OUT.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    print(f"commit {sha}  {platform.node()} {os.cpu_count()} cores  load average at start "
          f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
    only = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--only=")), None)
    rerun = [] if "--summarize" in sys.argv else (only or POLICIES)
    project = load_project(HERE / "examples" / "flights")
    shared = Workspace.for_project(project, OUT / "shared")
    shared.ensure_ingested(project)
    if "--ablation" in sys.argv:
        ablation(shared.root / "events")
        return
    with ThreadPoolExecutor(max_workers=2) as pool:
        fresh = dict(zip(rerun, pool.map(lambda p: run(p, shared.root / "events"), rerun), strict=True))
    docs = {p: fresh[p] if p in fresh else _from_state(OUT / p) for p in POLICIES}
    load1 = os.getloadavg()
    measured = datetime.now(UTC).strftime("%Y-%m-%d")
    table, wk = summarize(docs, measured)
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / "policies.csv", index=False, float_format="%.6g")
    wk.to_csv(RESULTS / "policies-weekly.csv", index=False, float_format="%.6g")
    plot(wk, RESULTS / "policies.png")
    show = table.drop(columns=["commit", "measured"]).set_index("policy")
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    print(show.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"\nload average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    monthly = wk.assign(month=wk["week"].str[:7]).groupby(["month", "policy"]).apply(
        lambda g: pd.Series({"delay_rate": (g["delay_rate"] * g["labelled"]).sum() / g["labelled"].sum(),
                             "mean_score": (g["mean_score"] * g["labelled"]).sum() / g["labelled"].sum()}),
        include_groups=False).unstack("policy")
    print("\ndelay rate and mean served score per month (by week start):")
    print(monthly.to_string(float_format=lambda v: f"{v:.3f}"))
    print("\nevery challenger on its 7-day holdout (ece_limit = max(max_ece, champion's ECE on the same rows)):")
    print(decisions_table(docs).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    base = table.set_index("policy")["log_loss"]
    best = base.idxmin()
    print(f"\nbest overall log loss: {best} ({base[best]:.4f} vs static {base['static']:.4f}, "
          f"{base[best] / base['static'] - 1:+.2%})")
    print(f"wrote {RESULTS / 'policies.csv'}, {RESULTS / 'policies-weekly.csv'}, {RESULTS / 'policies.png'}")


if __name__ == "__main__":
    main()
