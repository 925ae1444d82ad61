"""Open Inference Protocol (KServe v2) over REST: JSON tensors and the binary tensor extension.

A v2 request is a JSON document; with the binary tensor extension (what ``tritonclient`` sends by
default) the JSON header is followed by raw tensor bytes and its length is given in the
``Inference-Header-Content-Length`` header. An input whose ``parameters.binary_data_size`` is set
takes its elements from the next that many bytes: fixed-size types little-endian, ``BYTES`` elements
each prefixed by their length as a 4-byte little-endian unsigned integer. Outputs come back the same
way when the request asks for it (``"parameters": {"binary_data": true}`` on a requested output, or
``"binary_data_output": true`` on the request).

This module only converts between bytes and JSON-shaped tensors; what the tensors mean is the
HTTP app's business (:func:`rows_from_inputs` turns the flights model's BYTES inputs into requests,
:func:`rows_from_feature_inputs` the raw feature tensors of the ``<name>-features`` model into feature rows).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from loopml.errors import PayloadTooLarge, SchemaError

__all__ = ["HEADER_LENGTH", "binary_outputs", "decode_body", "decode_request", "encode_response",
           "rows_from_feature_inputs", "rows_from_inputs"]

HEADER_LENGTH = "inference-header-content-length"

# v2 datatype -> little-endian numpy dtype (BYTES is variable-length, handled apart)
_DTYPES = {"BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1",
           "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
_LEN = struct.Struct("<I")


def decode_body(raw: bytes, encoding: str | None, *, limit: int) -> bytes:
    """The request body after ``Content-Encoding`` (gzip or deflate), never inflated past ``limit`` bytes."""
    if not encoding or encoding == "identity":
        return raw
    if encoding not in ("gzip", "deflate"):
        raise SchemaError(f"Content-Encoding {encoding!r} is not supported; use 'gzip', 'deflate' or none")
    d = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = d.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise SchemaError(f"request body is not valid {encoding} data: {exc}") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"request body inflates past the limit of {limit} bytes")
    return out


def decode_request(body: bytes, header_length: str | None) -> dict[str, Any]:
    """The v2 request document, with binary inputs turned into ``data`` lists like JSON inputs."""
    if header_length is None:
        doc = _parse_json(body)
        _check_inputs(doc)
        return doc
    if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
        raise SchemaError(f"header Inference-Header-Content-Length must be a byte count of at most the body's "
                          f"{len(body)} bytes; got {header_length!r}")
    n = int(header_length)
    doc = _parse_json(body[:n])
    _check_inputs(doc)
    view = memoryview(body)[n:]
    offset = 0
    for t in doc["inputs"]:
        params = t.get("parameters")
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            continue
        name = t.get("name")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(view):
            raise SchemaError(f"input {name!r} declares binary_data_size {size!r} but only {len(view) - offset} "
                              f"bytes of tensor data are left")
        t["data"] = _decode_tensor(name, t.get("datatype"), t.get("shape"), view[offset:offset + size])
        offset += size
    if offset != len(view):
        raise SchemaError(f"request carries {len(view) - offset} bytes of tensor data that no input's "
                          f"binary_data_size accounts for")
    return doc


def _parse_json(raw: bytes | memoryview) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"v2 inference request must be JSON; could not parse it: {exc}") from None


def _check_inputs(doc: Any) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise SchemaError("v2 inference request must be a JSON object with an 'inputs' list")
    for t in doc["inputs"]:
        if not isinstance(t, dict) or "name" not in t:
            raise SchemaError("each v2 input must be an object with 'name', 'shape', 'datatype' and 'data'")


def _count(name: Any, shape: Any) -> int:
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise SchemaError(f"input {name!r} must have a shape of non-negative integers; got {shape!r}")
    return math.prod(shape)


def _decode_tensor(name: Any, datatype: Any, shape: Any, raw: memoryview) -> list[Any]:
    count = _count(name, shape)
    if datatype == "BYTES":
        out: list[Any] = []
        pos = 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise SchemaError(f"input {name!r}: BYTES element {len(out)} has a truncated length prefix")
            (n,) = _LEN.unpack_from(raw, pos)
            pos += 4
            if pos + n > len(raw):
                raise SchemaError(f"input {name!r}: BYTES element {len(out)} declares {n} bytes; "
                                  f"{len(raw) - pos} are left")
            try:
                out.append(bytes(raw[pos:pos + n]).decode("utf-8"))
            except UnicodeDecodeError:
                raise SchemaError(f"input {name!r}: BYTES element {len(out)} is not UTF-8 text: "
                                  f"{bytes(raw[pos:pos + n])[:40]!r}") from None
            pos += n
        if len(out) != count:
            raise SchemaError(f"input {name!r} has shape {shape} ({count} elements) but its binary data holds "
                              f"{len(out)}")
        return out
    dtype = _DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise SchemaError(f"input {name!r} has unknown datatype {datatype!r}; v2 datatypes are "
                          f"{sorted([*_DTYPES, 'BYTES'])}")
    itemsize = np.dtype(dtype).itemsize
    if len(raw) != count * itemsize:
        raise SchemaError(f"input {name!r} has shape {shape} of {datatype} ({count * itemsize} bytes) but "
                          f"binary_data_size is {len(raw)}")
    return np.frombuffer(raw, dtype=dtype).tolist()


def binary_outputs(doc: Mapping[str, Any], names: Sequence[str]) -> set[str]:
    """Output names the request wants as binary data (unknown requested outputs are a 4xx naming them)."""
    params = doc.get("parameters")
    default = bool(params.get("binary_data_output")) if isinstance(params, dict) else False
    requested = doc.get("outputs")
    if requested is None:
        return set(names) if default else set()
    if not isinstance(requested, list):
        raise SchemaError(f"'outputs' must be a list of {{'name': ...}} objects; got {requested!r}")
    out = set()
    for o in requested:
        name = o.get("name") if isinstance(o, dict) else None
        if name not in names:
            raise SchemaError(f"requested output {name!r} is not an output of this model; outputs are {list(names)}")
        p = o.get("parameters")
        if bool(p.get("binary_data", default)) if isinstance(p, dict) else default:
            out.add(name)
    return out


def encode_response(doc: dict[str, Any], binary: set[str]) -> tuple[bytes, int | None]:
    """Body bytes and, when some output is binary, the JSON header's length (for the response header)."""
    if not binary:
        return orjson.dumps(doc), None
    buffers = []
    for o in doc["outputs"]:
        if o["name"] in binary:
            raw = np.asarray(o.pop("data"), dtype=_DTYPES[o["datatype"]]).tobytes()
            o.setdefault("parameters", {})["binary_data_size"] = len(raw)
            buffers.append(raw)
    header = orjson.dumps(doc)
    return b"".join([header, *buffers]), len(header)


