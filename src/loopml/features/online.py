"""Online executor: incremental per-entity state, updated from the event stream, read at any time t.

State is kept per *group* -- a (source, keys) pair -- and per entity key:

- for windowed aggregates, the recent events' available times and values (trimmed to the widest
  window of the group), so a read at ``t`` aggregates exactly the events in ``(t - window, t]``,
  the same set the offline executor's SQL frame selects;
- for latest values, per column the last non-missing value with its times;
- for ``approx_distinct`` columns, the recent events' values as canonical text (strings count too).

``last``, ``last_k`` and the sketches read the same window arrays: events are appended in the log's
(available time, event time, event id) order, which is the order the offline executor sorts by.

Groups whose ``sum``/``mean``/``min``/``max``/``std`` windows are long (6 hours or more) also keep
*tiles* (:mod:`loopml.features.tiles`): per-column aggregates of fixed runs of time, so a read of a
7-day window merges a few dozen tiles and the raw events at the window's two edges instead of
walking every event. Tiles change the cost of a read, not its answer.

Reads are pure functions of (state, t), so the in-process executor and a serving process reading
the same state from an online store return identical values. Aggregation runs over plain Python
floats: a 7-day window of one carrier is ~1,000 events, a few microseconds of work with tiles.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import struct
from array import array
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa

from loopml.errors import FeatureNotFound, SchemaError, closest
from loopml.events.replay import EventBatch
from loopml.features.definitions import Aggregate, Feature, Latest, RequestFeature
from loopml.features.freshness import FeatureLookup, available_at
from loopml.features.sketches import distinct_estimate, quantile_estimate, token
from loopml.features.tiles import TILED_AGGREGATIONS, Tiles, merged, tile_length
from loopml.timeutil import duration_us, from_us, to_us

__all__ = ["GroupState", "OnlineExecutor", "group_id", "value_at", "value_span"]

_NOT_KNOWN = -(1 << 63)  # an open tile's end below every available time: where it ends is not known yet
_EARLIEST, _LATEST = -(1 << 63), 1 << 63  # time bounds of a span that is open on that side

Key = tuple[Any, ...]


def _request_feature(f: RequestFeature, request: Mapping[str, Any]) -> Any:
    """``f.fn(request)``; a value the function cannot take (a time out of range, say) is the request's fault."""
    try:
        return f.fn(request)
    except (ArithmeticError, ValueError, TypeError) as exc:  # OverflowError is an ArithmeticError
        shown = {c: request.get(c) for c in f.inputs}
        raise SchemaError(f"Request feature {f.name!r} cannot be computed from {shown}: "
                          f"{type(exc).__name__}: {exc}") from None


def group_id(source: str, keys: Sequence[str]) -> str:
    return f"{source}/{'+'.join(keys)}"


def encode_key(key: Key) -> str:
    """The store's text for an entity key: its compact JSON array (``("UA", 1545)`` -> ``'["UA",1545]'``).

    Built by hand for plain ASCII text and integers (``json.dumps`` with custom separators builds an
    encoder per call: 6 us of a 30 us lookup); anything else goes through ``json.dumps``, so the text
    is always exactly what earlier versions stored.
    """
    parts = []
    for v in key:
        if type(v) is str and v.isascii() and v.isprintable() and '"' not in v and "\\" not in v:
            parts.append(f'"{v}"')
        elif type(v) is int:
            parts.append(str(v))
        else:
            return json.dumps(list(key), separators=(",", ":"))
    return f"[{','.join(parts)}]"


