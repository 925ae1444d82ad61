"""HTTP adapter over the in-process Predictor.

Endpoints: ``POST /predict`` (plain JSON, one request), the Open Inference Protocol v2 (KServe)
health, metadata and ``infer`` with JSON tensors, ``GET /metrics`` (Prometheus) and
``POST /admin/models/{name}/load`` (bearer token) to hot-swap the served version.

Thin by design: it parses, calls :class:`~loopml.serving.Predictor`, and maps loopml's error classes
to status codes in one table (``STATUS``). Errors are ``{"error": message}``, the shape v2 clients
decode. A bad request gets a 4xx naming the field; the server keeps serving.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from loopml.errors import LoopmlError, ModelNotFound, NotReady, SchemaError
from loopml.serving.metrics import ServingMetrics
from loopml.serving.predictor import Predictor
from loopml.training.model import GBMModel
from loopml.timeutil import parse_time

__all__ = ["STATUS", "Unauthorized", "create_app"]


class Unauthorized(LoopmlError):
    """A protected endpoint was called without the right bearer token."""


STATUS: list[tuple[type[Exception], int]] = [
    (SchemaError, 422), (ModelNotFound, 404), (Unauthorized, 401), (NotReady, 503), (LoopmlError, 400)]

ModelLoader = Callable[[str], tuple[int, GBMModel]]


def _status(exc: Exception) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 500


def _error(message: str, status: int, kind: str, request_id: str | None = None) -> JSONResponse:
    headers = {"x-request-id": request_id} if request_id else None
    return JSONResponse({"error": message, "type": kind}, status_code=status, headers=headers)


def create_app(predictor: Predictor, *, load_model: ModelLoader | None = None, admin_token: str | None = None,
               max_body_bytes: int = 1_000_000, max_batch: int = 1000) -> FastAPI:
    """A FastAPI app serving ``predictor``.

    Parameters
    ----------
    load_model
        ``ref -> (version, model)`` from the registry (sha256-verified); enables the admin endpoint.
    admin_token
        Bearer token for admin endpoints; without one they answer 401 (never a default token).
    max_body_bytes, max_batch
        Request size and rows-per-request limits (413 beyond them).
    """
    name = predictor.project.name
    metrics = predictor.metrics or ServingMetrics()
    predictor.metrics = metrics
    metrics.model_version.set(predictor.version)
    app = FastAPI(title=f"loopml: {name}", version="1")
    id_field = predictor.project.spine.id
    fields = predictor.schema.fields

    @app.middleware("http")
    async def _observe(request: Request, call_next: Any) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = rid
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            metrics.errors.labels("PayloadTooLarge").inc()
            return _error(f"request body of {length} bytes exceeds the limit of {max_body_bytes}", 413,
                          "PayloadTooLarge", rid)
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        version = str(predictor.version)
        metrics.requests.labels(endpoint, version, str(response.status_code)).inc()
        metrics.latency.labels(endpoint, version).observe(time.perf_counter() - t0)
        response.headers.setdefault("x-request-id", rid)
        return response

    @app.exception_handler(LoopmlError)
    async def _loopml_error(request: Request, exc: LoopmlError) -> JSONResponse:
        metrics.errors.labels(type(exc).__name__).inc()
        return _error(str(exc), _status(exc), type(exc).__name__, getattr(request.state, "request_id", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("SchemaError").inc()
        return _error(str(exc), 422, "SchemaError")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(str(exc.detail), exc.status_code, "HTTPError")

    async def _json(request: Request) -> Any:
        raw = await request.body()
        if len(raw) > max_body_bytes:
            raise SchemaError(f"request body of {len(raw)} bytes exceeds the limit of {max_body_bytes}")
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SchemaError(f"request body must be JSON; could not parse it: {exc}") from None

    # -- plain JSON --------------------------------------------------------------------------
    @app.get("/health")
    def health() -> dict[str, Any]:
        model = predictor.model
        return {"status": "ok", "model": name, "model_version": predictor.version, "backend": model.backend,
                "backend_reason": model.backend_reason}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        body = await _json(request)
        if not isinstance(body, dict):
            raise SchemaError(f"request body must be a JSON object with fields {list(fields)}")
        clean = predictor.schema.validate(body)
        at = parse_time(body["at"], field="at") if body.get("at") is not None else None
        entity = body.get(id_field)
        if entity is not None and not isinstance(entity, str):
            raise SchemaError(f"request field {id_field!r} must be a string; got {entity!r}")
        pred = predictor.predict_many([clean], at=at, entity_ids=[entity], validated=True,
                                      request_ids=[request.state.request_id])[0]
        return JSONResponse({"request_id": pred.request_id, "score": pred.score, "model_version": pred.model_version,
                             "at": pred.at.isoformat(), "features": pred.features})

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- Open Inference Protocol v2 ------------------------------------------------------------
    def _check_model(model_name: str, version: str | None = None) -> None:
        if model_name != name:
            raise ModelNotFound(f"model {model_name!r} is not served here; this server serves {name!r}")
        if version is not None and version != str(predictor.version):
            raise ModelNotFound(f"model {name!r} version {version!r} is not loaded; version {predictor.version} is")

    @app.get("/v2/health/live")
    def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.get("/v2")
    def server_metadata() -> dict[str, Any]:
        return {"name": "loopml", "version": "0.1.0", "extensions": []}

    def _metadata() -> dict[str, Any]:
        return {"name": name, "versions": [str(predictor.version)], "platform": "loopml_lightgbm",
                "inputs": [{"name": f, "datatype": "BYTES", "shape": [-1]} for f in fields],
                "outputs": [{"name": "score", "datatype": "FP64", "shape": [-1]}]}

    @app.get("/v2/models/{model_name}")
    def model_metadata(model_name: str) -> dict[str, Any]:
        _check_model(model_name)
        return _metadata()

    @app.get("/v2/models/{model_name}/versions/{version}")
    def model_version_metadata(model_name: str, version: str) -> dict[str, Any]:
        _check_model(model_name, version)
        return _metadata()

    @app.get("/v2/models/{model_name}/ready")
    def model_ready(model_name: str) -> dict[str, Any]:
        _check_model(model_name)
        return {"name": name, "ready": True}

    @app.get("/v2/models/{model_name}/versions/{version}/ready")
    def model_version_ready(model_name: str, version: str) -> dict[str, Any]:
        _check_model(model_name, version)
        return {"name": name, "ready": True}

    async def _infer(request: Request, model_name: str, version: str | None) -> JSONResponse:
        _check_model(model_name, version)
        body = await _json(request)
        rows, req_id = v2_rows(body, fields, max_batch=max_batch)
        clean = [predictor.schema.validate(r) for r in rows]
        preds = predictor.predict_many(clean, validated=True)
        out = {"model_name": name, "model_version": str(predictor.version), "id": req_id or request.state.request_id,
               "outputs": [{"name": "score", "datatype": "FP64", "shape": [len(preds)],
                            "data": [p.score for p in preds]}],
               "parameters": {"request_ids": [p.request_id for p in preds]}}
        return JSONResponse(out)

    @app.post("/v2/models/{model_name}/infer")
    async def infer(model_name: str, request: Request) -> JSONResponse:
        return await _infer(request, model_name, None)

    @app.post("/v2/models/{model_name}/versions/{version}/infer")
    async def infer_version(model_name: str, version: str, request: Request) -> JSONResponse:
        return await _infer(request, model_name, version)

    # -- admin -----------------------------------------------------------------------------------
    @app.post("/admin/models/{model_name}/load")
    async def admin_load(model_name: str, request: Request) -> dict[str, Any]:
        _authorize(request, admin_token)
        _check_model(model_name)
        if load_model is None:
            raise NotReady("this server was started without a registry to load models from")
        body = await _json(request) if await request.body() else {}
        ref = str(body.get("version", "champion")) if isinstance(body, dict) else "champion"
        version, model = load_model(ref)
        smoke_test(model)
        old = predictor.version
        predictor.swap(model, version)
        return {"model": name, "model_version": version, "previous_version": old}

    return app


def _authorize(request: Request, token: str | None) -> None:
    if not token:
        raise Unauthorized("admin endpoints are disabled: start the server with an admin token "
                           "(loopml serve reads LOOPML_ADMIN_TOKEN)")
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise Unauthorized("admin endpoints need the header 'Authorization: Bearer <token>'")


def smoke_test(model: GBMModel) -> None:
    """Refuse a model that cannot score a row with every feature missing (it would fail in service)."""
    try:
        score = float(model.predict_rows([{}])[0])
    except Exception as exc:  # any failure means: do not swap it in
        raise NotReady(f"model failed its smoke test and was not loaded: {type(exc).__name__}: {exc}") from None
    if not 0.0 <= score <= 1.0:
        raise NotReady(f"model failed its smoke test and was not loaded: score {score} is not a probability")


def v2_rows(body: Any, fields: dict[str, str], *, max_batch: int) -> tuple[list[dict[str, Any]], str | None]:
    """Rows of request fields from a v2 inference request's input tensors (one BYTES tensor per field)."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise SchemaError("v2 inference request must be a JSON object with an 'inputs' list")
    tensors: dict[str, list[Any]] = {}
    for t in body["inputs"]:
        if not isinstance(t, dict) or "name" not in t:
            raise SchemaError("each v2 input must be an object with 'name', 'shape', 'datatype' and 'data'")
        tname = t["name"]
        if tname not in fields:
            raise SchemaError(f"input {tname!r} is not an input of this model; inputs are {list(fields)}")
        if t.get("datatype") != "BYTES":
            raise SchemaError(f"input {tname!r} must have datatype 'BYTES'; got {t.get('datatype')!r}")
        data, shape = t.get("data"), t.get("shape")
        if not isinstance(data, list) or not isinstance(shape, list) or len(shape) != 1 or shape[0] != len(data):
            raise SchemaError(f"input {tname!r} must have shape [N] matching its data; got shape {shape!r} "
                              f"with {len(data) if isinstance(data, list) else 'no'} elements")
        tensors[tname] = data
    missing = [f for f in fields if f not in tensors]
    if missing:
        raise SchemaError(f"inputs {missing} are missing; the model needs {list(fields)}")
    n = {len(v) for v in tensors.values()}
    if len(n) != 1:
        raise SchemaError(f"all inputs must have the same length; got lengths { {k: len(v) for k, v in tensors.items()} }")
    count = n.pop()
    if count > max_batch:
        raise SchemaError(f"a request may carry at most {max_batch} rows; got {count}")
    rows = []
    for i in range(count):
        row = {}
        for f, kind in fields.items():
            row[f] = _from_bytes(f, kind, tensors[f][i])
        rows.append(row)
    rid = body.get("id")
    return rows, rid if isinstance(rid, str) else None


def _from_bytes(field: str, kind: str, value: Any) -> Any:
    """BYTES elements arrive as strings; turn numeric fields into numbers (empty string = missing)."""
    if not isinstance(value, str):
        return value  # let the schema say what was expected
    if value == "" and kind != "timestamp":
        return None
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError:
        raise SchemaError(f"input {field!r} must hold {'integers' if kind == 'int' else 'numbers'} as text; "
                          f"got {value!r}") from None
    return value
