"""Where a project's state lives on disk: event log, online store, registry, prediction log.

``--state S`` on every command names this folder (default ``<project>/.loopml``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loopml.events.log import EventLog
from loopml.project import Project

__all__ = ["Workspace"]


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def for_project(cls, project: Project, state: str | Path | None = None) -> Workspace:
        if state is None:
            if project.path is None:
                raise ValueError("a project loaded without a path needs an explicit state folder")
            state = project.path / ".loopml"
        root = Path(state).resolve()
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    @property
    def log(self) -> EventLog:
        return EventLog(self.root / "events")

    @property
    def online_path(self) -> Path:
        return self.root / "online.sqlite"

    @property
    def registry_url(self) -> str:
        return f"sqlite:///{self.root / 'registry.sqlite'}"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def ingested(self, project: Project) -> bool:
        have = set(self.log.sources())
        return {project.spine.source, project.label.source, *project.feature_sources()} <= have

    def ensure_ingested(self, project: Project, *, progress: Callable[[str], None] | None = None) -> bool:
        """Fill the event log from the project's sources if it is empty; return True if it ingested."""
        if self.ingested(project):
            return False
        frames = project.load_events()
        project.validate_sources(frames)
        log = self.log
        for name, frame in frames.items():
            if name in log.sources():
                continue
            if progress:
                progress(name)
            log.append(name, frame)
        return True
