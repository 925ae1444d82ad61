# Copied unchanged below this header from the shared peer harness (shared/peers/drift/gen_data.py, 2026-11-26);
# bench/bench_drift.py drives it. Keep it identical to the harness so peer numbers stay comparable.
"""Generate reference / drifted current / same-distribution current datasets.

100,000 rows x (50 numeric + 10 categorical). Saved as .npy so every tool's venv
(with its own numpy/pandas versions) can rebuild an identical DataFrame.
Drift injected (known ground truth):
  num_00 (normal)    : mean shift +0.1 sd
  num_01 (lognormal) : mean shift +0.1 sd (additive, of the column's sd)
  num_02 (normal)    : scale x1.1 (sd * 1.1)
  num_03 (lognormal) : scale x1.1 (log-sigma * 1.1)
  num_04 (normal)    : scale x1.1
  cat_00 (10 levels) : frequencies -> 0.8*p + 0.2*q (q another Dirichlet draw)
  cat_01 (14 levels) : 3 percentage points moved from most- to least-frequent level
Everything else: same generating distribution.
"""
import json
import sys

import numpy as np

N = 100_000
N_NUM, N_CAT = 50, 10
OUT = sys.argv[1] if len(sys.argv) > 1 else "peer-work/drift/data"

spec_rng = np.random.default_rng(12345)  # distribution parameters (fixed)
num_spec = []
for j in range(N_NUM):
    if j % 2 == 0:
        num_spec.append(("normal", float(spec_rng.uniform(-5, 5)), float(spec_rng.uniform(0.5, 3))))
    else:
        num_spec.append(("lognormal", float(spec_rng.uniform(0, 2)), float(spec_rng.uniform(0.25, 1.0))))
cat_levels = [10 + 4 * i for i in range(N_CAT)]  # 10,14,...,46 levels
cat_p = [spec_rng.dirichlet(np.ones(k) * 2.0) for k in cat_levels]

DRIFT_NUM = {0: "mean", 1: "mean", 2: "scale", 3: "scale", 4: "scale"}
DRIFT_CAT = {0: "mix", 1: "move"}


def sample(seed, drift):
    rng = np.random.default_rng(seed)
    X = np.empty((N, N_NUM), dtype=np.float64)
    for j, (kind, a, b) in enumerate(num_spec):
        d = DRIFT_NUM.get(j) if drift else None
        if kind == "normal":
            sd = b * (1.1 if d == "scale" else 1.0)
            x = rng.normal(a, sd, N)
            if d == "mean":
                x = x + 0.1 * b
        else:
            s = b * (1.1 if d == "scale" else 1.0)
            x = rng.lognormal(a, s, N)
            if d == "mean":
                true_sd = np.sqrt((np.exp(b ** 2) - 1) * np.exp(2 * a + b ** 2))
                x = x + 0.1 * true_sd
        X[:, j] = x
    C = np.empty((N, N_CAT), dtype=np.int16)
    for j, (k, p) in enumerate(zip(cat_levels, cat_p)):
        p = p.copy()
        d = DRIFT_CAT.get(j) if drift else None
        if d == "mix":
            q = np.random.default_rng(999).dirichlet(np.ones(k) * 2.0)
            p = 0.8 * p + 0.2 * q
        elif d == "move":
            hi, lo = int(np.argmax(p)), int(np.argmin(p))
            p[hi] -= 0.03
            p[lo] += 0.03
        C[:, j] = rng.choice(k, size=N, p=p / p.sum())
    return X, C


if __name__ == "__main__":
    sets = {"ref": (1, False), "cur_drift": (2, True),
            "cur_same_a": (3, False), "cur_same_b": (4, False), "cur_same_c": (5, False)}
    for name, (seed, drift) in sets.items():
        X, C = sample(seed, drift)
        np.save(f"{OUT}/{name}_num.npy", X)
        np.save(f"{OUT}/{name}_cat.npy", C)
    meta = {
        "num_cols": [f"num_{j:02d}" for j in range(N_NUM)],
        "cat_cols": [f"cat_{j:02d}" for j in range(N_CAT)],
        "cat_levels": cat_levels,
        "drifted": [f"num_{j:02d}" for j in DRIFT_NUM] + [f"cat_{j:02d}" for j in DRIFT_CAT],
        "drift_kind": {**{f"num_{j:02d}": v for j, v in DRIFT_NUM.items()}, **{f"cat_{j:02d}": v for j, v in DRIFT_CAT.items()}},
        "num_spec": num_spec,
    }
    json.dump(meta, open(f"{OUT}/meta.json", "w"), indent=1)
    print("ok", OUT)
