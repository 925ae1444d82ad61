"""The prediction log: every served prediction, and labels joined to it later by request id.

Records are JSON lines appended to segment files (one per writer process and start). An append
writes and flushes the lines to the operating system at once (a killed process loses nothing it
wrote), and a prediction counts as logged only once its lines are fsynced: a background thread
fsyncs whatever has been written since its last fsync, as soon as it is done with that one, and
then wakes every writer the fsync covered (group commit). The first fsync after a new segment (or
folder) is created also fsyncs the folder that holds it: without that, a power loss can drop the new
file's directory entry, and with it predictions already acknowledged. Writers wait for their fsync either by
blocking (:meth:`PredictionLog.wait`) or, on an event loop, by awaiting (:meth:`PredictionLog.durable`)
-- so a slow disk delays only the requests waiting for it, never the whole server. Under load one
fsync covers many requests. A line torn by a crash mid-write is skipped on reading. DuckDB reads
the segments directly (``read_json``), so monitoring, label joins and the next training set query
the log with SQL.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from loopml.errors import PredictionLogError
from loopml.events.log import duckdb_connect

__all__ = ["PredictionLog"]

IDLE_EXIT_S = 5.0  # a flusher thread with nothing to fsync for this long ends (no thread per idle log)


class PredictionLog:
    """Append-only prediction and label log under ``root`` (``predictions/`` and ``labels/``).

    Parameters
    ----------
    root
        Folder for the log's segments.

    Examples
    --------
    On an event loop (the HTTP server)::

        ticket = log.append_predictions(records)   # written and flushed; not yet fsynced
        await log.durable(ticket)                  # on disk (group commit): now acknowledge

    Anywhere else, ``log.log_predictions(records)`` does both and blocks.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._files: dict[str, Any] = {}
        self._lock = threading.Lock()          # writers: one append at a time, in ticket order
        self._cond = threading.Condition(threading.Lock())  # the flusher and blocking waiters
        self._written = 0                      # ticket of the last append
        self._synced = 0                       # every append up to this ticket is fsynced
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, _Waiter]] = []
        self._flusher: threading.Thread | None = None
        self._closing = False
        self._failure: PredictionLogError | None = None  # set once an fsync failed: nothing is durable after it
        self._new_dirs: set[Path] = set()      # folders with a new entry (segment or folder) not fsynced yet
        self._maybe_dirs: set[Path] = set()    # folders that may have one (made by someone else): best effort
        self.fsyncs = 0                        # group commits so far (one covers many appends under load)

    def _file(self, kind: str) -> Any:
        fh = self._files.get(kind)
        if fh is None:
            folder = self.root / kind
            missing = folder
            while not missing.exists():  # each folder mkdir makes is a new entry in its parent
                self._new_dirs.add(missing.parent)
                missing = missing.parent
            folder.mkdir(parents=True, exist_ok=True)
            name = f"seg-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:6]}.jsonl"
            fh = open(folder / name, "ab")  # noqa: SIM115 - kept open for appends
            self._files[kind] = fh
            # Fsynced by the flusher with the file's first fsync, before any line in it is acknowledged: not
            # here, where the writer (on the event loop) holds the lock and would wait for the disk. The root
            # and its parent too, whoever made them (another writer on the same state folder may have, and not
            # fsynced them yet), as far as they can be opened: a folder this log did not make may not be ours
            # to read (a new segment is rare: once per process and kind).
            self._new_dirs.add(folder)
            self._maybe_dirs.update(d for d in (self.root, self.root.parent) if d not in self._new_dirs)
        return fh

    def _append(self, kind: str, records: Iterable[Mapping[str, Any]]) -> int:
        data = b"".join(orjson.dumps(r, default=_default, option=_OPTIONS) for r in records)
        with self._lock:
            if self._failure is not None:
                raise self._failed()
            fh = self._file(kind)
            try:
                fh.write(data)
                fh.flush()  # in the OS from here: a SIGKILL of this process no longer loses it
            except OSError as exc:
                raise PredictionLogError(f"could not write to the prediction log {fh.name}: {exc}") from exc
            with self._cond:
                self._written += 1
                ticket = self._written
                if self._flusher is None or not self._flusher.is_alive():
                    self._closing = False
                    self._flusher = threading.Thread(target=self._run, name="loopml-predictionlog-fsync",
                                                     daemon=True)
                    self._flusher.start()
                self._cond.notify_all()
        return ticket

    @property
    def failure(self) -> str | None:
        """Why every append fails from now on (an fsync failed: nothing is durable after it); None while healthy."""
        failure = self._failure
        return None if failure is None else str(failure)

    def _failed(self) -> PredictionLogError:
        """A new error for each caller: re-raising the stored one would chain every request's frames onto it."""
        assert self._failure is not None
        return PredictionLogError(str(self._failure))

    def _run(self) -> None:
        """The flusher: fsync everything written so far, wake the writers it covered, repeat."""
        while True:
            with self._cond:
                while self._written == self._synced and not self._closing:
                    if not self._cond.wait(timeout=IDLE_EXIT_S):  # idle: end; the next append starts another
                        if self._written == self._synced:
                            self._flusher = None
                            return
                if self._written == self._synced:  # closing, nothing left
                    return
                target = self._written
            with self._lock:  # every append up to `target` has been written and flushed
                fds = [fh.fileno() for fh in self._files.values()]
                dirs, self._new_dirs = self._new_dirs, set()
                maybe, self._maybe_dirs = self._maybe_dirs - dirs, set()
            try:
                for fd in fds:
                    os.fsync(fd)
                for folder in sorted(dirs):
                    _fsync_dir(folder)
                for folder in sorted(maybe):
                    _fsync_dir(folder, best_effort=True)
            except OSError as exc:  # a full or failing disk: fail every waiter now, never acknowledge
                failure = PredictionLogError(f"could not fsync the prediction log under {self.root}: {exc}")
                with self._cond:
                    self._failure = failure
                    self._cond.notify_all()
                    ready, self._waiters = self._waiters, []
                _wake(ready, failure)
                return
            self.fsyncs += 1
            with self._cond:
                self._synced = target
                self._cond.notify_all()
                ready = [w for w in self._waiters if w[0] <= target]
                self._waiters = [w for w in self._waiters if w[0] > target]
            _wake(ready, None)

    def wait(self, ticket: int) -> None:
        """Block until the append that returned ``ticket`` is fsynced."""
        with self._cond:
            while self._synced < ticket:
                if self._failure is not None:
                    raise self._failed()
                self._cond.wait()

    def durable(self, ticket: int) -> asyncio.Future[None]:
        """An awaitable, on the running event loop, done once the append of ``ticket`` is fsynced."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._cond:
            if self._synced >= ticket:
                fut.set_result(None)
            elif self._failure is not None:
                fut.set_exception(self._failed())
            else:
                self._waiters.append((ticket, loop, fut))
        return fut

    def when_durable(self, ticket: int, callback: Callable[[BaseException | None], None]) -> None:
        """Call ``callback(None)`` on the running event loop once the append of ``ticket`` is fsynced, or
        ``callback(error)`` if the fsync failed; now if it already is. One loop callback per fsync for all
        of its waiters, without a future each (what the micro-batcher answers a batch from)."""
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._synced < ticket and self._failure is None:
                self._waiters.append((ticket, loop, callback))
                return
            failure = self._failed() if self._synced < ticket else None
        callback(failure)

    def append_predictions(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Write prediction records; return the ticket to :meth:`wait` for or :meth:`durable` on."""
        return self._append("predictions", records)

    def log_predictions(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append prediction records (request_id, entity_id, model_version, at, score, features, ...); on disk on return."""
        self.wait(self._append("predictions", records))

    def log_labels(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append label records (request_id, label, label_time); on disk on return."""
        self.wait(self._append("labels", records))

    def close(self) -> None:
        """Fsync what was written, stop the flusher and close the segments (a later append opens new ones)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            flusher = self._flusher
        if flusher is not None:
            flusher.join()
        with self._cond:
            self._flusher = None
        with self._lock:
            for fh in self._files.values():
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()
            self._files.clear()
            dirs, self._new_dirs = self._new_dirs, set()  # left only if a write to a new segment failed
            maybe, self._maybe_dirs = self._maybe_dirs - dirs, set()
            for folder in sorted(dirs):
                _fsync_dir(folder)
            for folder in sorted(maybe):
                _fsync_dir(folder, best_effort=True)

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------
    def _glob(self, kind: str) -> str | None:
        folder = self.root / kind
        if not folder.exists() or not any(folder.glob("seg-*.jsonl")):
            return None
        return str(folder / "seg-*.jsonl")

    def joined(self, *, start: Any = None, end: Any = None, labelled_by: Any = None) -> pd.DataFrame:
        """Predictions with their labels (log and wait): one row per prediction, label NULL if not yet known.

        ``labelled_by`` keeps only labels whose label_time is at or before it (what was known then).
        """
        with self._lock:
            for fh in self._files.values():
                fh.flush()
        preds = self._glob("predictions")
        if preds is None:
            return pd.DataFrame(columns=["request_id", "entity_id", "model_version", "at", "score", "label", "label_time"])
        labels = self._glob("labels")
        con = duckdb_connect()
        con.execute("SET TimeZone = 'UTC'")
        where, params = [], []
        if start is not None:
            where.append('p."at" >= ?')
            params.append(pd.Timestamp(start))
        if end is not None:
            where.append('p."at" < ?')
            params.append(pd.Timestamp(end))
        pred_sql = (f"SELECT request_id, entity_id, model_version, CAST(\"at\" AS TIMESTAMPTZ) AS \"at\", score "
                    f"FROM read_json('{preds}', format='newline_delimited', ignore_errors=true, columns={{request_id:'VARCHAR', "
                    f"entity_id:'VARCHAR', model_version:'INTEGER', \"at\":'VARCHAR', score:'DOUBLE'}}) WHERE request_id IS NOT NULL AND \"at\" IS NOT NULL")
        if labels is None:
            sql = f"SELECT p.*, NULL::DOUBLE AS label, NULL::TIMESTAMPTZ AS label_time FROM ({pred_sql}) p"
        else:
            lab_filter = ""
            if labelled_by is not None:
                lab_filter = "WHERE CAST(label_time AS TIMESTAMPTZ) <= ?"
            sql = f"""
                WITH l AS (
                    SELECT request_id, label, CAST(label_time AS TIMESTAMPTZ) AS label_time
                    FROM read_json('{labels}', format='newline_delimited', ignore_errors=true,
                                   columns={{request_id:'VARCHAR', label:'DOUBLE', label_time:'VARCHAR'}})
                    WHERE request_id IS NOT NULL AND label_time IS NOT NULL {lab_filter.replace('WHERE', 'AND')}
                    QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY label_time) = 1
                )
                SELECT p.*, l.label, l.label_time FROM ({pred_sql}) p LEFT JOIN l USING (request_id)
            """
            if labelled_by is not None:
                params = [pd.Timestamp(labelled_by), *params]
        if where:
            sql = f"SELECT * FROM ({sql}) p WHERE " + " AND ".join(where)
        return con.execute(sql + ' ORDER BY "at", request_id', params).df()

    def read_predictions(self) -> pd.DataFrame:
        """Every logged prediction with all its fields (features as served included)."""
        with self._lock:
            for fh in self._files.values():
                fh.flush()
        preds = self._glob("predictions")
        if preds is None:
            return pd.DataFrame()
        return duckdb_connect().sql(f"SELECT * FROM read_json_auto('{preds}', format='newline_delimited', ignore_errors=true) "
                          "WHERE request_id IS NOT NULL").df()


_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


_Waiter = asyncio.Future[None] | Callable[[BaseException | None], None]


def _wake(waiters: list[tuple[int, asyncio.AbstractEventLoop, _Waiter]], failure: BaseException | None) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[_Waiter]] = {}
    for _, loop, waiter in waiters:
        by_loop.setdefault(loop, []).append(waiter)
    for loop, ws in by_loop.items():  # one wake-up per event loop, not per request
        try:
            loop.call_soon_threadsafe(_resolve, ws, failure)
        except RuntimeError:  # that loop is closed: nobody is waiting any more
            pass


def _resolve(waiters: list[_Waiter], failure: BaseException | None) -> None:
    for waiter in waiters:
        # each waiter gets an error of its own: one shared object would collect every request's traceback
        error = None if failure is None else PredictionLogError(str(failure))
        if not isinstance(waiter, asyncio.Future):
            try:
                waiter(error)
            except Exception:  # one broken callback must not leave the other waiters hanging
                logging.getLogger(__name__).exception("prediction log: a durability callback failed")
        elif waiter.done():  # a client that went away cancelled its wait
            continue
        elif error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)


def _fsync_dir(folder: Path, *, best_effort: bool = False) -> None:
    """Fsync ``folder`` itself: the new entries in it (a segment, a subfolder) then survive a power loss.

    Where folders cannot be fsynced (Windows cannot open one; some network and FUSE filesystems answer
    EINVAL or ENOTSUP) there is nothing more to do, as PostgreSQL and SQLite also conclude; a real I/O
    error (EIO, ENOSPC) fails the log. ``best_effort``: a folder this log did not make, which it may not
    be allowed to open, is skipped then.
    """
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        if best_effort:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


_NO_DIR_FSYNC = {errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EOPNOTSUPP}


def _default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float | int):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
