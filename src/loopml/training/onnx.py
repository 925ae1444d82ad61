"""ONNX Runtime fast path for GBMModel: export, verify against native LightGBM, serve.

At registration a model is exported with onnxmltools and scored by ONNX Runtime and by LightGBM on
a held-out sample; the export is kept only if every score agrees within ``tolerance`` (1e-5).
Then :func:`choose_engine` times ONNX Runtime against LightGBM's one-row C API (one row, and 32 rows) and the
faster is recorded with the version (``info["onnx"]["serve"]``): every process that loads the version
scores it with that engine, so batch and online scoring still agree exactly. Any export or load failure
leaves the model on the native path, with the reason recorded. For the flights model (300 trees,
categorical splits that the export unrolls into chains of equality tests) ONNX Runtime takes ~33 us for
one row against ~9 for the one-row C API and 2-2.5x ``Booster.predict``'s time for 16 rows, pinned to a
core (``bench/bench_serving.py --onnx``, bench/RESULTS.md); ~36 against ~13 at registration: it is served
natively. The choice is timed, so the same model registered on another machine may record the other.

A batch of 512 rows or more (evaluation, batch scoring) is cut into a few contiguous parts scored at once by the
same one-thread session from a few threads (ONNX Runtime's ``run`` is thread-safe and releases the
GIL). Each row's score depends on that row alone, so the scores are the same bits as one call's; a
session with 2 intra-op threads is not (its tree ensemble sums some rows' trees in another order:
up to 3.6e-7 apart on a month of flights).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sys
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["OnnxScorer", "choose_engine", "export_onnx"]


class OnnxScorer:
    """A single-threaded ONNX Runtime session scoring float32 feature matrices.

    One intra-op thread and no more options: sequential execution, no spinning, another graph
    optimisation level or IOBinding changed a one-row call by at most a few microseconds in
    ``bench_serving.py --onnx``; fetching only the probabilities (not the label) saves the most.

    Parameters
    ----------
    blob
        The serialised ONNX model.
    threads
        How many threads score a batch of at least ``parallel_rows`` rows, each a contiguous part of
        it through the same session (default: the machine's cores, at most 4). Smaller batches, and
        every online request, are one call from the caller's thread.
    parallel_rows
        The smallest batch worth cutting (into parts of at least half of it): ~30 us a row for the
        flights model makes 512 rows ~15 ms, against ~0.1 ms to start a thread; on 2 cores 600 rows
        took 18.7 ms instead of 24.7 and 2,000 rows 39 ms instead of 61.
    """

    def __init__(self, blob: bytes, *, threads: int | None = None, parallel_rows: int = 512) -> None:
        import onnxruntime as ort

        self.threads = threads if threads is not None else min(os.cpu_count() or 1, 4)
        self.parallel_rows = parallel_rows

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one row at a time: threads cost more than they save
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.output = [self.session.get_outputs()[-1].name]  # the probabilities (zipmap off); the label is not needed

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        parts = min(self.threads, len(X) // max(self.parallel_rows // 2, 1)) if len(X) >= self.parallel_rows else 1
        if parts <= 1:
            return self._run(X)
        out = np.empty(len(X), dtype=np.float64)
        first, *rest = itertools.pairwise(np.linspace(0, len(X), parts + 1).astype(int))
        errors: list[BaseException] = []

        def score(lo: int, hi: int) -> None:
            try:
                out[lo:hi] = self._run(X[lo:hi])
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
                errors.append(exc)

        others = [threading.Thread(target=score, args=bounds, daemon=True) for bounds in rest]
        for t in others:
            t.start()
        score(*first)  # the caller scores the first part itself
        for t in others:
            t.join()
        if errors:
            raise errors[0]
        return out

    def _run(self, X: np.ndarray) -> np.ndarray:
        (proba,) = self.session.run(self.output, {self.input: X})
        return np.asarray(proba[:, 1], dtype=np.float64)


def export_onnx(booster: Any, X_check: np.ndarray, *, tolerance: float = 1e-5) -> tuple[bytes | None, dict[str, Any]]:
    """ONNX bytes of ``booster`` if its scores on ``X_check`` match LightGBM's within ``tolerance``.

    Returns (bytes or None, report); the report says why the export was refused when it was.
    """
    try:
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType

        # the converter prints notes on stdout; keep stdout clean for `--json` output
        with contextlib.redirect_stdout(sys.stderr):
            onx = onnxmltools.convert_lightgbm(
                booster, initial_types=[("input", FloatTensorType([None, X_check.shape[1]]))], zipmap=False,
                target_opset=15)
        blob = onx.SerializeToString()
        onnx_scores = OnnxScorer(blob).predict(X_check)
    except Exception as exc:  # noqa: BLE001 - a converter or runtime failure means: serve natively, and say why
        return None, {"backend": "native", "reason": f"ONNX export failed: {type(exc).__name__}: {exc}"[:500]}
    # compare on the float32-rounded inputs that ONNX sees, so only the trees' arithmetic differs
    native = booster.predict(X_check.astype(np.float32).astype(np.float64), num_threads=1)
    diff = float(np.max(np.abs(onnx_scores - native))) if len(native) else 0.0
    report = {"rows_checked": len(native), "max_abs_diff": diff, "tolerance": tolerance}
    if not diff <= tolerance:
        return None, {**report, "backend": "native",
                      "reason": f"ONNX scores differ from LightGBM's by up to {diff:.2e} (> {tolerance:.0e})"}
    return blob, {**report, "backend": "onnx"}


def choose_engine(native: Callable[[np.ndarray], Any], onnx: Callable[[np.ndarray], Any], X: np.ndarray, *,
                  batch: int = 32, repeats: int = 40, rounds: int = 3) -> dict[str, Any]:
    """Which engine scores online requests faster: ``{"serve": "onnx" | "native", "reason", "timing_us"}``.

    Times ``native`` and ``onnx`` (each scores a float64 matrix) on one row and on ``batch`` rows of ``X``:
    per engine and size, ``rounds`` runs of a few warm-up calls then ``repeats`` timed ones, in turn, and the
    lowest run median (the warm cost, which a busy machine only inflates). ONNX Runtime is served only if it
    is faster at both sizes (a served request is scored alone or in a micro-batch of a few). Made once, at
    registration, and stored with the version, so every process serving or scoring it uses the same engine.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    if len(X) == 0:
        return {"serve": "onnx", "reason": "no rows to time the engines on", "timing_us": {}}
    one, many = X[:1], X[np.arange(batch) % len(X)]
    cases = (("native_row", native, one), ("onnx_row", onnx, one), ("native_batch", native, many),
             ("onnx_batch", onnx, many))
    best = dict.fromkeys([name for name, _, _ in cases], math.inf)
    for _ in range(rounds):
        for name, fn, x in cases:
            for _ in range(5):
                fn(x)
            ts = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn(x)
                ts.append(time.perf_counter() - t)
            best[name] = min(best[name], statistics.median(ts))
    us = {k: round(v * 1e6, 1) for k, v in best.items()}
    faster = us["onnx_row"] < us["native_row"] and us["onnx_batch"] < us["native_batch"]
    measured = (f"one row {us['onnx_row']:.0f} us with ONNX Runtime vs {us['native_row']:.0f} natively, "
                f"{batch} rows {us['onnx_batch']:.0f} vs {us['native_batch']:.0f} (measured at registration)")
    if faster:
        return {"serve": "onnx", "reason": f"verified ONNX export, faster: {measured}", "timing_us": us}
    return {"serve": "native", "timing_us": us,
            "reason": f"LightGBM scores this model faster than ONNX Runtime: {measured}; the verified ONNX export is "
                      f"stored (serve it with --backend onnx)"}
