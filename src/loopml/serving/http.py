"""HTTP adapter over the in-process Predictor.

Endpoints: ``POST /predict`` (plain JSON, one request), the Open Inference Protocol v2 (KServe)
health, metadata and ``infer`` with JSON tensors or the binary tensor extension
(:mod:`loopml.serving.oip`), ``GET /metrics`` (Prometheus) and ``POST /admin/models/{name}/load``
(bearer token) to hot-swap the served version (:mod:`loopml.serving.hotswap`). In v2 the served model
has two names: the project's (``flights``: entity keys, one BYTES tensor per request field; features
are looked up online) and ``<name>-features`` (raw feature tensors, one per model feature: BYTES for
a category, FP64 or another numeric type for a number; no lookup). Both are logged alike.

Thin by design: it parses, calls :class:`~loopml.serving.Predictor`, and maps loopml's error classes
to status codes in one table (``STATUS``). Errors are ``{"error": message}``, the shape v2 clients
decode. A bad request gets a 4xx naming the field; the server keeps serving. Once the prediction log
has failed an fsync, every prediction is a 503 and the ready endpoints answer 400 (v2: a 4xx is
"not ready"), so a readiness probe takes the server out of rotation; ``/v2/health/live`` stays 200.
Each request is one JSON log line on the ``loopml.serving.access`` logger (see
:mod:`loopml.serving.logs`; the caller configures logging, this module never does).
"""

from __future__ import annotations

import contextlib
import gc
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopml.errors import (
    LoopmlError,
    ModelNotFound,
    ModelRejected,
    NotReady,
    PayloadTooLarge,
    PredictionLogError,
    SchemaError,
)
from loopml.serving import oip
from loopml.serving.batching import MicroBatcher
from loopml.serving.hotswap import ChampionWatcher, ModelLoader, ModelSwapper, smoke_test
from loopml.serving.logs import request_id_var
from loopml.serving.metrics import ServingMetrics
from loopml.serving.predictor import Predictor, new_request_id
from loopml.timeutil import parse_time

__all__ = ["STATUS", "Unauthorized", "create_app", "smoke_test"]


class Unauthorized(LoopmlError):
    """A protected endpoint was called without the right bearer token."""


STATUS: list[tuple[type[Exception], int]] = [
    (PayloadTooLarge, 413), (SchemaError, 422), (ModelNotFound, 404), (Unauthorized, 401), (ModelRejected, 409),
    (NotReady, 503), (PredictionLogError, 503),
    (LoopmlError, 400)]

access_log = logging.getLogger("loopml.serving.access")
error_log = logging.getLogger("loopml.serving.http")


def _status(exc: Exception) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 500


def _error(message: str, status: int, kind: str, request_id: str | None = None) -> JSONResponse:
    headers = {"x-request-id": request_id} if request_id else None
    return JSONResponse({"error": message, "type": kind}, status_code=status, headers=headers)


