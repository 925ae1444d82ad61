"""A natively served GBMModel explains in one thread while it scores in another (as evaluate_version does)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from loopml.training import train


def test_contributions_in_a_thread_beside_batch_scoring_equal_the_serial_results():
    rng = np.random.default_rng(11)
    n = 4000
    f = pd.DataFrame({"x": rng.normal(size=n), "z": rng.uniform(size=n), "c": rng.choice(list("abcd"), n)})
    f["y"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-(f["x"] + (f["c"] == "b"))))).astype(float)
    model = train(f, features=["x", "z", "c"], label="y", categorical=["c"], params={"n_estimators": 60})
    assert model.backend == "native"
    sample = f.sample(200, random_state=0)
    serial_contrib = model.contributions_frame(sample)
    serial_scores = [model.predict_frame(f.iloc[i:i + 1500]) for i in range(0, n, 500)]
    with ThreadPoolExecutor(1) as pool:
        contrib = pool.submit(model.contributions_frame, sample)
        scores = [model.predict_frame(f.iloc[i:i + 1500]) for i in range(0, n, 500)]
        pd.testing.assert_frame_equal(contrib.result(), serial_contrib, check_exact=True)
    for got, want in zip(scores, serial_scores, strict=True):
        assert np.array_equal(got, want)
