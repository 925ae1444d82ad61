from __future__ import annotations

import pathlib

from loopml.serving.predictionlog import PredictionLog


def _pred(rid, at="2013-03-01T00:00:00+00:00", score=0.5):
    return {"request_id": rid, "entity_id": f"e-{rid}", "model_version": 1, "at": at, "score": score,
            "features": {"x": 1.0}}


def test_labels_join_by_request_id_and_respect_label_time(tmp_path):
    log = PredictionLog(tmp_path)
    log.log_predictions([_pred("a"), _pred("b"), _pred("c")])
    log.log_labels([{"request_id": "a", "label": 1.0, "label_time": "2013-03-01T03:00:00+00:00"},
                    {"request_id": "b", "label": 0.0, "label_time": "2013-03-02T03:00:00+00:00"}])
    log.close()
    j = PredictionLog(tmp_path).joined().set_index("request_id")
    assert j.loc["a", "label"] == 1.0 and j.loc["b", "label"] == 0.0 and j["label"].isna()["c"]
    early = PredictionLog(tmp_path).joined(labelled_by="2013-03-01T12:00:00+00:00").set_index("request_id")
    assert early.loc["a", "label"] == 1.0 and early["label"].isna()["b"]  # not known yet at that time


def test_torn_last_line_from_a_crash_is_skipped(tmp_path):
    log = PredictionLog(tmp_path)
    log.log_predictions([_pred("a"), _pred("b")])
    log.close()
    seg = next(pathlib.Path(tmp_path, "predictions").glob("*.jsonl"))
    seg.write_text(seg.read_text() + '{"request_id": "c", "entity_i')
    j = PredictionLog(tmp_path).joined()
    assert sorted(j["request_id"]) == ["a", "b"]
    assert sorted(PredictionLog(tmp_path).read_predictions()["request_id"]) == ["a", "b"]


def test_every_writer_gets_its_own_segment_and_nothing_is_overwritten(tmp_path):
    one, two = PredictionLog(tmp_path), PredictionLog(tmp_path)
    one.log_predictions([_pred("a")])
    two.log_predictions([_pred("b")])
    one.close()
    two.close()
    assert len(list(pathlib.Path(tmp_path, "predictions").glob("*.jsonl"))) == 2
    assert sorted(PredictionLog(tmp_path).joined()["request_id"]) == ["a", "b"]
