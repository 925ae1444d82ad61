"""Training: fit a model on a point-in-time dataset.

:class:`GBMModel` wraps a LightGBM booster with the feature order and category vocabularies it was
trained with, so that serving encodes a request exactly as training did. It serialises to a JSON
document holding LightGBM's native text model: no pickle ever crosses the artifact store.
"""

from loopml.training.model import GBMModel, train

__all__ = ["GBMModel", "train"]
