"""Batch scoring in chunks: the same scores as one big frame, from a range or from a Parquet file."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from loopml.errors import BadTimestamp, InvalidConfig, SchemaError
from loopml.loop.assess import score_window
from loopml.registry import ArtifactStore, Registry
from loopml.serving.batchscore import score_file, score_range
from loopml.timeutil import parse_time

A, B = parse_time("2013-03-01"), parse_time("2013-03-04")


@pytest.fixture(scope="module")
def model(flights_project, served_ws):
    reg = Registry(served_ws.registry_url, ArtifactStore(served_ws.artifacts))
    return reg.load(flights_project.name, "champion")[1]


@pytest.fixture(scope="module")
def whole(flights_project, served_ws, model):
    return score_window(flights_project, served_ws.log, model, A, B)


def test_chunked_range_equals_one_frame_and_reports_progress(flights_project, served_ws, model, whole, tmp_path):
    calls = []
    out = tmp_path / "scores.parquet"
    n = score_range(flights_project, served_ws.log, model, A, B, out, chunk=timedelta(hours=17),
                    progress=lambda done, total: calls.append((done, total)))
    got = pd.read_parquet(out)
    assert n == len(whole) == len(got) > 2000
    assert calls[-1] == (5, 5) and [c[0] for c in calls] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(got["flight_id"].to_numpy(), whole["flight_id"].to_numpy())
    np.testing.assert_allclose(got["score"].to_numpy(), whole["score"].to_numpy(), rtol=0, atol=0)
    assert not (tmp_path / "scores.parquet.partial").exists()


def test_scoring_a_parquet_file_of_requests_gives_the_range_scores(flights_project, served_ws, model, whole,
                                                                   tmp_path):
    sp = flights_project.spine
    requests = whole[["flight_id", *sp.request_fields]].sample(500, random_state=1)
    src = tmp_path / "requests.parquet"
    requests.to_parquet(src, index=False)
    out = tmp_path / "scored.parquet"
    assert score_file(flights_project, served_ws.log, model, src, out, batch_rows=128) == 500
    got = pd.read_parquet(out).set_index("flight_id")
    expected = whole.set_index("flight_id").loc[got.index, "score"]
    np.testing.assert_allclose(got["score"].to_numpy(), expected.to_numpy(), rtol=0, atol=1e-12)


def test_bad_inputs_name_what_is_wrong(flights_project, served_ws, model, tmp_path):
    src = tmp_path / "bad.parquet"
    pd.DataFrame({"carrier": ["UA"], "sched_dep": ["2013-03-01T10:00:00Z"]}).to_parquet(src)
    with pytest.raises(SchemaError, match="lacks column.*'origin'"):
        score_file(flights_project, served_ws.log, model, src, tmp_path / "o.parquet")
    sp = flights_project.spine
    frame = pd.DataFrame({c: ["x"] for c in sp.request_fields})
    frame["sched_dep"] = ["not a time"]
    frame.to_parquet(src)
    with pytest.raises(BadTimestamp, match="sched_dep"):
        score_file(flights_project, served_ws.log, model, src, tmp_path / "o.parquet")
    with pytest.raises(InvalidConfig, match="--from must be before --to"):
        score_range(flights_project, served_ws.log, model, B, A, tmp_path / "o.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(InvalidConfig, match="not a readable Parquet file"):
        score_file(flights_project, served_ws.log, model, tmp_path / "junk.parquet", tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists()  # a failed run leaves no half-written output under the name
