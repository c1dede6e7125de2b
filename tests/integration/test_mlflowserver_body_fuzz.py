"""A property-based fuzzer over the raw bytes of V2 requests: no 5xx, no echo, a healthy server after each.

schemathesis (test_mlflowserver_fuzz.py) types the body from the OpenAPI document and never
sends what these send: JSON of any shape and depth, bodies that are not JSON, binary-extension
requests with arbitrary ``Inference-Header-Content-Length`` headers, ``binary_data_size``
parameters and BYTES length prefixes, and gRPC ``ModelInferRequest`` messages with arbitrary
tensors and ``raw_input_contents``. One ``python -m mlflowserver`` on 127.0.0.1 (REST and gRPC)
serves the tiny pyfunc (inputs a: double, s: string, b: optional double). Every REST answer must
be below 500 and, when an error, a one-line ``{"error": ...}`` of bounded size; every gRPC status
must be OK or a client status (never INTERNAL/UNKNOWN) with bounded details; after every example
the server must still answer a valid request correctly. Bounded: ``EXAMPLES`` per test,
derandomized, no example database.
"""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from testbed.mlflow_cli import mlflowserver
from testbed.processes import free_port, process_env, running_server
from tests.integration.servers import write_tiny_pyfunc

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MODEL = "tiny"
EXAMPLES = 400
ANSWER_LIMIT = 4096  # bytes of an error answer (the message is at most 512 characters)
DATATYPES = ["FP64", "FP32", "FP16", "INT64", "INT32", "INT8", "UINT64", "UINT8", "BOOL", "BYTES"]
NAMES = ["a", "s", "b", "", "zz", "a" * 300]
CLIENT_STATUSES = {
    "OK",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "RESOURCE_EXHAUSTED",
    "UNAVAILABLE",
    "UNIMPLEMENTED",
}
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = write_tiny_pyfunc(tmp_path_factory.mktemp("fuzz") / "model")
    port, grpc_port = free_port(), free_port()
    cmd = mlflowserver(model, MODEL, port, grpc_port)
    with running_server(cmd, port, "/v2/health/ready", env=process_env(), timeout=180, cwd=REPO) as srv:
        srv.grpc_port = grpc_port
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            srv.stub = GRPCInferenceServiceStub(channel)
            yield srv


# ------------------------------------------------------------------ strategies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(
            st.sampled_from(["name", "shape", "datatype", "data", "parameters", "inputs", "x"]),
            children,
            max_size=5,
        ),
    ),
    max_leaves=30,
)
shapes = st.one_of(
    st.lists(st.integers(min_value=-3, max_value=2**63 - 1), max_size=4),
    json_values,
)


@st.composite
def tensors(draw):
    tensor = {
        "name": draw(st.sampled_from(NAMES) | st.text(max_size=10)),
        "shape": draw(shapes),
        "datatype": draw(st.sampled_from(DATATYPES) | st.text(max_size=6)),
        "data": draw(json_values),
    }
    if draw(st.booleans()):
        tensor["parameters"] = draw(
            st.dictionaries(
                st.sampled_from(["binary_data_size", "binary_data", "content_type", "x"]), scalars, max_size=2
            )
        )
    return {k: v for k, v in tensor.items() if draw(st.integers(0, 9)) > 0}


@st.composite
def inference_requests(draw):
    document = {"inputs": draw(st.lists(tensors(), max_size=4) | json_values)}
    if draw(st.booleans()):
        document["parameters"] = draw(
            st.dictionaries(st.sampled_from(["binary_data_output", "x", "scale"]), scalars, max_size=2)
        )
    if draw(st.booleans()):
        document["outputs"] = draw(
            st.lists(st.fixed_dictionaries({"name": st.sampled_from(["y", "zz"])}), max_size=2) | json_values
        )
    if draw(st.booleans()):
        document["id"] = draw(scalars)
    return json.dumps(document).encode()


@st.composite
def deep_json(draw):
    levels = draw(st.integers(min_value=1, max_value=200_000))
    opener = draw(st.sampled_from([b"[", b'{"a":', b'{"inputs":']))
    closer = b"]" if opener == b"[" else b"}"
    body = (
        opener * levels + draw(st.sampled_from([b"1", b"", b"null"])) + closer * draw(st.integers(0, levels))
    )
    prefix = draw(
        st.sampled_from([b"", b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": '])
    )
    return prefix + body


json_bodies = st.one_of(
    inference_requests(),
    deep_json(),
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
)


@st.composite
def binary_requests(draw):
    """(body, Inference-Header-Content-Length value): a JSON part, then tensor bytes."""
    elements = draw(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=12)), max_size=4))
    raw = b"".join(struct.pack("<I", length) + data for length, data in elements) + draw(
        st.binary(max_size=8)
    )
    size = draw(st.one_of(st.just(len(raw)), st.integers(-5, 2**40), scalars))
    inputs = [
        {"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]},
        {
            "name": draw(st.sampled_from(["s", "a", "zz"])),
            "shape": draw(shapes),
            "datatype": draw(st.sampled_from(DATATYPES)),
            "parameters": {"binary_data_size": size},
        },
    ]
    head = json.dumps({"inputs": draw(st.permutations(inputs))}).encode()
    header = draw(
        st.one_of(
            st.just(str(len(head))),
            st.integers(-2, len(head) + len(raw) + 2).map(str),
            # printable ASCII: a header value HTTP allows (uvicorn's parser answers the others)
            st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8),
        )
    )
    return head + raw, header


