# Copied unchanged below this header from the shared peer harness (shared/peers/drift/worker.py, 2026-11-26);
# bench/bench_drift.py drives it. Keep it identical to the harness so peer numbers stay comparable.
"""One measurement: python worker.py TOOL CURRENT_SET  -> prints one JSON line.

Runs in the venv of the tool. Loads ref + current from .npy (not timed), resets
the peak-RSS high-water mark, runs the tool, reports wall time, peak RSS during
the tool phase (VmHWM after reset) and RSS before, plus the per-column flags.
"""
import json
import os
import sys
import time

T0 = time.perf_counter()
TOOL, CUR = sys.argv[1], sys.argv[2]
DATA = os.environ.get("MON_DATA", "peer-work/drift/data")
OUTDIR = os.environ.get("MON_OUT", "peer-work/drift/out")
ALPHA = 0.05

import numpy as np
import pandas as pd

T_IMPORT = time.perf_counter() - T0
meta = json.load(open(f"{DATA}/meta.json"))
NUM, CAT = meta["num_cols"], meta["cat_cols"]
ALL = NUM + CAT


def load(name):
    X = np.load(f"{DATA}/{name}_num.npy")
    C = np.load(f"{DATA}/{name}_cat.npy")
    df = pd.DataFrame(X, columns=NUM)
    for j, c in enumerate(CAT):
        # string categories, like real categorical features
        lv = np.array([f"L{k:02d}" for k in range(meta["cat_levels"][j])], dtype=object)
        df[c] = lv[C[:, j]]
    return X, C, df


