"""Assemble a Predictor for a project's state folder (used by ``loopml serve`` and tests)."""

from __future__ import annotations

from collections.abc import Callable

from loopml.features.online import OnlineExecutor
from loopml.features.store import SQLiteOnlineStore
from loopml.project import Project
from loopml.registry import ArtifactStore, Registry
from loopml.serving.predictionlog import PredictionLog
from loopml.serving.predictor import Predictor
from loopml.serving.schema import RequestSchema
from loopml.training.model import GBMModel
from loopml.workspace import Workspace

__all__ = ["build_predictor", "champion_resolver", "model_loader"]


def model_loader(project: Project, ws: Workspace) -> Callable[[str], tuple[int, GBMModel]]:
    """``ref -> (version, model)`` from the state's registry (artifact sha256 verified on load)."""
    registry = Registry(ws.registry_url, ArtifactStore(ws.artifacts))

    def load(ref: str) -> tuple[int, GBMModel]:
        mv, model = registry.load(project.name, ref)
        project.check_model_features(mv.info, version=mv.version)  # never serve redefined features
        return mv.version, model

    return load


def champion_resolver(project: Project, ws: Workspace) -> Callable[[], int]:
    """``() -> version`` of the project's champion in the state's registry (for hot swap on promote)."""
    registry = Registry(ws.registry_url, ArtifactStore(ws.artifacts))
    return lambda: registry.resolve(project.name, Registry.CHAMPION)


def build_predictor(project: Project, ws: Workspace, model_version: str | int = "champion") -> Predictor:
    """Champion (or ``model_version``) + the SQLite online store + the state's prediction log."""
    registry = Registry(ws.registry_url, ArtifactStore(ws.artifacts))
    mv, model = registry.load(project.name, model_version)
    project.check_model_features(mv.info, version=mv.version)  # never serve redefined features
    online = OnlineExecutor(project.features, store=SQLiteOnlineStore(ws.online_path))
    schema = RequestSchema.from_arrow(ws.log.schema(project.spine.source), project.spine.request_fields)
    return Predictor(project, online, model, mv.version, PredictionLog(ws.predictions), schema)
