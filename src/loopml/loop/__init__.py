"""Continual learning: the controller that serves, waits for labels, retrains and promotes on a clock.

:class:`LoopController` runs on replayed history (``loopml demo``/``loopml replay``) with the same
code a live clock would drive. :class:`RetrainPolicy` says when and on what to retrain and how a
challenger earns promotion.
"""

from loopml.loop.controller import LoopController, LoopResult, RetrainPolicy, month_starts
from loopml.loop.jobs import Evaluation, evaluate_model, fit_window, train_and_register

__all__ = ["Evaluation", "LoopController", "LoopResult", "RetrainPolicy", "evaluate_model", "fit_window",
           "month_starts", "train_and_register"]
