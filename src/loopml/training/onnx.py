"""ONNX Runtime fast path for GBMModel: export, verify against native LightGBM, serve.

At registration a model is exported with onnxmltools and scored by ONNX Runtime and by LightGBM on
a held-out sample; the export is kept only if every score agrees within ``tolerance`` (1e-5).
Serving then uses ONNX Runtime; any export or load failure leaves the model on the native path, with
the reason recorded. For the flights model (300 trees) a one-row call takes about as long as
``Booster.predict`` and a 16-row call 2-2.5x as long (``bench/bench_serving.py --onnx``,
bench/RESULTS.md). Both batch and online scoring use the same path, so they still agree exactly.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import numpy as np

__all__ = ["OnnxScorer", "export_onnx"]


class OnnxScorer:
    """A single-threaded ONNX Runtime session scoring float32 feature matrices.

    One intra-op thread and no more options: sequential execution, no spinning, another graph
    optimisation level or IOBinding changed a one-row call by at most a few microseconds in
    ``bench_serving.py --onnx``; fetching only the probabilities (not the label) saves the most.
    """

    def __init__(self, blob: bytes) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one row at a time: threads cost more than they save
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.output = [self.session.get_outputs()[-1].name]  # the probabilities (zipmap off); the label is not needed

    def predict(self, X: np.ndarray) -> np.ndarray:
        (proba,) = self.session.run(self.output, {self.input: np.ascontiguousarray(X, dtype=np.float32)})
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
