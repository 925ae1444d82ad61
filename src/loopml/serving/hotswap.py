"""Hot swap: replace the served model under load, and never with one that cannot serve.

:class:`ModelSwapper` loads a registry version (sha256-verified by the registry), smoke-tests it and
only then swaps it into the :class:`~loopml.serving.Predictor` (one reference assignment: a request
in flight finishes on the model it started with). Any failure raises
:class:`~loopml.errors.ModelRejected` and the serving version stays. :class:`ChampionWatcher`
follows the registry's ``champion`` alias, so ``loopml models promote`` and ``rollback`` reach a
running server within one poll interval.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

from loopml.errors import LoopmlError, ModelNotFound, ModelRejected
from loopml.serving.predictor import Predictor
from loopml.training.model import GBMModel

__all__ = ["ChampionWatcher", "ModelSwapper", "smoke_test"]

log = logging.getLogger("loopml.serving.hotswap")

ModelLoader = Callable[[str], tuple[int, GBMModel]]


def smoke_test(model: GBMModel, features: set[str]) -> None:
    """Refuse a model that needs features the server does not compute, or cannot score an all-missing row."""
    unknown = sorted(set(model.features) - features)
    if unknown:
        raise ModelRejected(f"model failed its smoke test and was not loaded: it needs features {unknown} "
                            f"that this server does not compute")
    try:
        score = float(model.predict_rows([{}])[0])
    except Exception as exc:  # any failure to score means: do not swap it in
        raise ModelRejected(f"model failed its smoke test and was not loaded: {type(exc).__name__}: {exc}") from None
    if not (math.isfinite(score) and 0.0 <= score <= 1.0):
        raise ModelRejected(f"model failed its smoke test and was not loaded: score {score} is not a probability")


class ModelSwapper:
    """Load, smoke-test and swap in a version; one swap at a time."""

    def __init__(self, predictor: Predictor, load_model: ModelLoader) -> None:
        self.predictor = predictor
        self.load_model = load_model
        self._lock = threading.Lock()

    def swap_to(self, ref: str) -> tuple[int, int]:
        """Serve version ``ref`` (a number or alias); returns ``(previous, new)`` version numbers."""
        with self._lock:
            try:
                version, model = self.load_model(ref)
            except ModelNotFound:
                raise
            except Exception as exc:  # a corrupt or unreadable artifact: keep serving the current one
                detail = str(exc) if isinstance(exc, LoopmlError) else f"{type(exc).__name__}: {exc}"
                log.warning("refused to load a version", extra={"ref": ref, "reason": detail})
                raise ModelRejected(f"version {ref!r} failed to load and was not served: {detail}") from None
            try:
                smoke_test(model, {f.name for f in self.predictor.online.features})
            except ModelRejected as exc:
                log.warning("refused to load a version", extra={"ref": ref, "reason": str(exc)})
                raise ModelRejected(f"version {version}: {exc}") from None
            old = self.predictor.version
            self.predictor.swap(model, version)
        log.info("model swapped", extra={"model_version": version, "previous_version": old, "ref": ref})
        return old, version


class ChampionWatcher:
    """Poll ``resolve()`` (the champion's version number) and swap when it changes.

    A champion that fails to load is logged and retried only after the alias moves again.
    """

    def __init__(self, swapper: ModelSwapper, resolve: Callable[[], int], *, interval: float = 2.0) -> None:
        self.swapper = swapper
        self.resolve = resolve
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: int | None = None

    def check(self) -> int | None:
        """One poll: the version swapped in, or None."""
        try:
            v = self.resolve()
        except LoopmlError as exc:
            log.warning("could not read the champion alias", extra={"reason": str(exc)})
            return None
        if v == self._seen or v == self.swapper.predictor.version:
            self._seen = v
            return None
        self._seen = v
        try:
            self.swapper.swap_to(str(v))
        except LoopmlError:
            return None  # logged by the swapper; the serving version stays
        return v

    def start(self) -> None:
        self._seen = self.swapper.predictor.version
        self._thread = threading.Thread(target=self._run, name="loopml-champion-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