def create_app(predictor: Predictor, *, load_model: ModelLoader | None = None, admin_token: str | None = None,
               max_body_bytes: int = 1_000_000, max_batch: int = 1000,
               watch_champion: Callable[[], int] | None = None, watch_interval: float = 2.0,
               batch_window_ms: float | None = None, batch_max_rows: int = 64, batch_adaptive: bool = False,
               freeze_gc: bool = True) -> FastAPI:
    """A FastAPI app serving ``predictor``.

    Parameters
    ----------
    load_model
        ``ref -> (version, model)`` from the registry (sha256-verified); enables the admin endpoint.
    admin_token
        Bearer token for admin endpoints; without one they answer 401 (never a default token).
    max_body_bytes, max_batch
        Request size (after decompression) and rows-per-request limits (4xx beyond them).
    watch_champion
        ``() -> version`` of the registry's champion; when given (with ``load_model``), the app polls
        it every ``watch_interval`` seconds and hot-swaps, so ``loopml models promote``/``rollback``
        reach the running server.
    batch_window_ms, batch_max_rows, batch_adaptive
        Adaptive micro-batching (:class:`~loopml.serving.batching.MicroBatcher`): concurrent requests
        arriving within the window are scored as one batch; 0 batches only the requests received in the
        same event-loop turn (no added wait). None (the default here) scores each request alone.
        ``batch_adaptive``: wait for company only while other requests are in flight (a lone one never waits).
    freeze_gc
        While the app runs (lifespan startup to shutdown), move the objects alive at startup out of the cyclic
        garbage collector's reach (``gc.freeze``): its full collections then skip the model and feature state.
    """
    name = predictor.project.name
    metrics = predictor.metrics or ServingMetrics()
    predictor.metrics = metrics
    metrics.model_version.set(predictor.version)
    swapper = ModelSwapper(predictor, load_model) if load_model is not None else None
    watcher = (ChampionWatcher(swapper, watch_champion, interval=watch_interval)
               if swapper is not None and watch_champion is not None else None)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if watcher is not None:
            watcher.start()
        if freeze_gc:
            # Everything loaded so far (model, feature state, libraries) lives as long as the server: keep it out
            # of the cyclic collector's full passes, which otherwise walk it all (~0.2 s under load) every few
            # thousand requests. Undone at shutdown, so a process that goes on (a test) collects as before.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            if freeze_gc:
                gc.unfreeze()
            if watcher is not None:
                watcher.stop()

    batcher = (MicroBatcher(predictor, window_ms=batch_window_ms, max_rows=batch_max_rows, adaptive=batch_adaptive)
               if batch_window_ms is not None else None)
    app = _ServingApp(title=f"loopml: {name}", version="1", lifespan=lifespan)
    app.state.swapper = swapper
    app.state.watcher = watcher
    direct = _Direct()  # filled below
    app.add_middleware(_Observe, predictor=predictor, metrics=metrics, max_body_bytes=max_body_bytes, direct=direct)
    app.observe = _Observe(app.router, predictor=predictor, metrics=metrics, max_body_bytes=max_body_bytes,
                           direct=direct)
    id_field = predictor.project.spine.id
    fields = predictor.schema.fields

    @app.exception_handler(LoopmlError)
    async def _loopml_error(request: Request, exc: LoopmlError) -> JSONResponse:
        metrics.errors.labels(type(exc).__name__).inc()
        return _error(str(exc), _status(exc), type(exc).__name__, getattr(request.state, "request_id", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("SchemaError").inc()
        return _error(str(exc), 422, "SchemaError", getattr(request.state, "request_id", None))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = _error(str(exc.detail), exc.status_code, "HTTPError", getattr(request.state, "request_id", None))
        if exc.headers:  # e.g. Allow on a 405 (RFC 9110 15.5.6: MUST)
            response.headers.update(exc.headers)
        return response

    async def _read_body(scope: Scope, receive: Receive) -> bytes:
        chunks, size, more = [], 0, True
        while more:  # stop reading at the limit (a chunked body has no length to check)
            message = await receive()
            if message["type"] != "http.request":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            if chunk:
                size += len(chunk)
                if size > max_body_bytes:
                    raise PayloadTooLarge(f"request body of more than {max_body_bytes} bytes exceeds the limit of "
                                      f"{max_body_bytes}")
                chunks.append(chunk)
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return oip.decode_body(raw, _header(scope, b"content-encoding"), limit=max_body_bytes)

    async def _body(request: Request) -> bytes:
        return await _read_body(request.scope, request.receive)

    async def _score(clean: list[dict[str, Any]], ats: list[Any], entity_ids: list[str | None],
                     request_ids: list[str | None]) -> list[Any]:
        if batcher is None:
            # scored on the loop (~0.3 ms, no thread hop); the log's fsync is awaited, so it never blocks the loop
            return await predictor.apredict_many(clean, ats=ats, entity_ids=entity_ids, request_ids=request_ids,
                                                 validated=True)
        # times are resolved per request here, so that one bad request cannot fail the others' batch
        times = [t or predictor.prediction_time(c) for c, t in zip(clean, ats, strict=True)]
        return await batcher.predict(clean, ats=times, entity_ids=entity_ids, request_ids=request_ids)

    def _not_ready() -> str | None:
        """Why no prediction can be served now (the prediction log failed an fsync: every one is a 503), or None."""
        log = predictor.log
        return None if log is None else log.failure

    def _readiness(body: dict[str, Any]) -> JSONResponse:
        # The v2 protocol: "A 200 status code indicates true and a 4xx status code indicates false" (Kubernetes
        # readiness probes read the status, not the body). The body says why, in the v2 error shape.
        reason = _not_ready()
        if reason is None:
            return JSONResponse({**body, "ready": True})
        return JSONResponse({**body, "ready": False, "error": f"not ready: {reason}", "type": "PredictionLogError"},
                            status_code=400)

    # -- plain JSON --------------------------------------------------------------------------
    @app.get("/health")
    def health() -> dict[str, Any]:
        # stays 200 while the process answers (a liveness check); "status" says whether it can serve predictions
        model = predictor.model
        reason = _not_ready()
        return {"status": "ok" if reason is None else "not ready", "model": name, "model_version": predictor.version,
                "backend": model.backend, "backend_reason": model.backend_reason,
                **({} if reason is None else {"error": reason})}

    async def predict_direct(scope: Scope, receive: Receive, rid: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        body = _parse_json(await _read_body(scope, receive))
        if not isinstance(body, dict):
            raise SchemaError(f"request body must be a JSON object with fields {list(fields)}")
        clean = predictor.schema.validate(body)
        at = parse_time(body["at"], field="at") if body.get("at") is not None else None
        entity = body.get(id_field)
        if entity is not None and not isinstance(entity, str):
            raise SchemaError(f"request field {id_field!r} must be a string; got {entity!r}")
        pred = (await _score([clean], [at], [entity], [rid]))[0]
        return orjson.dumps({"request_id": pred.request_id, "score": pred.score, "model_version": pred.model_version,
                             "at": pred.at.isoformat(), "features": pred.features}), _JSON

    @app.post("/predict", openapi_extra=_body_schema(_predict_schema(fields, id_field)))
    async def predict(request: Request) -> Response:
        # declared for the OpenAPI document; requests are answered by predict_direct before FastAPI sees them
        return _raw_response(*await predict_direct(request.scope, request.receive, request.state.request_id))

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- Open Inference Protocol v2 ------------------------------------------------------------
    features_name = f"{name}-features"  # the same model, given raw feature tensors instead of entity keys

    def _check_model(model_name: str, version: str | None = None) -> bool:
        """Whether ``model_name`` is the raw-features model; ModelNotFound for any other name or version."""
        if model_name not in (name, features_name):
            raise ModelNotFound(f"model {model_name!r} is not served here; this server serves {name!r} (entity keys) "
                                f"and {features_name!r} (raw feature tensors)")
        if version is not None and version != str(predictor.version):
            raise ModelNotFound(f"model {model_name!r} version {version!r} is not loaded; version {predictor.version} is")
        return model_name == features_name

    @app.get("/v2/health/live")
    def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    def ready() -> JSONResponse:
        return _readiness({})

    @app.get("/v2")
    def server_metadata() -> dict[str, Any]:
        return {"name": "loopml", "version": "0.1.0", "extensions": ["binary_tensor_data"]}

    def _metadata(raw_features: bool) -> dict[str, Any]:
        model = predictor.model
        if raw_features:
            inputs = [{"name": f, "datatype": "BYTES" if f in model.categories else "FP64", "shape": [-1]}
                      for f in model.features]
        else:
            inputs = [{"name": f, "datatype": "BYTES", "shape": [-1]} for f in fields]
        return {"name": features_name if raw_features else name, "versions": [str(predictor.version)],
                "platform": "loopml_lightgbm", "inputs": inputs,
                "outputs": [{"name": "score", "datatype": "FP64", "shape": [-1]}]}

    @app.get("/v2/models/{model_name}")
    def model_metadata(model_name: str) -> dict[str, Any]:
        return _metadata(_check_model(model_name))

    @app.get("/v2/models/{model_name}/versions/{version}")
    def model_version_metadata(model_name: str, version: str) -> dict[str, Any]:
        return _metadata(_check_model(model_name, version))

    @app.get("/v2/models/{model_name}/ready")
    def model_ready(model_name: str) -> JSONResponse:
        _check_model(model_name)
        return _readiness({"name": model_name})

    @app.get("/v2/models/{model_name}/versions/{version}/ready")
    def model_version_ready(model_name: str, version: str) -> JSONResponse:
        _check_model(model_name, version)
        return _readiness({"name": model_name})

    async def _infer(scope: Scope, receive: Receive, rid: str, model_name: str,
                     version: str | None) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        raw_features = _check_model(model_name, version)
        doc = oip.decode_request(await _read_body(scope, receive), _header(scope, oip.HEADER_LENGTH.encode()))
        binary = oip.binary_outputs(doc, ["score"])
        if raw_features:
            model = predictor.model
            rows = oip.rows_from_feature_inputs(doc, {f: f in model.categories for f in model.features},
                                                max_batch=max_batch)
            preds = await predictor.apredict_features(rows)
        else:
            rows = oip.rows_from_inputs(doc, fields, max_batch=max_batch)
            clean = [predictor.schema.validate(r) for r in rows]
            preds = await _score(clean, [None] * len(clean), [None] * len(clean), [None] * len(clean))
        req_id = doc.get("id")
        out = {"model_name": model_name,
               "model_version": str(preds[0].model_version if preds else predictor.version),
               "id": req_id if isinstance(req_id, str) else rid,
               "outputs": [{"name": "score", "datatype": "FP64", "shape": [len(preds)],
                            "data": [p.score for p in preds]}],
               "parameters": {"request_ids": [p.request_id for p in preds]}}
        content, header_length = oip.encode_response(out, binary)
        if header_length is None:
            return content, _JSON
        return content, [(b"content-type", b"application/octet-stream"),
                         (b"inference-header-content-length", str(header_length).encode())]

    @app.post("/v2/models/{model_name}/infer", openapi_extra=_body_schema(_V2_REQUEST))
    async def infer(model_name: str, request: Request) -> Response:
        return _raw_response(*await _infer(request.scope, request.receive, request.state.request_id, model_name, None))

    @app.post("/v2/models/{model_name}/versions/{version}/infer", openapi_extra=_body_schema(_V2_REQUEST))
    async def infer_version(model_name: str, version: str, request: Request) -> Response:
        return _raw_response(*await _infer(request.scope, request.receive, request.state.request_id, model_name,
                                           version))

    # -- admin -----------------------------------------------------------------------------------
    @app.post("/admin/models/{model_name}/load", openapi_extra=_body_schema(_LOAD_REQUEST, required=False))
    async def admin_load(model_name: str, request: Request) -> dict[str, Any]:
        _authorize(request, admin_token)
        _check_model(model_name)
        if swapper is None:
            raise NotReady("this server was started without a registry to load models from")
        raw = await _body(request)
        body = _parse_json(raw) if raw else {}
        ref = body.get("version", "champion") if isinstance(body, dict) else "champion"
        if isinstance(ref, bool) or not isinstance(ref, str | int):
            raise SchemaError(f"field 'version' must be a version number or an alias such as 'champion'; got {ref!r}")
        # loading and smoke-testing take a while: off the event loop, so serving never stalls
        old, version = await run_in_threadpool(swapper.swap_to, str(ref))
        return {"model": name, "model_version": version, "previous_version": old}

    # The scoring endpoints skip FastAPI's routing, dependency and response layers (~30% of a request's CPU):
    # _Observe calls these functions itself and sends the bytes they return, with the same error handling.
    async def infer_served(scope: Scope, receive: Receive, rid: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        return await _infer(scope, receive, rid, name, None)

    async def infer_features(scope: Scope, receive: Receive, rid: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        return await _infer(scope, receive, rid, features_name, None)

    direct.endpoints[("POST", "/predict")] = (predict_direct, "/predict")
    direct.endpoints[("POST", f"/v2/models/{name}/infer")] = (infer_served, "/v2/models/{model_name}/infer")
    direct.endpoints[("POST", f"/v2/models/{features_name}/infer")] = (infer_features, "/v2/models/{model_name}/infer")
    return app


_JSON = [(b"content-type", b"application/json")]


def _raw_response(content: bytes, headers: list[tuple[bytes, bytes]]) -> Response:
    response = Response(content)
    response.raw_headers = [(b"content-length", str(len(content)).encode()), *headers]
    return response


Handler = Callable[[Scope, Receive, str], Awaitable[tuple[bytes, list[tuple[bytes, bytes]]]]]


class _ServingApp(FastAPI):
    """FastAPI, except that the scoring endpoints are answered before its middleware stack.

    Skipping Starlette's error middleware and FastAPI's telemetry (which reads ``os.environ`` and the
    OpenTelemetry providers on every request) and body-limit layers, with orjson parsing and cached metric
    children, took this app's own CPU per prediction (scoring stubbed out, no sockets) from ~78 to ~35 µs;
    ``observe`` (the same :class:`_Observe` that wraps every other path) answers ``POST /predict`` and the
    v2 ``infer`` of both model names itself (:meth:`_Observe.direct_call`): the endpoint returns the body's
    bytes and content headers, and one response start and one body message go to the server, without
    Starlette's Request and Response objects. Same headers, error shapes, metrics and access lines.
    FastAPI's OpenTelemetry spans are not made for those.
    """

    observe: _Observe | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        observe = self.observe
        if observe is not None and scope["type"] == "http":
            direct = observe.direct.endpoints.get((scope["method"], scope["path"]))
            if direct is not None:
                await observe.direct_call(direct[0], direct[1], scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class _Direct:
    """The scoring endpoints the middleware calls itself: (method, path) -> (handler, the route path metrics name)."""

    def __init__(self) -> None:
        self.endpoints: dict[tuple[str, str], tuple[Handler, str]] = {}


class _Observe:
    """Request id, size limit, metrics and the access log line, as a pure ASGI middleware.

    Starlette's ``@app.middleware("http")`` (``BaseHTTPMiddleware``) opens an anyio task group and
    memory streams per request and wraps every ``receive``: a third of the server's CPU under load.
    This one wraps ``send`` only, to see the status and add the ``x-request-id`` header. The scoring
    endpoints (``direct``) are answered by :meth:`direct_call`, past FastAPI's router, dependency and
    response layers; every other path goes through FastAPI as usual.
    """

    def __init__(self, app: ASGIApp, *, predictor: Predictor, metrics: ServingMetrics, max_body_bytes: int,
                 direct: _Direct) -> None:
        self.app = app
        self.direct = direct
        self.predictor = predictor
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self._children: dict[tuple[str, int, int], tuple[Any, Any]] = {}

    def _count(self, endpoint: str, version: int, status: int, elapsed: float) -> None:
        # prometheus_client's labels() takes a lock and builds its key on every call: keep the children
        key = (endpoint, version, status)
        children = self._children.get(key)
        if children is None:
            v = str(version)
            children = (self.metrics.requests.labels(endpoint, v, str(status)), self.metrics.latency.labels(endpoint, v))
            if len(self._children) < 10_000:  # versions and statuses are few; never grow without bound
                self._children[key] = children
        children[0].inc()
        children[1].observe(elapsed)

    def _done(self, scope: Scope, endpoint: str, status: int, t0: float) -> None:
        version = self.predictor.version
        elapsed = time.perf_counter() - t0
        self._count(endpoint, version, status, elapsed)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("request", extra={
                "model_version": version, "method": scope["method"], "path": scope["path"],
                "status": status, "latency_ms": round(elapsed * 1000, 3)})

    async def direct_call(self, handler: Handler, endpoint: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a scoring endpoint: ``handler`` returns the body and its content headers or raises."""
        rid = _client_request_id(scope) or new_request_id()
        token = request_id_var.set(rid)
        t0 = time.perf_counter()
        try:
            length = _header(scope, b"content-length")
            if length is not None and length.isascii() and length.isdigit() and int(length) > self.max_body_bytes:
                self.metrics.errors.labels("PayloadTooLarge").inc()
                status, headers = 413, _JSON
                content = _error_body(f"request body of {length} bytes exceeds the limit of {self.max_body_bytes}",
                                      "PayloadTooLarge")
            else:
                try:
                    content, headers = await handler(scope, receive, rid)
                    status = 200
                except ClientDisconnect:  # the client left mid-body: nobody to answer, not a server error
                    self._done(scope, endpoint, 499, t0)
                    return
                except LoopmlError as exc:
                    kind = type(exc).__name__
                    self.metrics.errors.labels(kind).inc()
                    status, content, headers = _status(exc), _error_body(str(exc), kind), _JSON
                except Exception:  # noqa: BLE001 - a bug, not a bad request: a 500 in the v2 error shape, trace logged
                    self.metrics.errors.labels("InternalError").inc()
                    error_log.exception("unhandled error")
                    status, headers = 500, _JSON
                    content = _error_body(f"internal error (request id {rid}); see the server log", "InternalError")
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-length", str(len(content)).encode()), *headers,
                                    (b"x-request-id", rid.encode("latin-1"))]})
            await send({"type": "http.response.body", "body": content})
            self._done(scope, endpoint, status, t0)
        finally:
            request_id_var.reset(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _client_request_id(scope) or new_request_id()
        scope["state"] = {**scope.get("state", {}), "request_id": rid}  # what handlers read as request.state
        token = request_id_var.set(rid)
        t0 = time.perf_counter()
        status = 500
        started = False
        rid_header = (b"x-request-id", rid.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = list(message.get("headers", ()))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append(rid_header)
                message = {**message, "headers": headers}
            await send(message)

        try:
            length = _header(scope, b"content-length")
            if length is not None and length.isascii() and length.isdigit() and int(length) > self.max_body_bytes:
                self.metrics.errors.labels("PayloadTooLarge").inc()
                await _error(f"request body of {length} bytes exceeds the limit of {self.max_body_bytes}", 413,
                             "PayloadTooLarge", rid)(scope, receive, send_with_id)
            else:
                try:
                    await self.app(scope, receive, send_with_id)
                except ClientDisconnect:  # left mid-body (admin load, versioned infer): nobody to answer, not a 500
                    status = 499
                except Exception:  # a bug, not a bad request: answer 500 in the v2 error shape, log the trace
                    self.metrics.errors.labels("InternalError").inc()
                    error_log.exception("unhandled error")
                    if started:
                        raise  # part of the response has left: nothing sensible to add
                    await _error(f"internal error (request id {rid}); see the server log", 500, "InternalError",
                                 rid)(scope, receive, send_with_id)
            self._done(scope, getattr(scope.get("route"), "path", "unmatched"), status, t0)
        finally:
            request_id_var.reset(token)


def _error_body(message: str, kind: str) -> bytes:
    """``{"error": message, "type": kind}`` as Starlette's JSONResponse renders it (compact, UTF-8)."""
    try:
        return orjson.dumps({"error": message, "type": kind})
    except orjson.JSONEncodeError:  # a lone surrogate in the message: json escapes what orjson refuses
        return json.dumps({"error": message, "type": kind}, separators=(",", ":")).encode()


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"request body must be JSON; could not parse it: {exc}") from None


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _client_request_id(scope: Scope) -> str | None:
    """The client's ``x-request-id`` if it is a plain id (letters, digits, ``._:-``, at most 128); else None.

    It is echoed in a header, written to the logs and stored as the prediction's id, which labels join
    on: anything else gets a server-made id instead.
    """
    rid = _header(scope, b"x-request-id")
    return rid if rid is not None and _REQUEST_ID.fullmatch(rid) else None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:  # ASGI servers lower-case header names
            return value.decode("latin-1")
    return None


def _authorize(request: Request, token: str | None) -> None:
    if not token:
        raise Unauthorized("admin endpoints are disabled: start the server with an admin token "
                           "(loopml serve reads LOOPML_ADMIN_TOKEN)")
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise Unauthorized("admin endpoints need the header 'Authorization: Bearer <token>'")


# -- OpenAPI: the request bodies these endpoints parse by hand, declared so clients and fuzzers see them --
_TENSOR = {"type": "object", "required": ["name", "datatype", "shape"],
           "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                          "shape": {"type": "array", "items": {"type": "integer"}}, "data": {"type": "array"},
                          "parameters": {"type": "object"}}}
_V2_REQUEST = {"type": "object", "required": ["inputs"],
               "properties": {"id": {"type": "string"}, "inputs": {"type": "array", "items": _TENSOR},
                              "outputs": {"type": "array", "items": {
                                  "type": "object", "required": ["name"],
                                  "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}}}},
                              "parameters": {"type": "object"}}}
_LOAD_REQUEST = {"type": "object", "properties": {"version": {"type": ["integer", "string"]}}}
_KINDS = {"string": {"type": ["string", "null"]}, "int": {"type": ["integer", "null"]},
          "float": {"type": ["number", "null"]}, "timestamp": {"type": "string", "format": "date-time"}}


def _predict_schema(fields: dict[str, str], id_field: str) -> dict[str, Any]:
    props = {f: _KINDS[k] for f, k in fields.items()}
    props["at"] = {"type": "string", "format": "date-time"}
    props.setdefault(id_field, {"type": "string"})
    return {"type": "object", "required": list(fields), "properties": props}


def _body_schema(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}
