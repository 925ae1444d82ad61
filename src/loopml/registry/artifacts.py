"""Content-addressed artifact store: a blob's name is its sha256, checked on every read."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from loopml.errors import ArtifactCorrupted, ModelNotFound

__all__ = ["ArtifactStore"]


class ArtifactStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, sha: str) -> Path:
        return self.root / sha[:2] / sha

    def put(self, blob: bytes) -> str:
        sha = hashlib.sha256(blob).hexdigest()
        path = self._path(sha)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{sha}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        return sha

    def get(self, sha: str) -> bytes:
        """The blob stored as ``sha``, after checking that its content still hashes to ``sha``."""
        path = self._path(sha)
        if not path.exists():
            raise ModelNotFound(f"artifact {sha} is not in the artifact store at {self.root}")
        blob = path.read_bytes()
        actual = hashlib.sha256(blob).hexdigest()
        if actual != sha:
            raise ArtifactCorrupted(f"artifact {path} was modified: registry says sha256 {sha}, content hashes to {actual}")
        return blob