content_types = st.sampled_from(
    [
        None,
        "application/json",
        "text/plain",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
    ]
)


# ------------------------------------------------------------------ sending and judging


def post(server, path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in headers.items() if value is not None]
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace") + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, "connection closed without an answer"
            data += chunk
        header_block, _, answer = data.partition(b"\r\n\r\n")
        status = int(header_block.split()[1])
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in header_block.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(answer) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return status, answer


VALID = json.dumps(
    {
        "inputs": [
            {"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]},
            {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["ab"]},
        ]
    }
).encode()


def assert_healthy(server):
    status, answer = post(server, f"/v2/models/{MODEL}/infer", VALID, {"Content-Type": "application/json"})
    assert status == 200 and json.loads(answer)["outputs"][0]["data"] == [4.0], answer[:300]


def assert_client_answer(status: int, answer: bytes):
    assert status < 500, answer[:500]
    if status >= 400:
        assert len(answer) <= ANSWER_LIMIT, answer[:300]
        assert answer.startswith(b"{"), (status, answer[:300])
        message = json.loads(answer)["error"]
        assert isinstance(message, str) and "\n" not in message


@FUZZ_SETTINGS
@given(body=json_bodies, content_type=content_types, path=st.sampled_from(["v2", "v1"]))
def test_any_json_body_gets_a_client_answer(server, body, content_type, path):
    url = f"/v2/models/{MODEL}/infer" if path == "v2" else f"/v1/models/{MODEL}:predict"
    status, answer = post(server, url, body, {"Content-Type": content_type})
    assert_client_answer(status, answer)
    assert_healthy(server)


@FUZZ_SETTINGS
@given(request=binary_requests(), content_type=content_types)
def test_any_binary_extension_request_gets_a_client_answer(server, request, content_type):
    body, header = request
    headers = {"Content-Type": content_type, "Inference-Header-Content-Length": header}
    status, answer = post(server, f"/v2/models/{MODEL}/infer", body, headers)
    assert_client_answer(status, answer)
    assert_healthy(server)


@st.composite
def near_valid_grpc_requests(draw):
    """The model's two required inputs as raw contents, with arbitrary BYTES length prefixes."""
    rows = draw(st.integers(0, 3))
    elements = draw(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=8)), max_size=3))
    return pb.ModelInferRequest(
        model_name=MODEL,
        inputs=[
            pb.ModelInferRequest.InferInputTensor(name="a", datatype="FP64", shape=[rows]),
            pb.ModelInferRequest.InferInputTensor(
                name="s", datatype=draw(st.sampled_from(["BYTES", "FP64", "INT8"])), shape=[rows]
            ),
        ],
        raw_input_contents=[
            struct.pack(f"<{rows}d", *([1.0] * rows)),
            b"".join(struct.pack("<I", n) + d for n, d in elements) + draw(st.binary(max_size=4)),
        ],
    )


@st.composite
def grpc_requests(draw):
    tensors_ = []
    raw = []
    for _ in range(draw(st.integers(0, 3))):
        tensor = pb.ModelInferRequest.InferInputTensor(
            name=draw(st.sampled_from(NAMES)),
            datatype=draw(st.sampled_from(DATATYPES) | st.text(max_size=6)),
            shape=draw(st.lists(st.integers(0, 3) | st.integers(-3, 2**62), min_size=1, max_size=3)),
        )
        kind = draw(st.sampled_from(["fp64", "bytes", "int64", "bool", "none"]))
        if kind == "fp64":
            tensor.contents.fp64_contents.extend(draw(st.lists(st.floats(), max_size=4)))
        elif kind == "bytes":
            tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=8), max_size=4)))
        elif kind == "int64":
            tensor.contents.int64_contents.extend(
                draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4))
            )
        elif kind == "bool":
            tensor.contents.bool_contents.extend(draw(st.lists(st.booleans(), max_size=4)))
        tensors_.append(tensor)
        elements = draw(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=8)), max_size=3))
        raw.append(b"".join(struct.pack("<I", n) + d for n, d in elements) + draw(st.binary(max_size=16)))
    request = pb.ModelInferRequest(
        model_name=draw(st.sampled_from([MODEL, "nope", "m" * 1000])),
        inputs=tensors_,
        id=draw(st.text(max_size=10)),
    )
    if draw(st.booleans()):
        request.raw_input_contents.extend(
            raw[: draw(st.integers(0, len(raw) + 1))] + [b""] * draw(st.integers(0, 1))
        )
    return request


@FUZZ_SETTINGS
@given(request=st.one_of(grpc_requests(), near_valid_grpc_requests()))
def test_any_grpc_request_gets_a_client_status(server, request):
    try:
        server.stub.ModelInfer(request, timeout=60)
    except grpc.RpcError as error:
        assert error.code().name in CLIENT_STATUSES, f"{error.code().name}: {error.details()}"
        assert len(error.details() or "") <= 520
    assert_healthy(server)