@dataclass
class GroupState:
    """State of one entity in one group. Serialises to bytes for an online store."""

    ts: array = field(default_factory=lambda: array("q"))           # available times (us), sorted
    values: dict[str, array] = field(default_factory=dict)           # column -> floats (nan = missing)
    valid: dict[str, array] = field(default_factory=dict)            # column -> running count of non-missing
    latest: dict[str, list[Any]] = field(default_factory=dict)       # column -> [avail, event_time, id, value]
    items: dict[str, list[str | None]] = field(default_factory=dict)  # column -> canonical text (None = missing)
    tile_us: int = 0                                                 # tile length (0: no tiles), see .tiles
    tiles: Tiles = field(default_factory=Tiles)                      # sealed tiles' per-column aggregates
    # where the open (newest) tile starts (event index) and ends (time); -1: not known yet, see _new_tile
    _open_start: int = field(default=-1, compare=False, repr=False)
    _open_end: int = field(default=_NOT_KNOWN, compare=False, repr=False)
    # A state read from a store for lookups is never changed (ingestion decodes its own copy), so the
    # values a lookup computed from it can be kept with the span of times they hold for: see
    # OnlineExecutor._group_values. None on every state that ingestion may change.
    _memo: list[Any] | None = field(default=None, compare=False, repr=False)

    def to_bytes(self) -> bytes:
        cols = sorted(self.values)
        head_d: dict[str, Any] = {"n": len(self.ts), "cols": cols, "latest": self.latest}
        if self.items:  # only groups with approx_distinct carry it: older state stays byte-identical
            head_d["items"] = self.items
        if self.tile_us:  # likewise only groups with tiles; readers that predate tiles ignore the tail
            head_d["tile_us"], head_d["tiles"] = self.tile_us, self.tiles.count
        head = json.dumps(head_d, separators=(",", ":")).encode()
        parts = [struct.pack("<I", len(head)), head, self.ts.tobytes()]
        parts += [self.values[c].tobytes() for c in cols]
        parts += [self.valid[c].tobytes() for c in cols]
        if self.tile_us:
            parts += self.tiles.to_parts(cols)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, blob: bytes) -> GroupState:
        (n_head,) = struct.unpack_from("<I", blob, 0)
        head = orjson.loads(memoryview(blob)[4:4 + n_head])  # same objects as json.loads, several times faster
        pos, n = 4 + n_head, head["n"]
        if n == 0 and not head["cols"]:  # a group of Latest values only: no window arrays to read
            return cls(latest=head["latest"], items=head.get("items", {}))
        ts = array("q")
        ts.frombytes(blob[pos:pos + 8 * n])
        pos += 8 * n
        values, valid = {}, {}
        for store, code in ((values, "d"), (valid, "q")):
            for c in head["cols"]:
                a = array(code)
                a.frombytes(blob[pos:pos + 8 * n])
                store[c] = a
                pos += 8 * n
        st = cls(ts=ts, values=values, valid=valid, latest=head["latest"], items=head.get("items", {}))
        if "tile_us" in head:
            st.tile_us = head["tile_us"]
            st.tiles = Tiles.from_blob(blob, pos, head["tiles"], head["cols"])
        return st

    def use_tiles(self, tile_us: int) -> None:
        """Keep tiles of ``tile_us`` (0: none), rebuilding them from the raw events if their length differs."""
        if tile_us == self.tile_us:
            return
        self.tile_us, self.tiles = tile_us, Tiles()
        self._open_start, self._open_end = -1, _NOT_KNOWN
        if not tile_us or not self.ts:
            return
        starts, prev = [], None  # where each tile's run of events starts
        for i, t in enumerate(self.ts):
            k = (t - 1) // tile_us
            if k != prev:
                starts.append(i)
                prev = k
        for a, b in itertools.pairwise(starts[1:]):  # every tile but the first and the last
            self.tiles.seal(a, b, self.values, self.valid)

    def trim(self, cut: int) -> None:
        """Forget the first ``cut`` events (older than every window still to be read)."""
        if not cut:
            return
        del self.ts[:cut]
        for a in self.values.values():
            del a[:cut]
        for tokens in self.items.values():
            del tokens[:cut]
        for c, a in self.valid.items():
            # keep valid[i] = number of non-missing values in [0, i] of what remains
            base = a[cut - 1]
            self.valid[c] = array("q", (v - base for v in a[cut:]))
        if self.tile_us:
            self.tiles.drop_before(cut)
            self._open_start, self._open_end = -1, _NOT_KNOWN

    def _new_tile(self, ts: int) -> None:
        """``ts`` lies past the open tile (or where that is is not known): seal the open tile, open ``ts``'s."""
        size, n = self.tile_us, len(self.ts)
        if self._open_start < 0 and n:  # after a load, a trim or a retile: find the open tile
            end = ((self.ts[-1] - 1) // size + 1) * size
            self._open_start, self._open_end = bisect.bisect_left(self.ts, end - size + 1), end
            if ts <= end:
                return
        if self._open_start > 0:  # the first tile (starting at event 0) is never sealed
            self.tiles.seal(self._open_start, n, self.values, self.valid)
        self._open_start, self._open_end = n, ((ts - 1) // size + 1) * size

    def append(self, ts: int, values: Iterable[tuple[str, Any]]) -> None:
        """Add one event (available time in us, (column, value) pairs) to the window arrays."""
        if self.tile_us and ts > self._open_end:
            self._new_tile(ts)
        self.ts.append(ts)
        for c, v in values:
            tokens = self.items.get(c)
            if tokens is not None:
                tokens.append(token(v))
                if c not in self.values:
                    continue
            ok = v is not None and v == v  # noqa: PLR0124 -- False only for NaN, of any numeric type
            self.values[c].append(float(v) if ok else math.nan)
            cnt = self.valid[c]
            cnt.append((cnt[-1] if cnt else 0) + ok)

    def empty_like(self, columns: Sequence[str], items: Sequence[str] = ()) -> None:
        """Make sure the window arrays exist: floats for ``columns``, canonical text for ``items``."""
        for c in columns:
            self.values.setdefault(c, array("d"))
            self.valid.setdefault(c, array("q"))
        for c in items:
            self.items.setdefault(c, [])


class _Group:
    """Static description of a (source, keys) group: which columns it keeps and for how long."""

    def __init__(self, source: str, keys: tuple[str, ...], feats: list[Feature]) -> None:
        self.source, self.keys = source, keys
        self.id = group_id(source, keys)
        self.aggs = [f for f in feats if isinstance(f, Aggregate)]
        self.latest = [f for f in feats if isinstance(f, Latest)]
        self.window_cols = sorted({f.column for f in self.aggs if f.column is not None and f.agg != "approx_distinct"})
        self.item_cols = sorted({f.column for f in self.aggs if f.column is not None and f.agg == "approx_distinct"})
        self.event_cols = sorted({*self.window_cols, *self.item_cols})
        self.latest_cols = sorted({f.column for f in self.latest})
        self.keep_us = max((duration_us(f.window) for f in self.aggs), default=0)
        # tiles change how values are computed, never what they are: not part of the layout below
        self.tile_us = tile_length(duration_us(f.window) for f in self.aggs if f.agg in TILED_AGGREGATIONS)
        # The stored state's identity includes what it holds (columns, retention): redefining a
        # feature so that the state must differ (a longer window, another column) writes a new
        # state beside the old one, which a server still running the old definitions keeps reading.
        layout = json.dumps([self.event_cols, self.item_cols, self.latest_cols, self.keep_us])
        self.id = f"{self.id}@{hashlib.sha256(layout.encode()).hexdigest()[:10]}"


class OnlineExecutor:
    """Keep feature state current from events and answer lookups at any time.

    Parameters
    ----------
    features
        The same definitions the offline executor uses.
    store
        Optional online store; :meth:`flush` writes changed state to it, and lookups of entities not
        in memory read it (so a serving process can read what an ingestion process wrote).
    """

    def __init__(self, features: Sequence[Feature], *, store: Any | None = None) -> None:
        self.features = list(features)
        self.store = store
        grouped: dict[tuple[str, tuple[str, ...]], list[Feature]] = defaultdict(list)
        for f in self.features:
            if not isinstance(f, RequestFeature):
                grouped[(f.source, f.keys)].append(f)
        self.groups = [_Group(s, k, fs) for (s, k), fs in grouped.items()]
        self._by_source: dict[str, list[_Group]] = defaultdict(list)
        for g in self.groups:
            self._by_source[g.source].append(g)
        self._state: dict[str, dict[Key, GroupState]] = {g.id: {} for g in self.groups}
        self._dirty: dict[str, set[Key]] = {g.id: set() for g in self.groups}
        self.watermark_us: int | None = None
        self._by_name = {f.name: f for f in self.features}
        ids = {(g.source, g.keys): g.id for g in self.groups}
        self._plan = [(f, None, ()) if isinstance(f, RequestFeature) else (f, ids[(f.source, f.keys)], f.keys)
                      for f in self.features]
        self._plan_of = {p[0].name: p for p in self._plan}
        self._plan_groups = _groups_of(self._plan)
        # per group, its features in plan order; the plan as (feature, group id, position in its group's
        # list, whether the value is a list a caller could change)
        self._group_feats: dict[str, list[Feature]] = defaultdict(list)
        self._plan_pos = []
        for f, gid, _ in self._plan:
            if gid is not None:
                self._group_feats[gid].append(f)
            pos = len(self._group_feats[gid]) - 1 if gid is not None else -1
            self._plan_pos.append((f, gid, pos, isinstance(f, Aggregate) and f.agg == "last_k"))
        self._absent = {gid: [value_at(f, None, 0) for f in fs] for gid, fs in self._group_feats.items()}
        # per group, its features with their window in microseconds (None: not a window aggregate)
        self._group_windows = {gid: [(f, duration_us(f.window) if isinstance(f, Aggregate) else None) for f in fs]
                               for gid, fs in self._group_feats.items()}
        self._decode_cache: dict[tuple[str, str], tuple[bytes, GroupState]] = {}
        # What the store held at one version: (version, states by (group id, key text), the same states by
        # (group id, key tuple) for keys of plain text and integers, so a lookup needs no key text: see get_many).
        # Replaced as a whole, never cleared in place: a thread still filling an older one fills an orphan, and
        # the states in a triple are always those of its version.
        self._fresh: _Fresh = (None, {}, {})
        self.decode_cache_size = 20_000  # entities whose decoded store state is kept for lookups

    @property
    def sources(self) -> list[str]:
        return sorted(self._by_source)

    # -- updates -----------------------------------------------------------------------------
    def columns(self) -> dict[str, list[str]]:
        """Per source, the columns the state needs (pass to :class:`~loopml.events.Replayer`)."""
        out: dict[str, list[str]] = {}
        for g in self.groups:
            out.setdefault(g.source, [])
            out[g.source] = sorted({*out[g.source], *g.keys, *g.event_cols, *g.latest_cols})
        return out

    def update(self, source: str, events: EventBatch | pa.Table) -> None:
        """Apply events of ``source`` (in available-time order, as the Replayer yields them)."""
        groups = self._by_source.get(source)
        if isinstance(events, pa.Table):
            events = EventBatch.from_table(events)
        if not groups or events.n == 0:
            return
        avail = events["available_time"]
        event_t = events["event_time"]
        ids = events["event_id"]
        for g in groups:
            # rows as tuples built by zip (C speed): the per-event loop below is the ingestion hot path
            keys = list(zip(*[events[k] for k in g.keys]))
            names = g.event_cols
            rows = list(zip(*[events[c] for c in names])) if names else None
            lcols = {c: events[c] for c in g.latest_cols}
            states, dirty = self._state[g.id], self._dirty[g.id]
            for i, key in enumerate(keys):
                if None in key:
                    continue
                st = states.get(key)
                if st is None:
                    st = self._load(g, key) or GroupState()
                    st.empty_like(g.window_cols, g.item_cols)
                    st.use_tiles(g.tile_us)
                    states[key] = st
                if g.aggs:
                    st.append(avail[i], zip(names, rows[i]) if rows is not None else ())
                for c, vals in lcols.items():
                    v = vals[i]
                    if v is not None:
                        st.latest[c] = [avail[i], event_t[i], ids[i], v]
                dirty.add(key)
        last = avail[-1]
        if self.watermark_us is None or last > self.watermark_us:
            self.watermark_us = last

    def _load(self, g: _Group, key: Key) -> GroupState | None:
        if self.store is None:
            return None
        blob = self.store.get(g.id, encode_key(key))
        return None if blob is None else GroupState.from_bytes(blob)

    def _trim(self, g: _Group, st: GroupState, now_us: int) -> None:
        if not g.aggs or not st.ts:
            return
        st.trim(bisect.bisect_right(st.ts, now_us - g.keep_us))

    def flush(self) -> int:
        """Write changed state to the store (trimming old events first); return entities written."""
        written = 0
        now = self.watermark_us
        for g in self.groups:
            dirty = self._dirty[g.id]
            if not dirty:
                continue
            items = []
            for key in dirty:
                st = self._state[g.id][key]
                if now is not None:
                    self._trim(g, st, now)
                items.append((encode_key(key), st.to_bytes()))
            if self.store is not None:
                self.store.put_many(g.id, items)
            written += len(items)
            dirty.clear()
        if self.store is not None and now is not None:
            self.store.set_watermark(now)
        return written

    def compact(self) -> None:
        """Trim every in-memory state to its group's widest window (bounded memory in long replays)."""
        if self.watermark_us is None:
            return
        for g in self.groups:
            for st in self._state[g.id].values():
                self._trim(g, st, self.watermark_us)

    # -- reads -------------------------------------------------------------------------------
    def get(self, request: Mapping[str, Any], t: datetime, *, features: Sequence[str] | None = None) -> dict[str, Any]:
        """Feature values for one request at time ``t`` (UTC), as the offline executor would compute them."""
        t_us = to_us(t)
        plan = self._plan if features is None else [self._plan_of[self._feature(n).name] for n in features]
        states = self._states(request, self._plan_groups if features is None else _groups_of(plan))
        out: dict[str, Any] = {}
        for f, gid, _ in plan:
            if gid is None:
                out[f.name] = _request_feature(f, request)
            else:
                out[f.name] = value_at(f, states.get(gid), t_us)
        return out

    def get_with_freshness(self, request: Mapping[str, Any], t: datetime, *,
                           features: Sequence[str] | None = None) -> FeatureLookup:
        """:meth:`get`'s values plus, per stored feature, the available time of the newest event behind it.

        See :func:`~loopml.features.freshness.available_at` for what "behind" means per kind of
        feature; request features have no stored events and are not in ``available_at``.

        Examples
        --------
        >>> found = online.get_with_freshness(request, t)            # doctest: +SKIP
        >>> found.values["origin_dep_delay_3h"], found.ages()["origin_dep_delay_3h"]  # doctest: +SKIP
        (12.5, datetime.timedelta(seconds=840))
        """
        t_us = to_us(t)
        plan = self._plan if features is None else [self._plan_of[self._feature(n).name] for n in features]
        states = self._states(request, self._plan_groups if features is None else _groups_of(plan))
        values: dict[str, Any] = {}
        avail: dict[str, datetime | None] = {}
        for f, gid, _ in plan:
            if gid is None:
                values[f.name] = _request_feature(f, request)
            else:
                st = states.get(gid)
                values[f.name] = value_at(f, st, t_us)
                us = available_at(f, st, t_us)
                avail[f.name] = None if us is None else from_us(us)
        return FeatureLookup(values=values, available_at=avail, at=t)

    def _states(self, request: Mapping[str, Any], groups: list[tuple[str, tuple[str, ...]]],
                ) -> dict[str, GroupState | None]:
        """Each group's state of the request's entity: in memory, else read from the store."""
        states: dict[str, GroupState | None] = {}
        fetch = []
        for gid, keys in groups:
            key = tuple([request.get(k) for k in keys])  # a list first: faster than a generator
            if None in key:
                states[gid] = None
            elif (st := self._state[gid].get(key)) is not None:
                states[gid] = st
            else:
                fetch.append((gid, key))
        if fetch and self.store is not None:
            pairs = [(gid, encode_key(key)) for gid, key in fetch]
            for (gid, _), st in zip(pairs, self._read(pairs), strict=True):
                states[gid] = st
        return states

    def _read(self, pairs: list[tuple[str, str]], keys: Sequence[Key | None] | None = None,
              *, checked: Any = None) -> list[GroupState | None]:
        """The states of ``pairs`` (group id, key text) in the store, in order (None: no state).

        A store that can say "nothing changed since" (SQLite's ``data_version``) is not read again
        until something commits: what was read at a version is kept in ``_fresh`` (while
        ``decode_cache_size`` > 0) and served while the version stays the same. ``keys``: each pair's
        key tuple where it is plain (:func:`_plain_key`; else None), kept by tuple too.
        ``checked``: the store's version as the caller just read it (None: ask; saves asking twice).
        """
        store = self.store
        cached_version, fresh, fresh_keys = self._fresh  # one snapshot: its states are those of its version
        versioned = hasattr(store, "get_many_versioned")
        cache = versioned and self.decode_cache_size > 0
        if cache and all(p in fresh for p in pairs) and (
                store.version() if checked is None else checked) == cached_version:
            found = [fresh[p] for p in pairs]
            for pair, key, st in zip(pairs, keys or (), found):  # read by text before (get): by tuple from now
                if key is not None:
                    fresh_keys[(pair[0], key)] = st
            return found
        if cache:
            version, blobs = store.get_many_versioned(pairs)  # the blobs and the version they were read at
        else:  # nothing is kept, so the version would not be used
            version, blobs = None, store.get_many(pairs)
        if cache and (version != cached_version or len(fresh) + len(pairs) > self.decode_cache_size):
            fresh, fresh_keys = {}, {}
            self._fresh = (version, fresh, fresh_keys)
        out = []
        for i, (pair, blob) in enumerate(zip(pairs, blobs, strict=True)):
            st = None if blob is None else self._decoded(pair, blob)
            if cache:
                fresh[pair] = st
                if keys is not None and keys[i] is not None:
                    fresh_keys[(pair[0], keys[i])] = st
            out.append(st)
        return out

    def _decoded(self, pair: tuple[str, str], blob: bytes) -> GroupState:
        """The state stored as ``blob``, decoded once per distinct blob (lookups only read it, never change it)."""
        if self.decode_cache_size <= 0:
            return GroupState.from_bytes(blob)  # used once: nothing worth keeping with it
        hit = self._decode_cache.get(pair)
        if hit is not None and hit[0] == blob:  # unchanged since the last read: a memcmp, not a parse
            return hit[1]
        st = GroupState.from_bytes(blob)
        st._memo = _NO_MEMO  # read-only from here on: lookups may keep the values they computed from it
        cache = self._decode_cache
        if len(cache) >= self.decode_cache_size and pair not in cache:
            del cache[next(iter(cache))]  # oldest entry first: bounded memory
        cache[pair] = (blob, st)
        return st

    def get_many(self, requests: Iterable[Mapping[str, Any]], t: datetime | Sequence[datetime],
                 ) -> list[dict[str, Any]]:
        """:meth:`get` for many requests, at one time ``t`` or at one time per request.

        The values are those :meth:`get` gives for each request; the store is asked once for every
        entity not in memory -- one statement, and for SQLite one "has anything changed" check, for
        the whole batch instead of one per request.
        """
        requests = list(requests)
        times = [t] * len(requests) if isinstance(t, datetime) else list(t)
        if len(times) != len(requests):
            raise ValueError(f"get_many needs one time per request; got {len(times)} times for {len(requests)} requests")
        all_states: list[dict[str, GroupState | None]] = []
        fetch: dict[tuple[str, str], list[int]] = {}  # (group id, key text) -> the requests that need it
        plain: dict[tuple[str, str], Key | None] = {}   # (group id, key text) -> its key tuple, if plain
        # What the store held at the version it still has is found by key tuple, without building key text
        # (7 groups x ~0.7 us a request): one version check for the batch, then dictionary lookups.
        store = self.store
        cached_version, _, cached_keys = self._fresh
        version = (store.version() if store is not None and cached_keys and hasattr(store, "get_many_versioned")
                   else _UNREAD)
        known = cached_keys if version is not _UNREAD and version == cached_version else _NO_KEYS
        for i, request in enumerate(requests):
            states: dict[str, GroupState | None] = {}
            for gid, keys in self._plan_groups:
                key = tuple([request.get(k) for k in keys])
                if None in key:
                    states[gid] = None
                elif (st := self._state[gid].get(key)) is not None:
                    states[gid] = st
                elif (st := known.get((gid, key), _UNREAD)) is not _UNREAD and _plain_key(key):
                    states[gid] = st
                elif store is not None:
                    pair = (gid, encode_key(key))
                    fetch.setdefault(pair, []).append(i)
                    plain[pair] = key if _plain_key(key) else None
            all_states.append(states)
        if fetch:
            pairs = list(fetch)
            checked = None if version is _UNREAD else version
            for pair, st in zip(pairs, self._read(pairs, [plain[p] for p in pairs], checked=checked), strict=True):
                for i in fetch[pair]:
                    all_states[i][pair[0]] = st
        out = []
        absent, group_values, feats = self._absent, self._group_values, self._group_feats
        for request, when, states in zip(requests, times, all_states, strict=True):
            t_us = to_us(when)
            values = {}
            for gid, _ in self._plan_groups:
                st = states.get(gid)
                if st is None:
                    values[gid] = absent[gid]
                elif st._memo is not None:  # read from the store: its values may be kept
                    values[gid] = group_values(gid, st, t_us)
                else:
                    values[gid] = [value_at(f, st, t_us) for f in feats[gid]]
            out.append({f.name: _request_feature(f, request) if gid is None
                        else (values[gid][pos].copy() if is_list and values[gid][pos] is not None else values[gid][pos])
                        for f, gid, pos, is_list in self._plan_pos})
        return out

    def _group_values(self, gid: str, st: GroupState, t_us: int) -> list[Any]:
        """The values of group ``gid``'s features from read-only state ``st`` at ``t_us``, in plan order.

        Each feature's value is the same at every time of its :func:`value_span`; the group's values are
        kept on the state with the intersection of those spans, so a later lookup of the same state at a
        time inside it (most lookups of a busy entity near "now") reuses them: exact, not approximate.
        """
        memo = st._memo
        if memo and memo[0] <= t_us < memo[1]:
            return memo[2]
        lo, hi, values = _EARLIEST, _LATEST, []
        bounds: dict[int, tuple[int, int]] = {}  # window (us) -> its events' positions: once per window, not per feature
        for f, window in self._group_windows[gid]:
            if window is None:
                where = None
            elif (where := bounds.get(window)) is None:
                where = bounds[window] = window_bounds(st, t_us, window)
            values.append(value_at(f, st, t_us, where))
            a, b = value_span(f, st, t_us, where)
            if a > lo:
                lo = a
            if b < hi:
                hi = b
        st._memo = [lo, hi, values]
        return values

    def _feature(self, name: str) -> Feature:
        try:
            return self._by_name[name]
        except KeyError:
            raise FeatureNotFound(f"Feature {name!r} is not defined. Closest matches: {closest(name, self._by_name)}") from None


_UNREAD: Any = object()
_Fresh = tuple[Any, dict[tuple[str, str], "GroupState | None"], dict[tuple[str, Key], "GroupState | None"]]
_NO_KEYS: dict[Any, Any] = {}  # no state is known by key tuple (the store's version moved): never filled


def _plain_key(key: Key) -> bool:
    """Whether every part of ``key`` is exactly a ``str`` or an ``int``: for such tuples equality is equality of
    their :func:`encode_key` text, so a state found by tuple is the one the store keeps under that text
    (``1.0 == 1 == True``, yet their texts differ)."""
    for v in key:
        t = type(v)
        if t is not str and t is not int:
            return False
    return True
_NO_MEMO: list[Any] = []  # a read-only state's memo before its first lookup (empty: never matches)


def _groups_of(plan: list[tuple[Feature, str | None, tuple[str, ...]]]) -> list[tuple[str, tuple[str, ...]]]:
    """The distinct (group id, key columns) a plan reads, in order."""
    return list(dict.fromkeys((gid, keys) for _, gid, keys in plan if gid is not None))


def window_bounds(st: GroupState, t_us: int, window_us: int) -> tuple[int, int]:
    """``(lo, hi)``: the positions in ``st.ts`` of the events in the window ``(t - window, t]`` (``ts[lo:hi]``)."""
    ts = st.ts
    hi = bisect.bisect_right(ts, t_us)
    return bisect.bisect_right(ts, t_us - window_us, 0, hi), hi


def value_at(f: Feature, st: GroupState | None, t_us: int, bounds: tuple[int, int] | None = None) -> Any:
    """The value of stored feature ``f`` at ``t_us`` from one entity's state (None: no state); shared by both executors.

    ``bounds``: ``window_bounds(st, t_us, window)`` of an aggregate ``f`` if the caller has it (features of one
    group with the same window share it).
    """
    if isinstance(f, Latest):
        if st is None:
            return None
        entry = st.latest.get(f.column)
        if entry is None or entry[0] > t_us:
            return None
        if f.max_age is not None and entry[1] < t_us - duration_us(f.max_age):
            return None
        return float(entry[3]) if f.dtype == "float" else str(entry[3])
    if isinstance(f, Aggregate):
        if st is None:
            return 0.0 if f.agg in ("count", "approx_distinct") else None
        lo, hi = bounds or window_bounds(st, t_us, duration_us(f.window))
        if f.column is None:
            return float(hi - lo)
        if f.agg == "approx_distinct":
            tokens = [x for x in st.items[f.column][lo:hi] if x is not None]
            return distinct_estimate(tokens, f.lg_k) if tokens else 0.0  # type: ignore[arg-type]
        valid = st.valid[f.column]
        n = (valid[hi - 1] if hi else 0) - (valid[lo - 1] if lo else 0)
        if f.agg == "count":
            return float(n)
        if n == 0:
            return None
        if st.tiles.start and f.agg in TILED_AGGREGATIONS and (span := st.tiles.window(lo, hi)) is not None:
            j0, j1 = span
            col, cnt = st.values[f.column], st.valid[f.column]
            edge: list[float] = []
            for a, b in st.tiles.raw_ranges(lo, hi, j0, j1):
                if a < b:
                    if cnt[b - 1] - (cnt[a - 1] if a else 0) == b - a:  # no missing value: copy at C speed
                        edge += col[a:b]
                    else:
                        edge += [v for v in col[a:b] if v == v]  # noqa: PLR0124 -- drops NaN
            return merged(st.tiles, j0, j1, f.column, edge, n, f.agg)
        raw = st.values[f.column][lo:hi]
        # the running count of valid values says whether the slice holds a missing one to skip
        vals = raw if n == hi - lo else [v for v in raw if v == v]  # noqa: PLR0124 -- drops NaN
        if f.agg == "sum":
            return math.fsum(vals)
        if f.agg == "mean":
            return math.fsum(vals) / n
        if f.agg == "min":
            return min(vals)
        if f.agg == "max":
            return max(vals)
        if f.agg == "last":
            return vals[-1]
        if f.agg == "last_k":
            return list(vals[-1:-f.k - 1:-1])  # type: ignore[operator]
        if f.agg == "approx_quantile":
            return quantile_estimate(vals, f.quantile, f.kll_k)  # type: ignore[arg-type]
        if n < 2:
            return None
        mean = math.fsum(vals) / n
        return math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
    raise TypeError(f"not a stored feature: {f!r}")


def value_span(f: Feature, st: GroupState | None, t_us: int, bounds: tuple[int, int] | None = None) -> tuple[int, int]:
    """The times ``[lo, hi)`` around ``t_us`` at which ``value_at(f, st, .)`` gives what it gives at ``t_us``.

    ``value_at`` reads a window aggregate from the events in ``(t - window, t]`` only -- which events,
    not where ``t`` falls between them -- so its value holds until an event enters or leaves the window;
    a latest value holds until it becomes available, or too old (``max_age``). Open sides are
    ``-2**63`` and ``2**63``. ``bounds``: as for :func:`value_at`.
    """
    if st is None:
        return _EARLIEST, _LATEST
    if isinstance(f, Latest):
        entry = st.latest.get(f.column)
        if entry is None:
            return _EARLIEST, _LATEST
        avail = entry[0]
        if t_us < avail:
            return _EARLIEST, avail
        if f.max_age is None:
            return avail, _LATEST
        edge = entry[1] + duration_us(f.max_age)  # the value is served while t <= edge
        return (avail, edge + 1) if t_us <= edge else (max(avail, edge + 1), _LATEST)
    if isinstance(f, Aggregate):
        ts, window = st.ts, duration_us(f.window)
        lo, hi = bounds or window_bounds(st, t_us, window)
        start = max(ts[hi - 1] if hi else _EARLIEST, ts[lo - 1] + window if lo else _EARLIEST)
        end = min(ts[hi] if hi < len(ts) else _LATEST, ts[lo] + window if lo < len(ts) else _LATEST)
        return start, end
    raise TypeError(f"not a stored feature: {f!r}")
