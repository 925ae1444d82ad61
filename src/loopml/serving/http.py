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
decode. A bad request gets a 4xx naming the field; the server keeps serving. Each request is one
JSON log line on the ``loopml.serving.access`` logger (see :mod:`loopml.serving.logs`; the caller
configures logging, this module never does).
"""

from __future__ import annotations

import contextlib
import gc
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopml.errors import LoopmlError, ModelNotFound, ModelRejected, NotReady, PredictionLogError, SchemaError
from loopml.serving import oip
from loopml.serving.batching import MicroBatcher
from loopml.serving.hotswap import ChampionWatcher, ModelLoader, ModelSwapper, smoke_test
from loopml.serving.logs import request_id_var
from loopml.serving.metrics import ServingMetrics
from loopml.serving.predictor import Predictor
from loopml.timeutil import parse_time

__all__ = ["STATUS", "Unauthorized", "create_app", "smoke_test"]


class Unauthorized(LoopmlError):
    """A protected endpoint was called without the right bearer token."""


STATUS: list[tuple[type[Exception], int]] = [
    (SchemaError, 422), (ModelNotFound, 404), (Unauthorized, 401), (ModelRejected, 409), (NotReady, 503),
    (PredictionLogError, 503),
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
               batch_window_ms: float | None = None, batch_max_rows: int = 64, freeze_gc: bool = True) -> FastAPI:
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
    batch_window_ms, batch_max_rows
        Adaptive micro-batching (:class:`~loopml.serving.batching.MicroBatcher`): concurrent requests
        arriving within the window are scored as one batch; 0 batches only the requests received in the
        same event-loop turn (no added wait). None (the default here) scores each request alone.
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

    batcher = (MicroBatcher(predictor, window_ms=batch_window_ms, max_rows=batch_max_rows)
               if batch_window_ms is not None else None)
    app = _ServingApp(title=f"loopml: {name}", version="1", lifespan=lifespan)
    app.state.swapper = swapper
    app.state.watcher = watcher
    direct = _Direct()  # filled below, once the routes exist
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
        return _error(str(exc.detail), exc.status_code, "HTTPError", getattr(request.state, "request_id", None))

    async def _body(request: Request) -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():  # stop reading at the limit (a chunked body has no length to check)
            size += len(chunk)
            if size > max_body_bytes:
                raise SchemaError(f"request body of more than {max_body_bytes} bytes exceeds the limit of "
                                  f"{max_body_bytes}")
            chunks.append(chunk)
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return oip.decode_body(raw, _header(request.scope, b"content-encoding"), limit=max_body_bytes)

    async def _json(request: Request) -> Any:
        return _parse_json(await _body(request))

    async def _score(clean: list[dict[str, Any]], ats: list[Any], entity_ids: list[str | None],
                     request_ids: list[str | None]) -> list[Any]:
        if batcher is None:
            # scored on the loop (~0.3 ms, no thread hop); the log's fsync is awaited, so it never blocks the loop
            return await predictor.apredict_many(clean, ats=ats, entity_ids=entity_ids, request_ids=request_ids,
                                                 validated=True)
        # times are resolved per request here, so that one bad request cannot fail the others' batch
        times = [t or predictor.prediction_time(c) for c, t in zip(clean, ats, strict=True)]
        return await batcher.predict(clean, ats=times, entity_ids=entity_ids, request_ids=request_ids)

    # -- plain JSON --------------------------------------------------------------------------
    @app.get("/health")
    def health() -> dict[str, Any]:
        model = predictor.model
        return {"status": "ok", "model": name, "model_version": predictor.version, "backend": model.backend,
                "backend_reason": model.backend_reason}

    @app.post("/predict", openapi_extra=_body_schema(_predict_schema(fields, id_field)))
    async def predict(request: Request) -> JSONResponse:
        body = await _json(request)
        if not isinstance(body, dict):
            raise SchemaError(f"request body must be a JSON object with fields {list(fields)}")
        clean = predictor.schema.validate(body)
        at = parse_time(body["at"], field="at") if body.get("at") is not None else None
        entity = body.get(id_field)
        if entity is not None and not isinstance(entity, str):
            raise SchemaError(f"request field {id_field!r} must be a string; got {entity!r}")
        pred = (await _score([clean], [at], [entity], [request.state.request_id]))[0]
        return _FastJSON({"request_id": pred.request_id, "score": pred.score, "model_version": pred.model_version,
                          "at": pred.at.isoformat(), "features": pred.features})

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
    def ready() -> dict[str, bool]:
        return {"ready": True}

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
    def model_ready(model_name: str) -> dict[str, Any]:
        _check_model(model_name)
        return {"name": model_name, "ready": True}

    @app.get("/v2/models/{model_name}/versions/{version}/ready")
    def model_version_ready(model_name: str, version: str) -> dict[str, Any]:
        _check_model(model_name, version)
        return {"name": model_name, "ready": True}

    async def _infer(request: Request, model_name: str, version: str | None) -> Response:
        raw_features = _check_model(model_name, version)
        doc = oip.decode_request(await _body(request), _header(request.scope, oip.HEADER_LENGTH.encode()))
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
               "id": req_id if isinstance(req_id, str) else request.state.request_id,
               "outputs": [{"name": "score", "datatype": "FP64", "shape": [len(preds)],
                            "data": [p.score for p in preds]}],
               "parameters": {"request_ids": [p.request_id for p in preds]}}
        content, header_length = oip.encode_response(out, binary)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(header_length)})

    @app.post("/v2/models/{model_name}/infer", openapi_extra=_body_schema(_V2_REQUEST))
    async def infer(model_name: str, request: Request) -> Response:
        return await _infer(request, model_name, None)

    @app.post("/v2/models/{model_name}/versions/{version}/infer", openapi_extra=_body_schema(_V2_REQUEST))
    async def infer_version(model_name: str, version: str, request: Request) -> Response:
        return await _infer(request, model_name, version)

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

    # The scoring endpoints skip FastAPI's routing and dependency layers (~30% of a request's CPU): the
    # middleware calls the same endpoint functions directly, with the same error handling.
    routes = {getattr(r, "path", None): r for r in app.routes}

    async def infer_served(request: Request) -> Response:
        return await _infer(request, name, None)

    async def infer_features(request: Request) -> Response:
        return await _infer(request, features_name, None)

    direct.endpoints[("POST", "/predict")] = (predict, routes["/predict"])
    direct.endpoints[("POST", f"/v2/models/{name}/infer")] = (infer_served, routes["/v2/models/{model_name}/infer"])
    direct.endpoints[("POST", f"/v2/models/{features_name}/infer")] = (infer_features,
                                                                      routes["/v2/models/{model_name}/infer"])
    direct.on_error = _loopml_error
    return app


class _FastJSON(JSONResponse):
    """JSON rendered by orjson: the same compact text as Starlette's (shortest float repr), without building
    a ``json`` encoder per response; a NaN feature value becomes null instead of an error."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class _ServingApp(FastAPI):
    """FastAPI, except that the scoring endpoints are answered before its middleware stack.

    Skipping Starlette's error middleware and FastAPI's telemetry (which reads ``os.environ`` and the
    OpenTelemetry providers on every request) and body-limit layers, with orjson parsing and cached metric
    children, took this app's own CPU per prediction (scoring stubbed out, no sockets) from ~78 to ~35 µs;
    ``observe`` (the same :class:`_Observe` that wraps every other
    path) answers ``POST /predict`` and the v2 ``infer`` of both model names itself, with the same headers,
    error shapes, metrics and access lines. FastAPI's OpenTelemetry spans are not made for those.
    """

    observe: _Observe | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        observe = self.observe
        if observe is not None and scope["type"] == "http" and (scope["method"], scope["path"]) in observe.direct.endpoints:
            scope["app"] = self  # as Starlette sets it (Request.app)
            await observe(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


class _Direct:
    """The scoring endpoints the middleware calls itself, and the handler that turns a LoopmlError into a response."""

    def __init__(self) -> None:
        self.endpoints: dict[tuple[str, str], tuple[Callable[[Request], Awaitable[Response]], Any]] = {}
        self.on_error: Callable[[Request, LoopmlError], Awaitable[Response]] | None = None


class _Observe:
    """Request id, size limit, metrics and the access log line, as a pure ASGI middleware.

    Starlette's ``@app.middleware("http")`` (``BaseHTTPMiddleware``) opens an anyio task group and
    memory streams per request and wraps every ``receive``: a third of the server's CPU under load.
    This one wraps ``send`` only, to see the status and add the ``x-request-id`` header. The scoring
    endpoints (``direct``) are called from here, past FastAPI's router and dependency layers; every
    other path goes through FastAPI as usual.
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _header(scope, b"x-request-id") or uuid.uuid4().hex
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
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                self.metrics.errors.labels("PayloadTooLarge").inc()
                await _error(f"request body of {length} bytes exceeds the limit of {self.max_body_bytes}", 413,
                             "PayloadTooLarge", rid)(scope, receive, send_with_id)
            else:
                try:
                    direct = self.direct.endpoints.get((scope["method"], scope["path"]))
                    if direct is None:
                        await self.app(scope, receive, send_with_id)
                    else:
                        await self._call_direct(*direct, scope, receive, send_with_id)
                except Exception:  # a bug, not a bad request: answer 500 in the v2 error shape, log the trace
                    self.metrics.errors.labels("InternalError").inc()
                    error_log.exception("unhandled error")
                    if started:
                        raise  # part of the response has left: nothing sensible to add
                    await _error(f"internal error (request id {rid}); see the server log", 500, "InternalError",
                                 rid)(scope, receive, send_with_id)
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            version = self.predictor.version
            elapsed = time.perf_counter() - t0
            self._count(endpoint, version, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info("request", extra={
                    "model_version": version, "method": scope["method"], "path": scope["path"],
                    "status": status, "latency_ms": round(elapsed * 1000, 3)})
        finally:
            request_id_var.reset(token)

    async def _call_direct(self, handler: Callable[[Request], Awaitable[Response]], route: Any, scope: Scope,
                           receive: Receive, send: Send) -> None:
        scope["route"] = route  # as the router would set it: the metrics label the route's path
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except LoopmlError as exc:
            assert self.direct.on_error is not None
            response = await self.direct.on_error(request, exc)
        await response(scope, receive, send)


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"request body must be JSON; could not parse it: {exc}") from None


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
