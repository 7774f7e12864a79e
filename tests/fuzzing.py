"""Malformed requests for the fuzz tests of both engines (hypothesis strategies).

Bodies are drawn from three families: JSON of any shape (deep, huge numbers, NaN/Infinity
literals, strings of digits in other scripts), the right fields with values of any type, and
raw bytes (truncated PNG and .npy magic included), each under a random content type.
"""
from __future__ import annotations

import json

from hypothesis import strategies as st

CONTENT_TYPES = ("application/json", "application/octet-stream", "image/png", "text/plain",
                 "application/x-www-form-urlencoded", "application/x-npy")
_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**18)
            | st.floats() | st.text(max_size=12)
            | st.sampled_from(["²", "①", "--5", "7" * 400, "1e999", "-0", " 3", "Ⅻ"]))
json_values = st.recursive(_scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4),
                           max_leaves=24)
_generate = st.fixed_dictionaries({}, optional={
    "num_samples": json_values, "seed": json_values, "format": json_values,
    "grid": json_values})
_score = st.fixed_dictionaries({"instances": json_values}, optional={"dtype": json_values})
_v2_input = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["x", "z"]) | json_values, "shape": json_values,
    "datatype": st.sampled_from(["FP32", "UINT8", "INT64", "BYTES"]) | json_values,
    "data": json_values, "parameters": json_values})
_v2 = st.fixed_dictionaries({"inputs": st.lists(_v2_input, max_size=2) | json_values},
                            optional={"parameters": json_values, "outputs": json_values,
                                      "id": json_values})
_raw = (st.binary(max_size=300)
        | st.builds(lambda b: b"\x89PNG\r\n\x1a\n" + b, st.binary(max_size=200))
        | st.builds(lambda b: b"\x93NUMPY\x01\x00" + b, st.binary(max_size=200))
        | st.builds(lambda n: b"[" * n + b"]" * n, st.integers(900, 5000)))


def _encoded(fields) -> st.SearchStrategy[bytes]:
    return (fields | json_values).map(lambda v: json.dumps(v).encode())


def bodies(endpoint: str, content_types: tuple[str, ...] = CONTENT_TYPES
           ) -> st.SearchStrategy[tuple[bytes, str]]:
    """(body, content type) pairs for `endpoint`: "generate", "score" or "v2"."""
    fields = {"generate": _generate, "score": _score, "v2": _v2}[endpoint]
    return st.tuples(_encoded(fields) | _raw, st.sampled_from(content_types))


_binary_input = st.fixed_dictionaries(
    {"name": st.sampled_from(["x", "z"]), "datatype": st.sampled_from(["FP32", "UINT8", "FP16"]),
     "shape": st.lists(st.integers(0, 70), max_size=4),
     "parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-2, 600)
                                          | json_values})})


def _binary_body(header: dict, tail: bytes, cut: int | None) -> tuple[bytes, str]:
    head = json.dumps(header).encode()
    length = str(len(head)) if cut is None else str(cut)
    return head + tail, length


def binary_bodies() -> st.SearchStrategy[tuple[bytes, str]]:
    """(body, Inference-Header-Content-Length) pairs of Triton's binary tensor extension: the
    header right or wrong, inputs' binary_data_size right or wrong, tails of any length."""
    header = st.fixed_dictionaries(
        {"inputs": st.lists(_binary_input, max_size=2)},
        optional={"parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_output": st.booleans() | json_values}),
            "outputs": st.lists(st.fixed_dictionaries(
                {"name": st.sampled_from(["x", "energy", "percentile"])},
                optional={"parameters": json_values}), max_size=3)})
    cuts = st.none() | st.integers(-3, 400) | st.sampled_from([10**30, 0])
    return st.builds(_binary_body, header, st.binary(max_size=600), cuts)


def check_answer(status: int, content_type: str, text: str) -> None:
    """Never a 5xx; every error a one-line JSON {"error": ...}."""
    assert status < 500, (status, text[:300])
    if status >= 400:
        assert content_type.startswith("application/json"), (status, content_type, text[:200])
        assert "\n" not in text.strip(), text[:300]
        assert isinstance(json.loads(text)["error"], str)
