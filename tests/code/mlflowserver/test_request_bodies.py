"""Unit tests of mlflowserver.request_bodies: V2 infer bodies (JSON and the binary extension) to
kserve requests, and the 400s naming what is wrong with a malformed one."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest

from mlflowserver.request_bodies import binary_request, json_request


def test_json_bodies_are_inference_requests_and_malformed_ones_are_named():
    request = json_request(
        b'{"id": "7", "inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}]}'
    )
    assert request.id == "7" and request.inputs[0].name == "a"
    with pytest.raises(
        InvalidInput, match=r"invalid request body: malformed JSON at position 11 \(Expecting"
    ):
        json_request(b'{"inputs": ')
    with pytest.raises(InvalidInput, match="invalid request body: inputs: Field required"):
        json_request(b'{"rows": []}')
    with pytest.raises(InvalidInput, match="^invalid request body: not UTF-8 text$"):
        json_request(b'{"inputs": "\xff"}')


def test_binary_requests_are_parsed_by_kserve_and_malformed_ones_are_400():
    a = InferInput("a", [2], "FP64")
    a.set_data_from_numpy(np.array([1.0, 2.0]), binary_data=True)
    body, json_length = InferRequest("m", [a]).to_rest()
    request = binary_request(body, str(json_length), "m")
    assert request.inputs[0].data == [1.0, 2.0]
    for header in ("x", "0", str(len(body) + 1)):
        with pytest.raises(InvalidInput, match="inference-header-content-length header must be the length"):
            binary_request(body, header, "m")
    with pytest.raises(InvalidInput, match="binary_data_size, datatype and shape match"):
        binary_request(body[:-4], str(json_length), "m")
    bad_utf8 = InferInput("s", [1], "BYTES")
    bad_utf8.set_data_from_numpy(np.array([b"\xff"], dtype=object), binary_data=True)
    body, json_length = InferRequest("m", [bad_utf8]).to_rest()
    with pytest.raises(InvalidInput, match="BYTES data are not valid UTF-8"):
        binary_request(body, str(json_length), "m")


def test_a_bytes_length_prefix_past_the_end_of_a_binary_body_is_400():
    head = b'{"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]}'
    body = head + struct.pack("<I", 1_000_000) + b"ab"
    with pytest.raises(InvalidInput, match="length prefix runs past the end"):
        binary_request(body, str(len(head)), "m")


@pytest.mark.parametrize("levels", [2_000, 100_000])
def test_deeply_nested_json_is_400_naming_the_depth(levels):
    body = b'{"inputs": [{"name": "a", "data": ' + b"[" * levels + b"1" + b"]" * levels + b"}]}"
    with pytest.raises(InvalidInput, match="^invalid request body: JSON nested too deeply$"):
        json_request(body)
    with pytest.raises(InvalidInput, match="depth limit exceeded"):
        binary_request(b"[" * levels, str(levels), "m")


def test_json_numbers_nan_and_infinity_are_accepted_as_python_clients_send_them():
    request = json_request(
        b'{"inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "data": [NaN, Infinity]}]}'
    )
    assert np.isnan(request.inputs[0].data[0]) and request.inputs[0].data[1] == np.inf
