"""Continual learning: the controller that serves, waits for labels, retrains and promotes on a clock.

:class:`LoopController` runs on replayed history (``loopml demo``/``loopml replay``, a
:class:`ReplayClock`) and live (``loopml run``, a :class:`WallClock`, optionally sped up) with the
same code: it processes what has become available by the clock's now and sleeps until its next
due action. :class:`LiveSource` appends upstream events to the event log as they become available.
:class:`RetrainPolicy` says when and on what to retrain and how a challenger earns promotion.
Names are imported on first use, so a project file declaring a policy does not load the loop.
"""

from __future__ import annotations

from loopml._lazy import lazy_names

_WHERE = {
    "Clock": "loopml.loop.clock",
    "Evaluation": "loopml.loop.jobs",
    "LiveSource": "loopml.loop.live",
    "LoopController": "loopml.loop.controller",
    "LoopResult": "loopml.loop.controller",
    "ReplayClock": "loopml.loop.clock",
    "RetrainPolicy": "loopml.loop.policy",
    "WallClock": "loopml.loop.clock",
    "evaluate_model": "loopml.loop.jobs",
    "fit_window": "loopml.loop.jobs",
    "month_starts": "loopml.loop.controller",
    "train_and_register": "loopml.loop.jobs",
}

__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
