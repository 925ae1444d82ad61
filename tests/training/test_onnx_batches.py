"""OnnxScorer cuts large batches across threads: the same bits as one call, and errors still surface."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopml.training import train
from loopml.training.onnx import OnnxScorer, export_onnx


@pytest.fixture(scope="module")
def scorer_and_X():
    rng = np.random.default_rng(7)
    n = 5001  # odd, so the parts differ in size
    f = pd.DataFrame({"x": rng.normal(size=n), "z": rng.uniform(size=n), "c": rng.choice(list("abcdef"), n)})
    f.loc[rng.uniform(size=n) < 0.1, "x"] = np.nan
    f["y"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-(f["x"].fillna(0) * f["z"] + (f["c"] == "b"))))).astype(float)
    model = train(f, features=["x", "z", "c"], label="y", categorical=["c"],
                  params={"n_estimators": 120, "num_leaves": 31})
    X = model.encode_frame(f)
    blob, report = export_onnx(model.booster, X)
    assert blob is not None, report
    return blob, X


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_batch_cut_across_threads_gives_the_same_bits_as_one_call(scorer_and_X, threads):
    blob, X = scorer_and_X
    one_call = OnnxScorer(blob, threads=1).predict(X)
    cut = OnnxScorer(blob, threads=threads, parallel_rows=256)
    assert np.array_equal(cut.predict(X), one_call)
    assert np.array_equal(cut.predict(X[:1000]), one_call[:1000])  # a smaller batch, cut into fewer parts
    assert np.array_equal(cut.predict(X[17:18]), one_call[17:18])  # one row: never cut


def test_batch_scores_equal_row_by_row_scores(scorer_and_X):
    blob, X = scorer_and_X
    scorer = OnnxScorer(blob, threads=2, parallel_rows=256)
    rows = np.concatenate([scorer.predict(X[i:i + 1]) for i in range(600)])
    assert np.array_equal(scorer.predict(X)[:600], rows)


def test_an_error_while_scoring_a_cut_batch_is_raised_in_the_caller(scorer_and_X):
    blob, X = scorer_and_X
    scorer = OnnxScorer(blob, threads=2, parallel_rows=256)
    with pytest.raises(Exception, match="(?i)dimension|shape|invalid"):
        scorer.predict(np.ones((1000, X.shape[1] + 1)))
