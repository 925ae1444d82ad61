"""Model registry: versions with lineage, content-addressed artifacts, aliases and decisions.

Metadata lives in a SQL database through SQLAlchemy Core (SQLite embedded, PostgreSQL in
production: one code path). Artifacts are stored under their sha256 and verified before loading.
Each version records its training window, feature-definition hash, git commit and metrics; every
promotion or rollback is a recorded decision with its evidence.
"""

from loopml.registry.artifacts import ArtifactStore
from loopml.registry.registry import ModelVersion, Registry

__all__ = ["ArtifactStore", "ModelVersion", "Registry"]