def rows_from_inputs(doc: Mapping[str, Any], fields: Mapping[str, str], *, max_batch: int) -> list[dict[str, Any]]:
    """Rows of request fields from the inputs (one BYTES tensor of shape [N] per request field)."""
    tensors: dict[str, list[Any]] = {}
    for t in doc["inputs"]:
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
    lengths = {k: len(v) for k, v in tensors.items()}
    if len(set(lengths.values())) != 1:
        raise SchemaError(f"all inputs must have the same length; got lengths {lengths}")
    count = next(iter(lengths.values()))
    if count > max_batch:
        raise SchemaError(f"a request may carry at most {max_batch} rows; got {count}")
    return [{f: _from_text(f, kind, tensors[f][i]) for f, kind in fields.items()} for i in range(count)]


def _from_text(field: str, kind: str, value: Any) -> Any:
    """BYTES elements arrive as text; numeric fields become numbers (an empty string means missing)."""
    if not isinstance(value, str):
        return value  # the request schema says what was expected
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


#: v2 datatypes a numeric feature accepts (declared as FP64; FP32 is what many clients send)
NUMERIC = ("FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8")


def rows_from_feature_inputs(doc: Mapping[str, Any], categorical: Mapping[str, bool], *,
                             max_batch: int) -> list[dict[str, Any]]:
    """Rows of model features from raw feature tensors: one tensor of shape [N] per feature.

    ``categorical`` maps each of the model's features to whether it is a category (a BYTES tensor of its
    text, "" for missing) or a number (FP64, FP32 or an integer type; null in JSON or NaN for missing).
    """
    tensors: dict[str, list[Any]] = {}
    for t in doc["inputs"]:
        tname = t["name"]
        if tname not in categorical:
            raise SchemaError(f"input {tname!r} is not a feature of this model; its features are {list(categorical)}")
        dtype, data, shape = t.get("datatype"), t.get("data"), t.get("shape")
        if categorical[tname] and dtype != "BYTES":
            raise SchemaError(f"input {tname!r} is a categorical feature and must have datatype 'BYTES'; got {dtype!r}")
        if not categorical[tname] and dtype not in NUMERIC:
            raise SchemaError(f"input {tname!r} is a numeric feature and must have datatype 'FP64' (or another "
                              f"numeric type: {', '.join(NUMERIC[1:])}); got {dtype!r}")
        if not isinstance(data, list) or not isinstance(shape, list) or len(shape) != 1 or shape[0] != len(data):
            raise SchemaError(f"input {tname!r} must have shape [N] matching its data; got shape {shape!r} "
                              f"with {len(data) if isinstance(data, list) else 'no'} elements")
        tensors[tname] = [_feature_value(tname, categorical[tname], i, v) for i, v in enumerate(data)]
    missing = [f for f in categorical if f not in tensors]
    if missing:
        raise SchemaError(f"inputs {missing} are missing; the model needs one tensor per feature: {list(categorical)}")
    lengths = {k: len(v) for k, v in tensors.items()}
    if len(set(lengths.values())) > 1:
        raise SchemaError(f"all inputs must have the same length; got lengths {lengths}")
    count = next(iter(lengths.values()), 0)
    if count > max_batch:
        raise SchemaError(f"a request may carry at most {max_batch} rows; got {count}")
    return [{f: tensors[f][i] for f in categorical} for i in range(count)]


def _feature_value(name: str, categorical: bool, index: int, value: Any) -> Any:
    if categorical:
        if not isinstance(value, str):
            raise SchemaError(f"input {name!r} element {index} must be text; got {value!r}")
        return value or None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SchemaError(f"input {name!r} element {index} must be a number or null; got {value!r}")
    return None if math.isnan(value) else float(value)  # NaN means missing, as None does
