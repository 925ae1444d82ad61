"""Tiles: pre-aggregated runs of a window's events, so that a long window costs O(tiles), not O(events).

Chronon's idea, without its approximation. The timeline is cut into tiles of ``tile_us``
microseconds, tile ``k`` holding the available times ``(k L, (k+1) L]``. An entity's online state
keeps its window's raw events -- it must: a window ``(t - w, t]`` starts anywhere inside a tile, so
the events of the two edge tiles are what makes the answer exact -- and, per *sealed* tile and per
column, five numbers: how many values, their sum (``math.fsum``), min, max and M2 (the sum of
squared deviations from the tile's mean). A read of ``sum``/``mean``/``min``/``max``/``std`` merges
the sealed tiles lying wholly inside the window with the raw values at its two edges: a 7-day mean
over 6,000 events becomes about 55 tile sums plus a few hundred edge values.

Which tiles are sealed is a function of the kept raw events alone -- every tile holding at least
``MIN_TILE_EVENTS`` events, strictly after the tile of the first kept event and strictly before the
tile of the last one -- so a replayed state and a materialised one hold the same bytes, and trimming
old events unseals just the tile that the cut now starts in. Sparse tiles stay raw: a route with a
flight every few hours costs nothing to ingest or store for tiles it would not be read through.

Agreement with the raw computation: count, min and max are exact; sum and mean are the correctly
rounded sum (``fsum``) of the tiles' rounded sums and the edge values -- identical whenever the
values' partial sums are exact (integer-valued columns, counts of 0/1 flags: every flights feature),
otherwise within the rounding of the tile sums (relative error ~1e-15; more where tiles cancel);
std merges the tiles' (n, mean, M2) as Chan, Golub and LeVeque's pairwise update does, with the
cross term that the rounding of each tile's mean leaves, so a large mean with a small spread keeps
its precision. A tile whose values overflow a float sum is not sealed (its reads fail as raw ones do).
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["TILED_AGGREGATIONS", "Tiles", "tile_length"]

TILED_AGGREGATIONS = frozenset({"sum", "mean", "min", "max", "std"})

_S = 1_000_000
# round tile lengths, so tile boundaries fall on whole minutes/hours/days of the epoch
_LENGTHS = [60 * _S, 5 * 60 * _S, 15 * 60 * _S, 3600 * _S, 3 * 3600 * _S, 6 * 3600 * _S, 12 * 3600 * _S, 86400 * _S]
TILES_PER_WINDOW = 48            # a window of the widest tiled aggregate spans about this many tiles
MIN_TILED_WINDOW_US = 6 * 3600 * _S  # shorter windows hold too few events for tiles to pay
MIN_TILE_EVENTS = 8              # sparser tiles are not sealed: reading their few events raw is as fast
MIN_WINDOW_EVENTS = 128          # tiles are read only for windows of at least this many events
_NUMPY_FROM = 48                 # tiles of this many values or more are sealed with numpy


def tile_length(windows_us: Iterable[int]) -> int:
    """The tile length (us) for a group whose tiled aggregates have these windows; 0 for no tiles."""
    widest = max(windows_us, default=0)
    if widest < MIN_TILED_WINDOW_US:
        return 0
    target = widest // TILES_PER_WINDOW
    return max([u for u in _LENGTHS if u <= target], default=_LENGTHS[0])


@dataclass
class Tiles:
    """The sealed tiles of one entity: tile ``j`` holds events ``start[j]:end[j]``, in event order."""

    start: array = field(default_factory=lambda: array("q"))
    end: array = field(default_factory=lambda: array("q"))
    n: dict[str, array] = field(default_factory=dict)      # values present (missing ones are skipped)
    sum: dict[str, array] = field(default_factory=dict)
    min: dict[str, array] = field(default_factory=dict)
    max: dict[str, array] = field(default_factory=dict)
    m2: dict[str, array] = field(default_factory=dict)     # sum of (v - m)^2, m = sum / n as rounded
    r: dict[str, array] = field(default_factory=dict)      # sum of (v - m): what rounding m left over

    @property
    def count(self) -> int:
        return len(self.start)

    def stats(self) -> tuple[dict[str, array], ...]:
        return self.n, self.sum, self.min, self.max, self.m2, self.r

    def seal(self, a: int, b: int, values: dict[str, array], valid: dict[str, array]) -> None:
        """Seal the tile of events ``a:b`` (after every tile sealed so far) if it holds enough events.

        A tile whose values cannot be summed (an overflow) stays raw: a read of its window then fails
        exactly as the raw read does, and ingestion goes on.
        """
        if b - a < MIN_TILE_EVENTS:
            return
        try:
            stats = [(c, _tile_stats(vals, valid[c], a, b)) for c, vals in values.items()]
        except (ValueError, OverflowError):  # fsum of +inf and -inf, or past the largest float
            return
        self.start.append(a)
        self.end.append(b)
        for c, row in stats:
            for store, v in zip(self.stats(), row, strict=True):
                store.setdefault(c, array("q" if store is self.n else "d")).append(v)

    def drop_before(self, cut: int) -> None:
        """Events ``:cut`` were trimmed: forget tiles that started before ``cut`` or at it (now the first tile)."""
        j = bisect.bisect_right(self.start, cut)
        if j >= len(self.start):
            self.clear()
            return
        self.start = array("q", (x - cut for x in self.start[j:]))
        self.end = array("q", (x - cut for x in self.end[j:]))
        if j:
            for store in self.stats():
                for a in store.values():
                    del a[:j]

    def clear(self) -> None:
        self.start, self.end = array("q"), array("q")
        for store in self.stats():
            store.clear()

    def window(self, lo: int, hi: int) -> tuple[int, int] | None:
        """Sealed tiles ``j0:j1`` lying wholly inside events ``lo:hi``, if at least two do and they pay (else read raw)."""
        if len(self.start) < 2 or hi - lo < MIN_WINDOW_EVENTS:
            return None
        j0 = bisect.bisect_left(self.start, lo)
        j1 = bisect.bisect_right(self.end, hi)
        return (j0, j1) if j1 - j0 >= 2 else None

    def raw_ranges(self, lo: int, hi: int, j0: int, j1: int) -> list[tuple[int, int]]:
        """The event ranges of ``lo:hi`` outside tiles ``j0:j1``: the two edges and the unsealed gaps."""
        start, end = self.start, self.end
        return [(lo, start[j0]), *zip(end[j0:j1 - 1], start[j0 + 1:j1], strict=True), (end[j1 - 1], hi)]

    def to_parts(self, cols: list[str]) -> list[bytes]:
        if not self.start:
            return []
        return [self.start.tobytes(), self.end.tobytes()] + [store[c].tobytes() for c in cols for store in self.stats()]

    @classmethod
    def from_blob(cls, blob: bytes | memoryview, pos: int, m: int, cols: list[str]) -> Tiles:
        tiles = cls()
        if not m:
            return tiles
        for a in (tiles.start, tiles.end):
            a.frombytes(blob[pos:pos + 8 * m])
            pos += 8 * m
        for c in cols:
            for store in tiles.stats():
                a = array("q" if store is tiles.n else "d")
                a.frombytes(blob[pos:pos + 8 * m])
                store[c] = a
                pos += 8 * m
        return tiles


def _tile_stats(vals: array, cnt: array, a: int, b: int) -> tuple[int, float, float, float, float, float]:
    """(n, sum, min, max, M2, r) of the non-missing values of ``vals[a:b]`` (``cnt``: running count of them)."""
    n = cnt[b - 1] - (cnt[a - 1] if a else 0)
    if not n:
        return 0, 0.0, math.inf, -math.inf, 0.0, 0.0
    seg = vals[a:b]
    if n != b - a:
        seg = array("d", [v for v in seg if v == v])  # noqa: PLR0124 -- drops NaN (missing)
    s = math.fsum(seg)
    m = s / n
    if n >= _NUMPY_FROM:  # deviations at C speed; sums by fsum, so the bytes do not depend on BLAS or SIMD
        x = np.frombuffer(seg)
        d = x - m
        lo, hi, m2, r = float(x.min()), float(x.max()), math.fsum((d * d).tolist()), math.fsum(d.tolist())
    else:
        d = [v - m for v in seg]
        lo, hi, m2, r = min(seg), max(seg), math.fsum([e * e for e in d]), math.fsum(d)
    if not (math.isfinite(m2) and math.isfinite(r)):  # the raw read's (v - mean) ** 2 overflows too
        raise OverflowError("tile deviations overflow a float")
    return n, s, lo, hi, m2, r


def merged(tiles: Tiles, j0: int, j1: int, column: str, edge: list[float], n: int, agg: str) -> float | None:
    """``agg`` of tiles ``j0:j1`` of ``column`` and the (non-missing) ``edge`` values; ``n`` values in all (> 0)."""
    if agg == "min":
        return min(min(tiles.min[column][j0:j1]), min(edge, default=math.inf))
    if agg == "max":
        return max(max(tiles.max[column][j0:j1]), max(edge, default=-math.inf))
    sums = tiles.sum[column][j0:j1]
    total = math.fsum([*sums, *edge])
    if agg == "sum":
        return total
    mean = total / n
    if agg == "mean":
        return mean
    if n < 2:
        return None
    # Chan et al.: the M2 of a union is the parts' M2 about their own means m plus, per part,
    # k (m - mean)^2 + 2 (m - mean) r, where r = sum(v - m) is what rounding m left over (0 exactly)
    counts, m2, rest = tiles.n[column][j0:j1], tiles.m2[column][j0:j1], tiles.r[column][j0:j1]
    parts = []
    for k, s, q, r in zip(counts, sums, m2, rest, strict=True):
        if k:
            dm = s / k - mean
            parts += (q, k * dm * dm, 2.0 * dm * r)
    parts += [(v - mean) ** 2 for v in edge]
    return math.sqrt(max(math.fsum(parts), 0.0) / (n - 1))
