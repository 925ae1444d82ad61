"""Adaptive micro-batching: requests that arrive together are scored in one model call.

The first request to arrive opens a window of at most ``window_ms``; every request that arrives
before it closes (or until ``max_rows`` rows are waiting) joins the batch -- with ``window_ms=0``,
only the requests the event loop has already received in the same turn (no added wait), which is scored by one
:meth:`~loopml.serving.Predictor.predict_many` call (one feature fetch pass, one model call, one
prediction-log append). A lone request waits at most the window; with ``adaptive`` it does not wait at
all unless other requests are in flight (joined a batch, not yet answered), so a server under light load
answers as fast as without batching and one under concurrent load scores fewer, larger batches
(``loopml serve``'s default: 1 ms, adaptive). Results are identical to scoring each request alone; every prediction is fsynced in the log
before any of its batch's responses leave.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from loopml.errors import InvalidConfig
from loopml.serving.predictor import Prediction, Predictor

__all__ = ["MicroBatcher"]

MAX_WINDOW_MS = 10.0


class MicroBatcher:
    """Collect concurrent requests for up to ``window_ms`` milliseconds, then score them together.

    Parameters
    ----------
    predictor
        Scores the batch.
    window_ms
        Longest wait for company, in milliseconds (0 <= window_ms <= 10); 0 waits for nothing: the batch
        is whatever arrived in the same turn of the event loop.
    max_rows
        A batch is scored as soon as this many rows wait.
    adaptive
        Wait for company only while other requests are in flight (in a batch, not answered yet): a request
        that arrives alone is scored in the event-loop turn it arrived in (as with ``window_ms=0``).
    """

    def __init__(self, predictor: Predictor, *, window_ms: float = 1.0, max_rows: int = 64,
                 adaptive: bool = False) -> None:
        if not 0 <= window_ms <= MAX_WINDOW_MS:
            raise InvalidConfig(f"batch window_ms must be in [0, {MAX_WINDOW_MS}]; got {window_ms!r}")
        if max_rows < 1:
            raise InvalidConfig(f"batch max_rows must be at least 1; got {max_rows!r}")
        self.predictor = predictor
        self.window_ms = window_ms
        self.max_rows = max_rows
        self.adaptive = adaptive
        self._in_flight = 0  # rows that joined a batch and are not answered yet (adaptive: wait only if others are)
        self._pending: list[tuple[Mapping[str, Any], datetime | None, str | None, str | None]] = []
        self._waiters: list[tuple[asyncio.Future[list[Prediction]], int]] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None

    async def predict(self, rows: Sequence[Mapping[str, Any]], *, ats: Sequence[datetime | None],
                      entity_ids: Sequence[str | None], request_ids: Sequence[str | None]) -> list[Prediction]:
        """Predictions for validated ``rows``, scored with whatever else arrives within the window."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Prediction]] = loop.create_future()
        self._waiters.append((future, len(rows)))
        self._pending.extend(zip(rows, ats, entity_ids, request_ids, strict=True))
        company = self._in_flight > 0  # others joined before and are not answered yet
        self._in_flight += len(rows)
        try:
            if len(self._pending) >= self.max_rows:
                self._flush()
            elif self._timer is None:
                wait = self.window_ms > 0 and (not self.adaptive or company)
                self._timer = loop.call_later(self.window_ms / 1000, self._flush) if wait else loop.call_soon(self._flush)
            return await future
        finally:
            self._in_flight -= len(rows)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, waiters = self._pending, self._waiters
        self._pending, self._waiters = [], []
        if not pending:
            return
        try:
            preds, ticket = self.predictor.score_and_log(
                [p[0] for p in pending], ats=[p[1] for p in pending], entity_ids=[p[2] for p in pending],
                request_ids=[p[3] for p in pending], validated=True)
        except Exception as exc:  # hand the failure to every request of the batch; the server keeps running
            _settle(waiters, None, exc)
            return
        log = self.predictor.log
        if ticket is None or log is None:
            _settle(waiters, preds, None)
            return
        # answer once the batch's log records are fsynced (group commit), without blocking the loop
        log.when_durable(ticket, lambda failure: _settle(waiters, preds, failure))


def _settle(waiters: list[tuple[asyncio.Future[list[Prediction]], int]], preds: list[Prediction] | None,
            exc: BaseException | None) -> None:
    start = 0
    for future, n in waiters:
        if not future.done():  # a client that went away cancels its future
            if exc is not None or preds is None:
                future.set_exception(exc or RuntimeError("no predictions"))
            else:
                future.set_result(preds[start:start + n])
        start += n
