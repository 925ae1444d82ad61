"""A git revision of this repository checked out beside the working tree, for before/after benchmarks."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worktree(rev: str, out: Path) -> Path:
    """The root of a detached git worktree of ``rev`` under ``out/src-<short sha>``, created once."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    path = out / f"src-{sha}"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", str(path), sha], cwd=ROOT, check=True,
                       capture_output=True)
    return path
