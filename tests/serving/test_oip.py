"""The v2 binary tensor extension: decoded exactly as tritonclient encodes, malformed bodies are 4xx errors."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from loopml.errors import SchemaError
from loopml.serving import oip

FIELDS = {"carrier": "string", "flight": "int", "sched_dep": "timestamp"}


def _binary_request(tensors: dict[str, tuple[str, np.ndarray]], **extra: object) -> tuple[bytes, str]:
    """A request body laid out as tritonclient lays it out: JSON header, then each input's raw bytes."""
    inputs, blobs = [], []
    for name, (dtype, arr) in tensors.items():
        if dtype == "BYTES":
            ser = serialize_byte_tensor(arr)
            raw = ser.item() if ser.size else b""  # as tritonclient's InferInput does
        else:
            raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        inputs.append({"name": name, "datatype": dtype, "shape": list(arr.shape),
                       "parameters": {"binary_data_size": len(raw)}})
        blobs.append(raw)
    header = json.dumps({"inputs": inputs, **extra}).encode()
    return header + b"".join(blobs), str(len(header))


@given(st.lists(st.text(max_size=12), min_size=0, max_size=20))
def test_bytes_tensor_round_trips_with_tritonclients_encoding(values):
    arr = np.array([v.encode() for v in values], dtype=np.object_)
    body, n = _binary_request({"carrier": ("BYTES", arr)})
    doc = oip.decode_request(body, n)
    assert doc["inputs"][0]["data"] == values


@pytest.mark.parametrize("dtype", ["FP64", "FP32", "INT64", "INT32", "UINT8", "BOOL"])
def test_fixed_size_tensors_decode_little_endian(dtype):
    np_type = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "INT32": np.int32, "UINT8": np.uint8,
               "BOOL": np.bool_}[dtype]
    arr = np.array([1, 0, 3, 250], dtype=np_type)
    body, n = _binary_request({"x": (dtype, arr)})
    assert oip.decode_request(body, n)["inputs"][0]["data"] == arr.tolist()


def test_mixed_json_and_binary_inputs_in_one_request():
    body, n = _binary_request({"carrier": ("BYTES", np.array([b"UA", b"DL"], dtype=np.object_))})
    header = json.loads(body[:int(n)])
    header["inputs"].append({"name": "flight", "datatype": "BYTES", "shape": [2], "data": ["1", "2"]})
    h = json.dumps(header).encode()
    doc = oip.decode_request(h + body[int(n):], str(len(h)))
    assert [t["data"] for t in doc["inputs"]] == [["UA", "DL"], ["1", "2"]]


@pytest.mark.parametrize(("tamper", "words"), [
    (lambda body, n: (body + b"xx", n), ["2 bytes", "binary_data_size"]),            # leftover bytes
    (lambda body, n: (body[:-1], n), ["carrier", "declares"]),                       # short data
    (lambda body, n: (body, "abc"), ["Inference-Header-Content-Length", "'abc'"]),   # not a number
    (lambda body, n: (body, str(len(body) + 5)), ["Inference-Header-Content-Length"]),
    (lambda body, n: (body, "3"), ["JSON"]),                                          # header cut mid-JSON
])
def test_malformed_binary_bodies_are_schema_errors(tamper, words):
    body, n = _binary_request({"carrier": ("BYTES", np.array([b"UA", b"DL"], dtype=np.object_))})
    with pytest.raises(SchemaError) as e:
        oip.decode_request(*tamper(body, n))
    for w in words:
        assert w in str(e.value)


