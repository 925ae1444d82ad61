"""Serving: the in-process :class:`Predictor`, the HTTP app and the prediction log.

A prediction is online features (from the online executor or store) + the registry's model +
an entry in the :class:`PredictionLog` with the features as served. The HTTP adapter
(:mod:`loopml.serving.http`) is thin and imports this core, never the other way round.
"""

from loopml.serving.predictionlog import PredictionLog
from loopml.serving.predictor import Prediction, Predictor
from loopml.serving.schema import RequestSchema

__all__ = ["Prediction", "PredictionLog", "Predictor", "RequestSchema"]
