"""A project: the one Python file where a team declares its sources, spine, label and features.

``loopml`` commands take ``--project P``: the folder holding ``P/project.py``, which must define a
module-level ``project = Project(...)``. :func:`load_project` imports it.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from loopml.errors import InvalidConfig, SchemaError
from loopml.evaluation.gates import Gates
from loopml.features.definitions import (
    Feature,
    Label,
    RequestFeature,
    Spine,
    changed_features,
    definition_hash,
)
from loopml.training.calibrate import Calibration

__all__ = ["Project", "load_project"]


@dataclass(frozen=True)
class Project:
    """Everything loopml needs to know about one prediction problem.

    Parameters
    ----------
    name
        Short identifier; also the served model's name (``/v2/models/{name}``).
    load_events
        ``() -> {source: DataFrame}``; each frame has ``event_time`` and ``available_time``
        columns (UTC). Called once to fill the event log (``loopml ingest``).
    spine, label, features
        See :mod:`loopml.features.definitions`.
    categorical
        Names of features the model treats as categories.
    model_params
        LightGBM parameters.
    train_from, train_to
        Default training window (ISO dates).
    description
        Intended use, for model cards.
    behaviour
        Behavioural tests (:mod:`loopml.evaluation.behaviour`) run at every training and evaluation.
    gates
        The promotion policy (:class:`loopml.evaluation.gates.Gates` or a mapping of its fields);
        ``loopml models promote`` and ``loopml evaluate`` enforce it. Defaults to ``Gates()``.
    calibration
        :class:`loopml.training.calibrate.Calibration` to recalibrate every trained model on a
        held-out end of its training window (stored with the version, applied at serving), or None.
    policy
        The continual-learning policy: :class:`loopml.loop.RetrainPolicy` or a preset name
        (``"static"``, ``"monthly"``, ``"weekly-stateful"``, ``"triggered"``); None means monthly.
    path
        The folder the project was loaded from.
    """

    name: str
    load_events: Callable[[], Mapping[str, pd.DataFrame]]
    spine: Spine
    label: Label
    features: tuple[Feature, ...]
    categorical: tuple[str, ...] = ()
    model_params: Mapping[str, Any] = field(default_factory=dict)
    train_from: str = ""
    train_to: str = ""
    evaluate_months: int = 1
    description: str = ""
    behaviour: tuple[Any, ...] = ()
    gates: Gates | Mapping[str, Any] | None = None
    calibration: Calibration | None = None
    policy: Any = None
    path: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "behaviour", tuple(self.behaviour))
        object.__setattr__(self, "gates", Gates.coerce(self.gates))
        if self.policy is not None:
            from loopml.loop.policy import RetrainPolicy  # lazy: the loop package imports this module

            object.__setattr__(self, "policy", RetrainPolicy.coerce(self.policy))
        if self.calibration is not None and not isinstance(self.calibration, Calibration):
            raise InvalidConfig(f"Project {self.name!r}: calibration must be loopml Calibration(...) or None; "
                                f"got {type(self.calibration).__name__}")
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidConfig(f"Project {self.name!r}: feature names must be unique; repeated: {dupes}")
        unknown = [c for c in self.categorical if c not in names]
        if unknown:
            raise InvalidConfig(f"Project {self.name!r}: categorical names {unknown} are not features")
        for f in self.features:
            if isinstance(f, RequestFeature):
                extra = [c for c in f.inputs if c not in self.spine.request_fields]
                if extra:
                    raise InvalidConfig(
                        f"Feature {f.name!r} reads request field(s) {extra}, which the spine's request_fields "
                        f"{list(self.spine.request_fields)} do not include")

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def feature_hash(self) -> str:
        return definition_hash(self.features)

    def required_columns(self) -> dict[str, set[str]]:
        """Per source, the columns that the spine, label and features read (besides the two times)."""
        need: dict[str, set[str]] = {}
        sp, lb = self.spine, self.label
        need.setdefault(sp.source, set()).update({sp.id, sp.time_column, *sp.request_fields, *sp.carry})
        need.setdefault(lb.source, set()).update({lb.id, lb.column})
        for f in self.features:
            if isinstance(f, RequestFeature):
                continue
            cols = need.setdefault(f.source, set())
            cols.update(f.keys)
            column = getattr(f, "column", None)
            if column is not None:
                cols.add(column)
        return need

    def validate_sources(self, frames: Mapping[str, pd.DataFrame]) -> None:
        """Check every declared source is present with every column the project reads, before anything is stored."""
        for source, cols in sorted(self.required_columns().items()):
            if source not in frames:
                raise SchemaError(f"Project {self.name!r} reads source {source!r}, which load_events() did not return; "
                                  f"it returned {sorted(frames)}")
            frame = frames[source]
            for c in sorted(cols | {"event_time", "available_time"}):
                if c not in frame.columns:
                    raise SchemaError(f"Source {source!r} is missing column {c!r} that the project reads; "
                                      f"it has {sorted(map(str, frame.columns))}")

    def check_model_features(self, info: Mapping[str, Any], *, version: int | str = "?") -> None:
        """Refuse to serve a model whose features this project has since redefined or removed.

        ``info`` is the registered version's info (its ``feature_versions``); serving it with other
        definitions would feed it values it was never trained on (training/serving skew).
        """
        recorded = info.get("feature_versions")
        if not recorded:
            return  # registered before per-feature versions were recorded
        changed = changed_features(recorded, self.features)
        if changed:
            raise SchemaError(
                f"Model {self.name!r} v{version} was trained with feature definitions that project.py has since "
                f"changed: {changed}. Serve a version trained on the current definitions (loopml train), or the "
                f"project file this version was trained with.")

    def feature_sources(self) -> list[str]:
        return sorted({f.source for f in self.features if not isinstance(f, RequestFeature)})


def load_project(path: str | Path) -> Project:
    """Import ``path/project.py`` (or ``path`` itself if it is a .py file) and return its ``project``."""
    p = Path(path)
    file = p if p.suffix == ".py" else p / "project.py"
    if not file.exists():
        raise InvalidConfig(f"--project {path!s}: no project file at {file} (a folder with project.py is expected)")
    module_name = f"loopml_project_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise InvalidConfig(f"cannot import project file {file}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(file.parent))
    try:
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(file.parent))
    project = getattr(module, "project", None)
    if not isinstance(project, Project):
        raise InvalidConfig(f"{file} must define `project = loopml.Project(...)`; found {type(project).__name__}")
    return Project(**{**project.__dict__, "path": file.parent.resolve()})
