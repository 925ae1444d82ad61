"""The loop report's section on the 2013 retraining-policy experiment, from a small CSV fixture."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from loopml.errors import SchemaError
from loopml.reports import loop_report, policies_section, read_policy_results

SUMMARY = """policy,predictions,labelled,log_loss,vs_static,auc,ece,retrainings,promotions,rejections,rejected_why,retrain_cpu_s,replay_cpu_s,wall_s,max_rss_mb,weeks_beating_static,commit,measured
static,1000,1000,0.5,0,0.73,0.028,0,0,0,,0,600.5,700.25,900,,abc1234,2026-11-26
triggered,1000,1000,0.49,-0.02,0.7471,0.0349,16,11,5,max_ece x3; holdout log loss x2,123.4,901.2,1100.7,950,0.53,abc1234,2026-11-26
"""


def _weekly() -> pd.DataFrame:
    weeks = ["2013-03-04", "2013-03-11", "2013-03-18"]
    return pd.DataFrame([{"policy": p, "week": w, "labelled": 100, "log_loss": ll + i * 0.01, "auc": 0.7, "ece": 0.03,
                          "mean_score": 0.2, "delay_rate": 0.21}
                         for p, ll in (("static", 0.5), ("triggered", 0.49)) for i, w in enumerate(weeks)])


@pytest.fixture
def results(tmp_path):
    (tmp_path / "policies.csv").write_text(SUMMARY)
    _weekly().to_csv(tmp_path / "policies-weekly.csv", index=False)
    return tmp_path


def test_section_shows_the_measured_table_date_commit_and_winner(results):
    html = policies_section(results)
    assert "Retraining policies on 2013 (measured 2026-11-26, commit abc1234)" in html
    assert "0.7471" in html and "0.0349" in html  # the CSV's AUC and ECE, as written
    assert "-2.00%" in html  # vs static, from the CSV
    assert "max_ece x3; holdout log loss x2" in html
    assert "53%" in html  # share of weeks beating static
    assert "<td>901</td><td>1,101</td>" in html  # whole-replay CPU and wall seconds
    assert "<b>triggered</b> has the lowest log loss: 0.4900 vs static 0.5000 (-2.00%)" in html
    assert html.count("data:image/png;base64,") == 1


def test_current_run_is_overlaid_only_when_it_covers_the_experiments_weeks(results):
    mine = [{"week": "2013-03-11", "log_loss": 0.6}, {"week": "2014-05-05", "log_loss": 0.4}]
    assert "this run's own weekly log loss (1 of the experiment's weeks)" in policies_section(results,
                                                                                            current_weekly=mine)
    other = [{"week": "2014-05-05", "log_loss": 0.4}]
    assert "this run's own weekly" not in policies_section(results, current_weekly=other)


def test_missing_summary_says_not_measured_instead_of_failing(tmp_path):
    html = policies_section(tmp_path / "nowhere")
    assert "Not measured yet" in html and "policies.csv" in html and "bench_policies.py" in html


def test_summary_without_a_column_is_named(results):
    frame = pd.read_csv(results / "policies.csv").drop(columns=["ece"])
    frame.to_csv(results / "policies.csv", index=False)
    with pytest.raises(SchemaError, match=r"lacks the column\(s\) \['ece'\]"):
        read_policy_results(results)
    assert "lacks the column(s) [&#x27;ece&#x27;]" in policies_section(results)


def test_loop_report_includes_the_section_from_the_given_folder(results, tmp_path):
    weekly = [{"week": "2013-03-04", "labelled": 100, "log_loss": 0.55, "auc": 0.7, "ece": 0.02}]
    out = loop_report(tmp_path / "r.html", project="demo", months=[], weekly=weekly, decisions=[], calibration={},
                      policy_results=results)
    text = out.read_text()
    assert "Retraining policies on 2013 (measured 2026-11-26, commit abc1234)" in text
    assert "this run's own weekly log loss (1 of the experiment's weeks)" in text


def test_loop_report_of_another_project_has_no_section_by_default(tmp_path):
    out = loop_report(tmp_path / "r.html", project="recsys", months=[], weekly=[], decisions=[], calibration={})
    assert "Retraining policies on 2013" not in out.read_text()


def test_the_flights_project_reports_its_committed_experiment(tmp_path):
    from loopml.cli import _policy_results
    from loopml.project import load_project

    folder = _policy_results(load_project(Path(__file__).resolve().parents[2] / "examples" / "flights"))
    assert folder is not None and (folder / "policies.csv").exists()
    res = read_policy_results(folder)
    assert set(res.summary["policy"]) >= {"static", "monthly", "weekly-stateful", "triggered"}
    out = loop_report(tmp_path / "r.html", project="flights", months=[], weekly=[], decisions=[], calibration={},
                      policy_results=folder)
    assert f"Retraining policies on 2013 (measured {', '.join(res.measured)}" in out.read_text()
