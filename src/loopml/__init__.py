"""loopml: a production machine-learning loop in one package.

Event log -> features (one definition, two executors) -> point-in-time datasets -> training ->
evaluation -> registry -> serving with a prediction log -> monitoring -> continual learning.
The names a project file needs are re-exported here; everything else lives in its stage's package.
"""

from loopml.errors import LoopmlError
from loopml.evaluation.gates import Gates
from loopml.features.definitions import Aggregate, Label, Latest, RequestFeature, Spine
from loopml.project import Project, load_project
from loopml.training.calibrate import Calibration

__all__ = ["Aggregate", "Calibration", "Gates", "Label", "Latest", "LoopmlError", "Project", "RequestFeature", "Spine",
           "load_project"]
__version__ = "0.1.0"
