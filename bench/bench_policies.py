"""The 2013 experiment: which retraining policy serves the flights best, March to December?

Runs `loopml replay` over 2013-03-01..2014-01-01 under four policies, each in its own state folder
(sharing one ingested event log), two at a time, and prints per policy: log loss, ROC AUC and ECE of
all served predictions (labels joined from the prediction log), retrainings and the CPU seconds they
took, and wall time; plus weekly log loss per policy (bench/.out/policies-weekly.csv) and a plot
(bench/.out/policies.png).

Policies (loopml.loop.RetrainPolicy.named):
  static           trained on Jan-Feb, never retrained
  monthly          stateless retrain on the trailing 59 days at each month start
  weekly-stateful  continue boosting the champion with the past week's data every Monday
  triggered        weekly check; retrain (stateless) only if last week's log loss is >5% worse than the 4 weeks before
Every challenger is promoted only if it beats the champion on the last 7 days' labels.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / ".out" / "policies"
POLICIES = ["static", "monthly", "weekly-stateful", "triggered"]
LOOPML = [sys.executable, "-m", "loopml.cli"]


def run(policy: str, events: Path) -> dict:
    state = OUT / policy
    if state.exists():
        subprocess.run(["rm", "-rf", str(state)], check=True)
    state.mkdir(parents=True)
    (state / "events").symlink_to(events, target_is_directory=True)
    t0 = time.perf_counter()
    proc = subprocess.run([*LOOPML, "replay", "--project", str(ROOT / "examples" / "flights"), "--state", str(state),
                           "--from", "2013-03-01", "--until", "2014-01-01", "--policy", policy, "--json"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{policy} failed:\n{proc.stderr[-3000:]}")
    doc = json.loads(proc.stdout)
    doc["wall"] = time.perf_counter() - t0
    doc["state"] = str(state)
    return doc


def _from_state(state: Path) -> dict:
    from loopml.registry import ArtifactStore, Registry
    from loopml.serving.predictionlog import PredictionLog

    reg = Registry(f"sqlite:///{state / 'registry.sqlite'}", ArtifactStore(state / "artifacts"))
    decisions = reg.decisions("flights")
    joined = PredictionLog(state / "predictions").joined()
    lab = joined[joined["label"].notna()].copy()
    lab["week"] = lab["at"].dt.tz_convert("UTC").dt.tz_localize(None).dt.to_period("W-SUN").dt.start_time
    from loopml.evaluation import binary_metrics

    weeks = [{"week": str(w.date()), **{k: v for k, v in binary_metrics(g["label"].to_numpy(float),
                                                                         g["score"].to_numpy(float)).items()
                                        if k in ("log_loss", "auc")}} for w, g in lab.groupby("week")]
    return {"state": str(state), "decisions": decisions, "weeks": weeks, "wall": float("nan"),
            "retrainings": sum(1 for d in decisions if d["kind"] == "trigger"), "retrain_cpu_seconds": float("nan")}


def main() -> None:
    from loopml import load_project
    from loopml.evaluation import binary_metrics, expected_calibration_error
    from loopml.serving.predictionlog import PredictionLog
    from loopml.workspace import Workspace

    OUT.mkdir(parents=True, exist_ok=True)
    project = load_project(ROOT / "examples" / "flights")
    # --only a,b reruns some policies; the others are re-read from their finished state folders
    # (their CPU and wall times are not kept there). --summarize reruns none.
    only = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--only=")), None)
    rerun = [] if "--summarize" in sys.argv else (only or POLICIES)
    shared = Workspace.for_project(project, OUT / "shared")
    shared.ensure_ingested(project)
    with ThreadPoolExecutor(max_workers=2) as pool:
        fresh = dict(zip(rerun, pool.map(lambda p: run(p, shared.root / "events"), rerun), strict=True))
    docs = {p: fresh[p] if p in fresh else _from_state(OUT / p) for p in POLICIES}
    rows, weekly = [], []
    for policy, doc in docs.items():
        joined = PredictionLog(Path(doc["state"]) / "predictions").joined()
        lab = joined[joined["label"].notna()]
        y, p = lab["label"].to_numpy(float), lab["score"].to_numpy(float)
        m = binary_metrics(y, p)
        rows.append({"policy": policy, "predictions": len(joined), "labelled": len(lab), "log_loss": m["log_loss"],
                     "auc": m["auc"], "ece": expected_calibration_error(y, p, n_bins=10),
                     "retrainings": doc["retrainings"], "retrain_cpu_s": doc["retrain_cpu_seconds"],
                     "promotions": sum(1 for d in doc["decisions"] if d["kind"] == "promoted") - 1,
                     "wall_s": round(doc["wall"], 1)})
        for w in doc["weeks"]:
            weekly.append({"policy": policy, **w})
    table = pd.DataFrame(rows).set_index("policy")
    base = table.loc["static", "log_loss"]
    table["vs_static"] = (table["log_loss"] / base - 1).map(lambda v: f"{v:+.2%}")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    wk = pd.DataFrame(weekly)
    wk.to_csv(OUT.parent / "policies-weekly.csv", index=False)
    pivot = wk.pivot(index="week", columns="policy", values="log_loss")
    wins = (pivot.drop(columns="static").lt(pivot["static"], axis=0)).mean()
    print("\nshare of weeks each policy beat static on log loss:")
    print(wins.map(lambda v: f"{v:.0%}").to_string())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    for policy in POLICIES:
        ax.plot(pd.to_datetime(pivot.index), pivot[policy], label=policy)
    ax.set_ylabel("weekly log loss (served predictions)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT.parent / "policies.png", dpi=100)
    best = table["log_loss"].idxmin()
    print(f"\nbest overall log loss: {best} ({table.loc[best, 'log_loss']:.4f} vs static {base:.4f}, "
          f"{table.loc[best, 'log_loss'] / base - 1:+.2%}); weekly ECE and AUC in the table above")


if __name__ == "__main__":
    main()
