"""Continual learning: the controller that serves, waits for labels, retrains and promotes on a clock.

:class:`LoopController` runs on replayed history (``loopml demo``/``loopml replay``, a
:class:`ReplayClock`) and live (``loopml run``, a :class:`WallClock`, optionally sped up) with the
same code: it processes what has become available by the clock's now and sleeps until its next
due action. :class:`LiveSource` appends upstream events to the event log as they become available.
:class:`RetrainPolicy` says when and on what to retrain and how a challenger earns promotion.
"""

from loopml.loop.clock import Clock, ReplayClock, WallClock
from loopml.loop.controller import LoopController, LoopResult, RetrainPolicy, month_starts
from loopml.loop.jobs import Evaluation, evaluate_model, fit_window, train_and_register
from loopml.loop.live import LiveSource

__all__ = ["Clock", "Evaluation", "LiveSource", "LoopController", "LoopResult", "ReplayClock", "RetrainPolicy",
           "WallClock", "evaluate_model", "fit_window", "month_starts", "train_and_register"]
