"""Training: fit a model on a point-in-time dataset.

:class:`GBMModel` wraps a LightGBM booster with the feature order and category vocabularies it was
trained with, so that serving encodes a request exactly as training did. It serialises to a JSON
document holding LightGBM's native text model: no pickle ever crosses the artifact store.
:class:`Calibration` declares how every trained model is recalibrated (stored with it, applied at
serving). Names are imported on first use, so a project file does not pay for LightGBM's import.
"""

from __future__ import annotations

from loopml._lazy import lazy_names

_WHERE = {
    "Calibration": "loopml.training.calibrate",
    "GBMModel": "loopml.training.model",
    "fit_calibrator": "loopml.training.calibrate",
    "split_for_calibration": "loopml.training.calibrate",
    "train": "loopml.training.model",
}

__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