def test_bytes_element_count_must_match_shape_and_text_must_be_utf8():
    raw = struct.pack("<I", 2) + b"UA"
    header = json.dumps({"inputs": [{"name": "carrier", "datatype": "BYTES", "shape": [2],
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    with pytest.raises(SchemaError, match=r"shape \[2\] \(2 elements\).*holds 1"):
        oip.decode_request(header + raw, str(len(header)))
    raw = struct.pack("<I", 2) + b"\xff\xfe"
    header = json.dumps({"inputs": [{"name": "carrier", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    with pytest.raises(SchemaError, match="'carrier'.*not UTF-8"):
        oip.decode_request(header + raw, str(len(header)))


def test_fixed_size_data_must_match_shape_and_datatype_must_be_known():
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP64", "shape": [3],
                                     "parameters": {"binary_data_size": 16}}]}).encode()
    with pytest.raises(SchemaError, match=r"'x' has shape \[3\] of FP64 \(24 bytes\).*16"):
        oip.decode_request(header + b"\0" * 16, str(len(header)))
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP128", "shape": [1],
                                     "parameters": {"binary_data_size": 16}}]}).encode()
    with pytest.raises(SchemaError, match="unknown datatype 'FP128'"):
        oip.decode_request(header + b"\0" * 16, str(len(header)))


def test_binary_outputs_follow_per_output_flag_then_request_default():
    assert oip.binary_outputs({"inputs": []}, ["score"]) == set()
    assert oip.binary_outputs({"parameters": {"binary_data_output": True}}, ["score"]) == {"score"}
    assert oip.binary_outputs({"outputs": [{"name": "score", "parameters": {"binary_data": True}}]}, ["score"]) == {"score"}
    assert oip.binary_outputs({"outputs": [{"name": "score", "parameters": {"binary_data": False}}],
                               "parameters": {"binary_data_output": True}}, ["score"]) == set()
    with pytest.raises(SchemaError, match="'proba'.*outputs are \\['score'\\]"):
        oip.binary_outputs({"outputs": [{"name": "proba"}]}, ["score"])


def test_encoded_binary_response_is_decoded_by_tritonclient():
    from tritonclient.http import InferResult

    doc = {"model_name": "m", "outputs": [{"name": "score", "datatype": "FP64", "shape": [3], "data": [0.1, 0.5, 1.0]}]}
    body, n = oip.encode_response(doc, {"score"})
    assert n is not None and body[n:] == np.array([0.1, 0.5, 1.0], "<f8").tobytes()
    result = InferResult.from_response_body(body, header_length=n)
    assert result.as_numpy("score").tolist() == [0.1, 0.5, 1.0]
    plain, none = oip.encode_response({"outputs": [{"name": "score", "datatype": "FP64", "shape": [1], "data": [0.2]}]},
                                      set())
    assert none is None and json.loads(plain)["outputs"][0]["data"] == [0.2]


def test_deserialize_agrees_on_bytes_layout():
    # the layout we decode is the one tritonclient itself reads back
    arr = np.array([b"EWR", b"", b"JFK"], dtype=np.object_)
    assert deserialize_bytes_tensor(serialize_byte_tensor(arr).item()).tolist() == arr.tolist()


def test_compressed_bodies_inflate_and_bombs_are_refused():
    data = b'{"inputs": []}'
    assert oip.decode_body(gzip.compress(data), "gzip", limit=100) == data
    assert oip.decode_body(zlib.compress(data), "deflate", limit=100) == data
    with pytest.raises(SchemaError, match="limit of 1000 bytes"):
        oip.decode_body(gzip.compress(b"0" * 10_000_000), "gzip", limit=1000)
    with pytest.raises(SchemaError, match="'br'"):
        oip.decode_body(data, "br", limit=100)
    with pytest.raises(SchemaError, match="not valid gzip"):
        oip.decode_body(b"plain", "gzip", limit=100)


def test_rows_from_inputs_converts_text_by_field_kind():
    doc = {"inputs": [{"name": "carrier", "datatype": "BYTES", "shape": [2], "data": ["UA", "DL"]},
                      {"name": "flight", "datatype": "BYTES", "shape": [2], "data": ["1545", ""]},
                      {"name": "sched_dep", "datatype": "BYTES", "shape": [2], "data": ["2013-03-01T14:15:00Z"] * 2}]}
    rows = oip.rows_from_inputs(doc, FIELDS, max_batch=10)
    assert rows[0] == {"carrier": "UA", "flight": 1545, "sched_dep": "2013-03-01T14:15:00Z"}
    assert rows[1]["flight"] is None
    with pytest.raises(SchemaError, match="at most 1 rows; got 2"):
        oip.rows_from_inputs(doc, FIELDS, max_batch=1)
