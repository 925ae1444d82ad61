"""Tail appended JSON-lines files into the online state, with a byte-offset checkpoint.

The files matching a glob pattern are read in name order (``events-0001.jsonl``, ``events-0002.jsonl``,
...: a writer rotates by starting a new name), one event per line (:mod:`loopml.events.wire`). The
position is ``FILE:OFFSET``, the byte just after the last line whose effect is committed; it is stored
in the same atomic step as the state (:class:`~loopml.events.ingest.Ingestor`), so a restarted tail
rereads nothing twice and skips nothing. A line still being written (no newline yet) is left for
later; a file may only grow until a later file appears.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from loopml.errors import EventLogError
from loopml.events.checkpoint import Quarantined
from loopml.events.ingest import Ingestor, IngestStats
from loopml.events.validate import SourceSchema
from loopml.events.wire import decode_many, encode

__all__ = ["JsonLinesTail", "append_jsonl"]


def append_jsonl(path: str | os.PathLike[str], events: Iterable[Mapping[str, Any]]) -> int:
    """Append events to a JSON-lines file (one flush at the end); return how many were written."""
    n = 0
    with open(path, "a", encoding="utf-8") as f:
        for event in events:
            f.write(encode(event))
            f.write("\n")
            n += 1
    return n


class JsonLinesTail:
    """Apply the events of appended JSON-lines files to an online executor, exactly once in effect.

    Parameters
    ----------
    executor
        An :class:`~loopml.features.OnlineExecutor` with a SQLite or Redis online store.
    pattern
        A file path or glob (``/var/log/events/*.jsonl``); matching files are read in name order.
    batch
        Lines per commit: bigger batches amortise the commit (each rewrites the changed entities' state);
        a crash redoes at most one batch.
    name
        The checkpoint's name (default ``file:PATTERN``).
    schemas, after
        See :class:`~loopml.events.ingest.Ingestor`.
    """

    def __init__(self, executor: Any, pattern: str | os.PathLike[str], *, batch: int = 20_000, name: str | None = None,
                 schemas: Sequence[SourceSchema] = (), after: datetime | None = None) -> None:
        self.pattern = str(pattern)
        self.batch = batch
        self.ingestor = Ingestor(executor, name or f"file:{self.pattern}", schemas=schemas, after=after)

    @property
    def stats(self) -> IngestStats:
        return self.ingestor.stats

    def _files(self) -> list[str]:
        return sorted(glob.glob(self.pattern)) if glob.has_magic(self.pattern) else (
            [self.pattern] if os.path.exists(self.pattern) else [])

    def _position(self) -> tuple[str | None, int]:
        pos = self.ingestor.checkpoint.position
        if not pos:
            return None, 0
        name, _, offset = pos.rpartition(":")
        return name, int(offset)

    def poll(self) -> int:
        """Apply every complete line available now; return how many lines were read."""
        files = self._files()
        name, offset = self._position()
        if name is None:
            if not files:
                return 0
            name, offset = files[0], 0
        seen = 0
        while True:
            seen += self._drain(name, offset)
            name, offset = self._position()
            later = [f for f in files if f > name] if name else files
            if not later:
                return seen
            torn = self._rest(name, offset)
            if torn:  # the writer moved on and never finished this line
                bad = Quarantined(f"{name}:{offset}", None, None, "incomplete last line (no newline) in a file "
                                  "the writer has rotated away from", torn.decode("utf-8", "replace"))
                self.ingestor.apply([], f"{later[0]}:0", undecodable=[bad])
            else:
                self.ingestor.apply([], f"{later[0]}:0")
            name, offset = later[0], 0

    def _rest(self, name: str, offset: int) -> bytes:
        with open(name, "rb") as f:
            f.seek(offset)
            return f.read()

    def _drain(self, name: str, offset: int) -> int:
        try:
            size = os.path.getsize(name)
        except FileNotFoundError:
            raise EventLogError(f"the checkpointed file {name!r} (at byte {offset}) no longer exists; "
                                "a tailed file may be rotated to a new name but not removed before it is read") from None
        if size < offset:
            raise EventLogError(f"file {name!r} is {size} bytes, shorter than the checkpointed offset {offset}: "
                                "it was truncated or replaced; tailed files may only be appended to")
        seen = 0
        with open(name, "rb") as f:
            f.seek(offset)
            carry = b""
            while True:
                chunk = f.read(max(1 << 22, 256 * self.batch))
                if not chunk:
                    return seen
                data = carry + chunk
                cut = data.rfind(b"\n") + 1
                carry = data[cut:]
                lines = data[:cut].split(b"\n")
                lines.pop()  # the empty piece after the last newline
                for lo in range(0, len(lines), self.batch):
                    part = lines[lo:lo + self.batch]
                    offset = self._apply(name, offset, part)
                    seen += len(part)

    def _apply(self, name: str, offset: int, lines: list[bytes]) -> int:
        """Apply complete lines starting at byte ``offset``; return the offset after them."""
        keep = [i for i, line in enumerate(lines) if line.strip()]
        payloads = [lines[i].strip() for i in keep]
        good, events, bad = decode_many(payloads)
        starts: list[int] | None = None

        def position_of_line(j: int) -> str:
            nonlocal starts
            if starts is None:  # only when something is quarantined
                starts, at = [], offset
                for line in lines:
                    starts.append(at)
                    at += len(line) + 1
            return f"{name}:{starts[keep[j]]}"

        end = offset + sum(len(line) for line in lines) + len(lines)
        undecodable = [Quarantined(position_of_line(i), None, None, reason, raw) for i, raw, reason in bad]
        self.ingestor.apply(events, f"{name}:{end}", position_of=lambda k: position_of_line(good[k]),
                            undecodable=undecodable)
        return end

    def run(self, *, follow: bool = False, idle_exit: float | None = None, poll_interval: float = 0.2) -> IngestStats:
        """Read to the end; with ``follow``, keep waiting for appended lines until idle ``idle_exit`` seconds."""
        idle_since = time.monotonic()
        while True:
            n = self.poll()
            if n:
                idle_since = time.monotonic()
            if not follow or (idle_exit is not None and time.monotonic() - idle_since >= idle_exit):
                return self.stats
            if not n:
                time.sleep(poll_interval)

