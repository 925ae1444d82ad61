"""Registry metadata with SQLAlchemy Core."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from loopml.errors import InvalidConfig, ModelNotFound, RegistryError
from loopml.registry.artifacts import ArtifactStore
from loopml.training.model import GBMModel

__all__ = ["ModelVersion", "Registry", "git_commit"]

log = logging.getLogger("loopml.registry")
BACKENDS = ("auto", "onnx", "native")  # scoring engines Registry.load can be asked for

_meta = sa.MetaData()
versions_t = sa.Table(
    "model_versions", _meta,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("train_from", sa.String(40)),
    sa.Column("train_to", sa.String(40)),
    sa.Column("label_cutoff", sa.String(40)),
    sa.Column("feature_hash", sa.String(64), nullable=False),
    sa.Column("git_commit", sa.String(64)),
    sa.Column("artifact_sha256", sa.String(64), nullable=False),
    sa.Column("parent_version", sa.Integer),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("info", sa.Text, nullable=False),
)
aliases_t = sa.Table(
    "model_aliases", _meta,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("alias", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)
decisions_t = sa.Table(
    "decisions", _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("version", sa.Integer),
    sa.Column("details", sa.Text, nullable=False),
)


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    created_at: str
    train_from: str | None
    train_to: str | None
    label_cutoff: str | None
    feature_hash: str
    git_commit: str | None
    artifact_sha256: str
    parent_version: int | None
    metrics: dict[str, Any]
    info: dict[str, Any]
    aliases: tuple[str, ...] = ()


def git_commit(path: Path | None = None) -> str | None:
    """The git commit of ``path`` (or the working directory), suffixed ``-dirty`` if tracked files changed.

    None outside a repository."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    # a version trained from uncommitted code says so: the commit alone would not reproduce it
    return out.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Registry:
    """Model versions, aliases (``champion``, ``previous``) and decisions.

    Parameters
    ----------
    url
        SQLAlchemy URL of the metadata database (``sqlite:///path`` or ``postgresql+psycopg://...``).
    artifacts
        The content-addressed artifact store.
    """

    CHAMPION = "champion"
    PREVIOUS = "previous"

    def __init__(self, url: str, artifacts: ArtifactStore) -> None:
        self.url = url
        self.engine = sa.create_engine(url)
        self.artifacts = artifacts
        _meta.create_all(self.engine)

    # -- versions ----------------------------------------------------------------------------
    def register(self, model: str, artifact: bytes, *, feature_hash: str, metrics: Mapping[str, Any],
                 train_from: str | None = None, train_to: str | None = None, label_cutoff: str | None = None,
                 git: str | None = None, parent_version: int | None = None,
                 info: Mapping[str, Any] | None = None, at: str | None = None) -> ModelVersion:
        """Store ``artifact`` and record a new version of ``model`` with its lineage.

        ``at`` is the decision time on the loop's clock (default: now); ``created_at`` is always wall time.
        """
        sha = self.artifacts.put(artifact)
        with self.engine.begin() as con:
            current = con.execute(sa.select(sa.func.max(versions_t.c.version)).where(versions_t.c.model == model)).scalar()
            version = (current or 0) + 1
            con.execute(versions_t.insert().values(
                model=model, version=version, created_at=_now(), train_from=train_from, train_to=train_to,
                label_cutoff=label_cutoff, feature_hash=feature_hash, git_commit=git, artifact_sha256=sha,
                parent_version=parent_version, metrics=json.dumps(metrics, default=float),
                info=json.dumps(dict(info or {}), default=str)))
            con.execute(decisions_t.insert().values(model=model, at=at or _now(), kind="registered", version=version,
                                                    details=json.dumps({"metrics": metrics}, default=float)))
        return self.get(model, version)

    def resolve(self, model: str, ref: int | str) -> int:
        """A version number from a number, a numeric string or an alias such as 'champion'."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            return int(ref)
        with self.engine.connect() as con:
            v = con.execute(sa.select(aliases_t.c.version).where(
                (aliases_t.c.model == model) & (aliases_t.c.alias == ref))).scalar()
        if v is None:
            raise ModelNotFound(f"model {model!r} has no version with alias {ref!r}; "
                                f"versions: {[m.version for m in self.versions(model)]}")
        return int(v)

    def get(self, model: str, ref: int | str) -> ModelVersion:
        version = self.resolve(model, ref)
        with self.engine.connect() as con:
            row = con.execute(sa.select(versions_t).where(
                (versions_t.c.model == model) & (versions_t.c.version == version))).mappings().first()
            aliases = con.execute(sa.select(aliases_t.c.alias).where(
                (aliases_t.c.model == model) & (aliases_t.c.version == version))).scalars().all()
        if row is None:
            raise ModelNotFound(f"model {model!r} has no version {version}; "
                                f"versions: {[m.version for m in self.versions(model)]}")
        return _version(row, aliases)

    def versions(self, model: str) -> list[ModelVersion]:
        with self.engine.connect() as con:
            rows = con.execute(sa.select(versions_t).where(versions_t.c.model == model)
                               .order_by(versions_t.c.version)).mappings().all()
            aliases = con.execute(sa.select(aliases_t).where(aliases_t.c.model == model)).mappings().all()
        by_version: dict[int, list[str]] = {}
        for a in aliases:
            by_version.setdefault(a["version"], []).append(a["alias"])
        return [_version(r, by_version.get(r["version"], [])) for r in rows]

    def load(self, model: str, ref: int | str = CHAMPION, *, backend: str = "auto") -> tuple[ModelVersion, GBMModel]:
        """The version and its model, loaded only after its artifact's sha256 is verified.

        ``backend`` picks the scoring engine: ``"auto"`` the one recorded for the version at registration (ONNX
        Runtime where its verified export was the faster, else LightGBM; versions registered before that choice
        existed: ONNX), ``"onnx"`` its verified ONNX export if it has one, ``"native"`` LightGBM.
        """
        if backend not in BACKENDS:
            raise InvalidConfig(f"backend must be one of {list(BACKENDS)}; got {backend!r}")
        mv = self.get(model, ref)
        gbm = GBMModel.from_bytes(self.artifacts.get(mv.artifact_sha256))
        onnx = mv.info.get("onnx") or {}
        chosen = onnx.get("serve", "onnx") if backend == "auto" else backend
        if onnx.get("sha256") and chosen == "native":
            gbm.backend_reason = ("LightGBM asked for (backend 'native'); the verified ONNX export is stored"
                                  if backend == "native" else onnx.get("reason") or "LightGBM recorded at registration")
        elif onnx.get("sha256"):
            try:
                gbm.use_onnx(self.artifacts.get(onnx["sha256"]))
                if backend == "auto" and onnx.get("serve") == "onnx":
                    gbm.backend_reason = onnx.get("reason", gbm.backend_reason)
            except Exception as exc:  # any failure: keep serving natively, and say why
                gbm.backend_reason = f"ONNX load failed: {type(exc).__name__}: {exc}"
                log.warning("model %s v%s served natively: %s", model, mv.version, gbm.backend_reason)
        else:  # no verified export to serve
            why = onnx.get("reason") or "no ONNX export was made at registration"
            gbm.backend_reason = why
            if backend == "onnx":
                gbm.backend_reason = f"ONNX asked for (backend 'onnx') but this version has no verified export: {why}"
                log.warning("model %s v%s served natively: %s", model, mv.version, gbm.backend_reason)
        return mv, gbm

    # -- aliases and decisions ------------------------------------------------------------------
    def promote(self, model: str, version: int | str, *, reason: str = "manual",
                evidence: Mapping[str, Any] | None = None, at: str | None = None) -> ModelVersion:
        """Make ``version`` the champion; the old champion becomes ``previous`` (for rollback)."""
        v = self.get(model, version).version
        with self.engine.begin() as con:
            old = con.execute(sa.select(aliases_t.c.version).where(
                (aliases_t.c.model == model) & (aliases_t.c.alias == self.CHAMPION))).scalar()
            if old is not None and old != v:
                self._set_alias(con, model, self.PREVIOUS, old)
            self._set_alias(con, model, self.CHAMPION, v)
            con.execute(decisions_t.insert().values(
                model=model, at=at or _now(), kind="promoted", version=v,
                details=json.dumps({"reason": reason, "previous": old, "evidence": dict(evidence or {})}, default=float)))
        return self.get(model, v)

    def rollback(self, model: str) -> ModelVersion:
        """Swap champion and previous champion: one call, nothing retrained or reloaded from elsewhere."""
        prev = self.resolve(model, self.PREVIOUS) if self._has_alias(model, self.PREVIOUS) else None
        if prev is None:
            raise RegistryError(f"model {model!r} has no previous champion to roll back to")
        cur = self.resolve(model, self.CHAMPION)
        with self.engine.begin() as con:
            self._set_alias(con, model, self.CHAMPION, prev)
            self._set_alias(con, model, self.PREVIOUS, cur)
            con.execute(decisions_t.insert().values(model=model, at=_now(), kind="rolled_back", version=prev,
                                                    details=json.dumps({"from": cur, "to": prev})))
        return self.get(model, prev)

    def record(self, model: str, kind: str, *, version: int | None = None, details: Mapping[str, Any] | None = None,
               at: str | None = None) -> None:
        """Record a decision (a trigger fired, a challenger rejected, ...) with its numbers."""
        with self.engine.begin() as con:
            con.execute(decisions_t.insert().values(model=model, at=at or _now(), kind=kind, version=version,
                                                    details=json.dumps(dict(details or {}), default=float)))

    def decisions(self, model: str) -> list[dict[str, Any]]:
        with self.engine.connect() as con:
            rows = con.execute(sa.select(decisions_t).where(decisions_t.c.model == model)
                               .order_by(decisions_t.c.id)).mappings().all()
        return [{**dict(r), "details": json.loads(r["details"])} for r in rows]

    def _has_alias(self, model: str, alias: str) -> bool:
        with self.engine.connect() as con:
            return con.execute(sa.select(aliases_t.c.version).where(
                (aliases_t.c.model == model) & (aliases_t.c.alias == alias))).scalar() is not None

    @staticmethod
    def _set_alias(con: sa.Connection, model: str, alias: str, version: int) -> None:
        con.execute(aliases_t.delete().where((aliases_t.c.model == model) & (aliases_t.c.alias == alias)))
        con.execute(aliases_t.insert().values(model=model, alias=alias, version=version))


def _version(row: Mapping[str, Any], aliases: list[str] | tuple[str, ...]) -> ModelVersion:
    d = dict(row)
    d["metrics"] = json.loads(d["metrics"])
    d["info"] = json.loads(d["info"])
    return ModelVersion(**d, aliases=tuple(sorted(aliases)))
