"""Micro-batching: concurrent requests scored together give exactly the scores they get alone."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi.testclient import TestClient

from loopml.errors import InvalidConfig
from loopml.serving.batching import MicroBatcher
from loopml.serving.factory import build_predictor
from loopml.serving.http import create_app

CARRIERS = ["UA", "AA", "B6", "DL", "EV", "MQ"]


def _rows(n: int) -> list[dict]:
    return [{"carrier": CARRIERS[i % 6], "flight": 100 + i, "origin": ["EWR", "JFK", "LGA"][i % 3], "dest": "ATL",
             "tailnum": None if i % 5 == 0 else f"N{100 + i}", "sched_dep": f"2013-03-01T{10 + i % 12:02d}:{i % 60:02d}:00Z"}
            for i in range(n)]


async def _fire(app, rows: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        plain = [c.post("/predict", json=r, headers={"x-request-id": f"p{i}"}) for i, r in enumerate(rows)]
        v2 = [c.post("/v2/models/flights/infer", json={"inputs": [
            {"name": k, "datatype": "BYTES", "shape": [1], "data": ["" if v is None else str(v)]} for k, v in r.items()]})
            for r in rows]
        return await asyncio.gather(*plain, *v2)


def test_batched_scores_equal_unbatched_and_batches_form(flights_project, served_ws):
    rows = _rows(24)
    alone = asyncio.run(_fire(create_app(build_predictor(flights_project, served_ws)), rows))
    predictor = build_predictor(flights_project, served_ws)
    batched_app = create_app(predictor, batch_window_ms=10, batch_max_rows=16)
    batched = asyncio.run(_fire(batched_app, rows))
    assert all(r.status_code == 200 for r in alone + batched), [r.text for r in alone + batched if r.status_code != 200]
    score = lambda r: r.json()["score"] if "score" in r.json() else r.json()["outputs"][0]["data"][0]
    assert [score(r) for r in batched] == [score(r) for r in alone]  # exactly equal, not approximately
    assert [r.json()["request_id"] for r in batched[:24]] == [f"p{i}" for i in range(24)]
    assert [r.json()["features"] for r in batched[:24]] == [r.json()["features"] for r in alone[:24]]
    sizes = predictor.metrics.batch_size.collect()[0].samples
    count = next(s.value for s in sizes if s.name.endswith("_count"))
    total = next(s.value for s in sizes if s.name.endswith("_sum"))
    assert total == 48 and count < 48  # 48 rows in fewer model calls than requests
    assert max(s.value for s in sizes if s.name.endswith("_bucket") and s.labels["le"] == "16.0") == count


def test_a_bad_request_in_a_batch_fails_alone(flights_project, served_ws):
    rows = _rows(6)
    rows[2] = {**rows[2], "sched_dep": "0001-01-01T00:30:00Z"}  # its prediction time is out of range
    app = create_app(build_predictor(flights_project, served_ws), batch_window_ms=10)
    out = asyncio.run(_fire(app, rows))[:6]
    assert [r.status_code for r in out] == [200, 200, 422, 200, 200, 200]
    with TestClient(app) as c:  # a lone request is scored after the window, not stuck
        assert c.post("/predict", json=rows[0]).status_code == 200


@pytest.mark.parametrize("window", [-1, 11])
def test_batch_window_is_bounded(window):
    with pytest.raises(InvalidConfig, match="window_ms"):
        MicroBatcher(None, window_ms=window)  # type: ignore[arg-type]


def test_window_zero_batches_what_arrived_together_with_the_same_scores(flights_project, served_ws):
    rows = _rows(12)
    alone = asyncio.run(_fire(create_app(build_predictor(flights_project, served_ws)), rows))
    predictor = build_predictor(flights_project, served_ws)
    together = asyncio.run(_fire(create_app(predictor, batch_window_ms=0), rows))
    assert all(r.status_code == 200 for r in alone + together)
    score = lambda r: r.json()["score"] if "score" in r.json() else r.json()["outputs"][0]["data"][0]
    assert [score(r) for r in together] == [score(r) for r in alone]
    sizes = predictor.metrics.batch_size.collect()[0].samples
    count = next(s.value for s in sizes if s.name.endswith("_count"))
    assert count < len(together)  # some requests shared a model call
    with TestClient(create_app(build_predictor(flights_project, served_ws), batch_window_ms=0)) as c:
        assert c.post("/predict", json=rows[1]).status_code == 200  # a lone request is not stuck


def test_adaptive_batches_wait_for_company_only_while_others_are_in_flight():
    """A request that arrives alone is scored in the turn it arrived (no window); one that arrives while others
    are in flight (in a batch, not answered) waits the window for company."""

    class Scorer:
        log = None

        def score_and_log(self, rows, **kwargs):
            return [f"p{i}" for i in range(len(rows))], None

    async def scenario(adaptive: bool) -> list[str]:
        batcher = MicroBatcher(Scorer(), window_ms=10, adaptive=adaptive)  # type: ignore[arg-type]
        timers = []

        def start():
            task = asyncio.ensure_future(batcher.predict([{}], ats=[None], entity_ids=[None], request_ids=[None]))
            return task

        first = start()
        await asyncio.sleep(0)  # it joins a batch and schedules the flush
        timers.append(type(batcher._timer).__name__)
        assert await first == ["p0"]
        assert batcher._in_flight == 0
        batcher._in_flight += 1  # another request in flight: joined a batch, its answer not sent yet
        second = start()
        await asyncio.sleep(0)
        timers.append(type(batcher._timer).__name__)
        assert await second == ["p0"]
        batcher._in_flight -= 1
        third = start()
        await asyncio.sleep(0)
        timers.append(type(batcher._timer).__name__)
        await third
        return timers

    assert asyncio.run(scenario(adaptive=True)) == ["Handle", "TimerHandle", "Handle"]
    assert asyncio.run(scenario(adaptive=False)) == ["TimerHandle"] * 3  # a fixed window: every batch waits
