"""HTTP adapter: ``POST /predict`` and health, over the in-process Predictor.

Thin by design: it parses JSON, calls :class:`~loopml.serving.Predictor`, and maps loopml's error
classes to status codes in one table. A bad request gets a 4xx naming the field; the server keeps
serving.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from loopml.errors import LoopmlError, ModelNotFound, NotReady, SchemaError
from loopml.serving.predictor import Predictor
from loopml.timeutil import parse_time

__all__ = ["create_app"]

STATUS = [(SchemaError, 422), (ModelNotFound, 404), (NotReady, 503), (LoopmlError, 400)]


def _status(exc: Exception) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 500


def create_app(predictor: Predictor) -> FastAPI:
    """A FastAPI app serving ``predictor``."""
    app = FastAPI(title=f"loopml: {predictor.project.name}", version="1")
    id_field = predictor.project.spine.id

    @app.exception_handler(LoopmlError)
    async def _loopml_error(request: Request, exc: LoopmlError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "type": type(exc).__name__}, status_code=_status(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "type": "SchemaError"}, status_code=422)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": predictor.project.name, "model_version": predictor.version}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SchemaError(f"request body must be a JSON object; could not parse it: {exc}") from None
        if not isinstance(body, dict):
            raise SchemaError(f"request body must be a JSON object with fields {list(predictor.schema.fields)}")
        clean = predictor.schema.validate(body)
        at = parse_time(body["at"], field="at") if body.get("at") is not None else None
        entity = body.get(id_field)
        if entity is not None and not isinstance(entity, str):
            raise SchemaError(f"request field {id_field!r} must be a string; got {entity!r}")
        pred = predictor.predict_many([clean], at=at, entity_ids=[entity], validated=True)[0]
        return JSONResponse({"request_id": pred.request_id, "score": pred.score, "model_version": pred.model_version,
                             "at": pred.at.isoformat(), "features": pred.features},
                            headers={"x-request-id": pred.request_id})

    return app
