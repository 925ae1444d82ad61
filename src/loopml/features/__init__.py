"""Features: declared once, computed by two executors that agree.

A feature is a frozen definition (:class:`Aggregate`, :class:`Latest`, :class:`RequestFeature`).
:class:`OfflineExecutor` compiles definitions to DuckDB SQL to build point-in-time training sets
over history; :class:`OnlineExecutor` keeps incremental per-entity state from the event stream and
answers a lookup in microseconds, persisting state to an online store (:class:`SQLiteOnlineStore`,
:class:`RedisOnlineStore`); :meth:`OnlineExecutor.get_with_freshness` also says when the newest event
behind each value became available (:class:`FeatureLookup`), so staleness can be reported.
For any entity and time both return the same value -- tests replay a year and compare them.
"""

from loopml.features.definitions import (
    AGGREGATIONS,
    Aggregate,
    Feature,
    Label,
    Latest,
    RequestFeature,
    Spine,
    definition_hash,
)
from loopml.features.freshness import FeatureLookup
from loopml.features.offline import OfflineExecutor
from loopml.features.online import OnlineExecutor
from loopml.features.store import OnlineStore, RedisOnlineStore, SQLiteOnlineStore, open_store

__all__ = [
    "AGGREGATIONS",
    "Aggregate",
    "Feature",
    "FeatureLookup",
    "Label",
    "Latest",
    "OfflineExecutor",
    "OnlineExecutor",
    "OnlineStore",
    "RedisOnlineStore",
    "RequestFeature",
    "SQLiteOnlineStore",
    "Spine",
    "definition_hash",
    "open_store",
]