def vm(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024.0  # MiB
    return float("nan")


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except Exception:
        return False


class Tm:
    """wall + CPU (all threads of this process) timer"""
    def __init__(self, d, key):
        self.d, self.key = d, key
    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
    def __exit__(self, *a):
        self.d[self.key + "_s"] = time.perf_counter() - self.w
        self.d[self.key + "_cpu_s"] = time.process_time() - self.c


# ---------------------------------------------------------------- tools
def run_scipy(Xr, Cr, Xc, Cc, dfr, dfc):
    from scipy import stats
    t, p = {}, {}
    with Tm(t, "ks_num"):
        for j, c in enumerate(NUM):
            p[c] = float(stats.ks_2samp(Xr[:, j], Xc[:, j]).pvalue)
    with Tm(t, "chi2_cat"):
        for j, c in enumerate(CAT):
            # value_counts on the string columns, like a user would do
            vr, vc = dfr[c].value_counts(), dfc[c].value_counts()
            tab = pd.concat([vr, vc], axis=1).fillna(0).to_numpy().T
            p[c] = float(stats.chi2_contingency(tab)[1])
    return {"pvalues": p,
            "flags": {"alpha0.05": [c for c in ALL if p[c] < ALPHA],
                      "bonferroni60": [c for c in ALL if p[c] < ALPHA / len(ALL)]}}, t


def run_alibi(Xr, Cr, Xc, Cc, dfr, dfc):
    from alibi_detect.cd import ChiSquareDrift, KSDrift, TabularDrift
    t = {}
    Cr64, Cc64 = Cr.astype(np.int64), Cc.astype(np.int64)
    with Tm(t, "fit"):
        ks = KSDrift(Xr, p_val=ALPHA)           # default correction='bonferroni'
        chi = ChiSquareDrift(Cr64, p_val=ALPHA)  # default correction='bonferroni'
    with Tm(t, "predict"):
        bk = ks.predict(Xc, drift_type="batch")["data"]    # returns per-feature p_val + corrected threshold
        bc = chi.predict(Cc64, drift_type="batch")["data"]
    p = {c: float(v) for c, v in zip(NUM, bk["p_val"])}
    p.update({c: float(v) for c, v in zip(CAT, bc["p_val"])})
    # TabularDrift: KS (num) + chi2 (cat) in one detector, one Bonferroni over 60 cols
    Xr_all = np.hstack([Xr, Cr.astype(np.float64)])
    Xc_all = np.hstack([Xc, Cc.astype(np.float64)])
    cpf = {len(NUM) + j: None for j in range(len(CAT))}
    with Tm(t, "tabular_fit_predict"):
        tab = TabularDrift(Xr_all, p_val=ALPHA, categories_per_feature=cpf)
        tb = tab.predict(Xc_all, drift_type="batch")["data"]
    thr_tab = float(tb["threshold"])
    return {"pvalues": p,
            "flags": {"feature_alpha0.05": [c for c in ALL if p[c] < ALPHA],
                      "bonferroni_per_detector": [c for c in NUM if p[c] < float(bk["threshold"])]
                                                 + [c for c in CAT if p[c] < float(bc["threshold"])],
                      "tabular_bonferroni60": [c for c, v in zip(ALL, tb["p_val"]) if v < thr_tab]},
            "batch_is_drift": {"ks": int(bk["is_drift"]), "chi2": int(bc["is_drift"]), "tabular": int(tb["is_drift"])},
            "thresholds": {"ks": float(bk["threshold"]), "chi2": float(bc["threshold"]), "tabular": thr_tab}}, t


def run_whylogs(Xr, Cr, Xc, Cc, dfr, dfc):
    import whylogs as why
    from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores
    t = {}
    with Tm(t, "profile_ref"):
        pr = why.log(dfr).view()
    with Tm(t, "profile_cur"):
        pc = why.log(dfc).view()
    with Tm(t, "drift_scores"):
        sc = calculate_drift_scores(target_view=pc, reference_view=pr, with_thresholds=True)
    with Tm(t, "merge"):
        pr.merge(pc)  # profiles are mergeable (not used for the drift result)
    ser = pr.serialize()
    res = {}
    for c in ALL:
        d = sc.get(c)
        if d is None:
            res[c] = None
            continue
        d = d if isinstance(d, dict) else d.to_dict()
        res[c] = {"algorithm": d.get("algorithm"), "pvalue": d.get("pvalue"),
                  "statistic": d.get("statistic"), "category": d.get("drift_category")}
    return {"scores": res,
            "flags": {"DRIFT": [c for c in ALL if res[c] and res[c]["category"] == "DRIFT"],
                      "DRIFT_or_POSSIBLE": [c for c in ALL if res[c] and res[c]["category"] in ("DRIFT", "POSSIBLE_DRIFT")]},
            "profile_bytes": len(ser)}, t


def run_nannyml(Xr, Cr, Xc, Cc, dfr, dfc):
    import nannyml as nml
    t = {}
    chunk = int(os.environ.get("NML_CHUNK", "10000"))
    with Tm(t, "fit"):
        calc = nml.UnivariateDriftCalculator(column_names=ALL, treat_as_categorical=CAT, chunk_size=chunk)
        calc.fit(dfr)  # defaults: jensen_shannon for both types, std-based thresholds from reference chunks
    with Tm(t, "calculate"):
        r = calc.calculate(dfc)
    data = r.filter(period="analysis").to_df()
    flags, nalerts = [], {}
    for c in ALL:
        alerts = data[(c, "jensen_shannon", "alert")]
        nalerts[c] = int(alerts.sum())
        if nalerts[c] > 0:
            flags.append(c)
    return {"alerts_per_col": nalerts, "n_chunks": len(data),
            "flags": {"any_chunk_alert": flags,
                      "majority_chunks": [c for c in ALL if nalerts[c] > len(data) / 2]}}, t


PVALUE_METHODS = ("p_value", "Mann-Whitney", "Epps-Singleton", "t_test", "Fisher", "g_test")


def run_evidently(Xr, Cr, Xc, Cc, dfr, dfc):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset
    t = {}
    with Tm(t, "wrap"):
        dd = DataDefinition(numerical_columns=NUM, categorical_columns=CAT)
        ref = Dataset.from_pandas(dfr, data_definition=dd)
        cur = Dataset.from_pandas(dfc, data_definition=dd)
    with Tm(t, "run"):
        ev = Report([DataDriftPreset()]).run(cur, ref)
        d = ev.dict()
    scores, share = {}, None
    for m in d["metrics"]:
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith("ValueDrift"):
            meth, thr, val = cfg.get("method"), cfg.get("threshold"), m.get("value")
            is_p = any(k in str(meth) for k in PVALUE_METHODS)
            scores[cfg["column"]] = {"score": val, "method": meth, "threshold": thr,
                                     "drift": bool(val < thr) if is_p else bool(val >= thr)}
        if cfg.get("type", "").endswith("DriftedColumnsCount"):
            share = m.get("value")
    if os.environ.get("MON_HTML", "1") == "1":
        t["peak_before_html_mib"] = vm("VmHWM")
        path = f"{OUTDIR}/evidently_{CUR}_{os.getpid()}.html"
        with Tm(t, "save_html"):
            ev.save_html(path)
        t["html_bytes"] = os.path.getsize(path)
        os.remove(path)
    return {"scores": scores, "share": share,
            "flags": {"default": [c for c in ALL if scores.get(c, {}).get("drift")]}}, t


TOOLS = {"nannyml": run_nannyml, "scipy": run_scipy, "alibi": run_alibi, "whylogs": run_whylogs, "evidently": run_evidently}

PREIMPORT = {"scipy": ["scipy.stats"], "alibi": ["alibi_detect.cd"],
             "whylogs": ["whylogs", "whylogs.viz.drift.column_drift_algorithms"],
             "evidently": ["evidently", "evidently.presets"], "nannyml": ["nannyml"]}

if __name__ == "__main__":
    import importlib
    os.makedirs(OUTDIR, exist_ok=True)
    s0 = time.perf_counter()
    for mod in PREIMPORT[TOOL]:
        importlib.import_module(mod)
    T_TOOL_IMPORT = time.perf_counter() - s0
    Xr, Cr, dfr = load("ref")
    Xc, Cc, dfc = load(CUR)
    t_load = time.perf_counter() - T0
    rss_before = vm("VmRSS")
    ok = reset_peak()
    s, sc = time.perf_counter(), time.process_time()
    res, sub = TOOLS[TOOL](Xr, Cr, Xc, Cc, dfr, dfc)
    total, total_cpu = time.perf_counter() - s, time.process_time() - sc
    peak = vm("VmHWM")
    out = {"tool": TOOL, "cur": CUR, "total_s": total, "total_cpu_s": total_cpu, "import_s": T_IMPORT, "tool_import_s": T_TOOL_IMPORT, "sub": sub, "load_s": t_load,
           "rss_before_mib": rss_before, "peak_mib": peak, "peak_reset": ok,
           "tool_peak_delta_mib": peak - rss_before, "res": res}
    print("RESULT " + json.dumps(out))
