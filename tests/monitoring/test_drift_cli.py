"""`loopml monitor drift --reference R --current C --json`: the CLI contract."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd


def run(*args):
    return subprocess.run([sys.executable, "-m", "loopml.cli", "monitor", "drift", *args], capture_output=True, text=True,
                          timeout=300)


def test_monitor_drift_json_flags_the_shifted_columns_only(tmp_path):
    rng = np.random.default_rng(7)
    n = 10_000
    ref = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(8)} | {"cat": rng.choice(list("abcd"), n)})
    cur = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(8)}
                       | {"cat": rng.choice(list("abcd"), n, p=[0.1, 0.3, 0.3, 0.3])})
    cur["x0"] += 0.1
    ref.to_parquet(tmp_path / "r.parquet")
    cur.to_parquet(tmp_path / "c.parquet")
    proc = run("--reference", str(tmp_path / "r.parquet"), "--current", str(tmp_path / "c.parquet"), "--json",
               "--correction", "bonferroni")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    by = {c["column"]: c for c in doc["columns"]}
    assert set(by) == set(ref.columns)
    for c in doc["columns"]:
        assert set(c) >= {"column", "test", "statistic", "p_value", "p_value_adjusted", "drifted"}
        assert c["p_value_adjusted"] >= c["p_value"]
    assert by["x0"]["test"] == "ks" and by["cat"]["test"] == "chi2"
    assert {c for c, v in by.items() if v["drifted"]} == {"x0", "cat"}
    assert doc["drifted"] is True


def test_monitor_drift_missing_file_is_a_clear_error(tmp_path):
    proc = run("--reference", str(tmp_path / "nope.parquet"), "--current", str(tmp_path / "nope.parquet"))
    assert proc.returncode == 1
    assert "SchemaError" in proc.stderr and "--reference" in proc.stderr
