"""Assemble a Predictor for a project's state folder (used by ``loopml serve`` and tests)."""

from __future__ import annotations

from collections.abc import Callable

from loopml.errors import SchemaError
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


def model_loader(project: Project, ws: Workspace, *, backend: str = "auto") -> Callable[[str], tuple[int, GBMModel]]:
    """``ref -> (version, model)`` from the state's registry (artifact sha256 verified on load); ``backend``: the
    scoring engine (see :meth:`~loopml.registry.Registry.load`)."""
    registry = Registry(ws.registry_url, ArtifactStore(ws.artifacts))

    def load(ref: str) -> tuple[int, GBMModel]:
        mv, model = registry.load(project.name, ref, backend=backend)
        project.check_model_features(mv.info, version=mv.version)  # never serve redefined features
        return mv.version, model

    return load


def champion_resolver(project: Project, ws: Workspace) -> Callable[[], int]:
    """``() -> version`` of the project's champion in the state's registry (for hot swap on promote)."""
    registry = Registry(ws.registry_url, ArtifactStore(ws.artifacts))
    return lambda: registry.resolve(project.name, Registry.CHAMPION)


def build_predictor(project: Project, ws: Workspace, model_version: str | int = "champion", *,
                    backend: str = "auto") -> Predictor:
    """Champion (or ``model_version``) + the SQLite online store + the state's prediction log; ``backend``: the
    scoring engine (``auto``: the one recorded for the version, see :meth:`~loopml.registry.Registry.load`)."""
    registry = Registry(ws.registry_url, ArtifactStore(ws.artifacts))
    mv, model = registry.load(project.name, model_version, backend=backend)
    project.check_model_features(mv.info, version=mv.version)  # never serve redefined features
    store = SQLiteOnlineStore(ws.online_path)
    online = OnlineExecutor(project.features, store=store)
    _check_state_layout(online, store, ws)
    schema = RequestSchema.from_arrow(ws.log.schema(project.spine.source), project.spine.request_fields)
    return Predictor(project, online, model, mv.version, PredictionLog(ws.predictions), schema)


def _check_state_layout(online: OnlineExecutor, store: SQLiteOnlineStore, ws: Workspace) -> None:
    """Refuse to serve from online state none of whose groups these feature definitions can read.

    State written for other definitions (or by a loopml before state groups carried their layout)
    would otherwise serve every stored feature as missing, silently.
    """
    stored = store.groups()
    wanted = {g.id for g in online.groups}
    if stored and wanted and not stored & wanted:
        raise SchemaError(
            f"The online state in {ws.online_path} holds groups {sorted(stored)[:4]} but these feature definitions "
            f"read {sorted(wanted)[:4]}: it was built for other definitions or by an older loopml. Rebuild it "
            f"with `loopml materialize --at T` (or replay), then serve.")
