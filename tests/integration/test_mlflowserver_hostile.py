"""Hostile requests against the real runtime: raw bytes on a socket (REST) and kserve's gRPC stub.

One ``python -m mlflowserver`` on 127.0.0.1 (REST and gRPC) serves the tiny pyfunc (inputs
a: double, s: string, b: optional double) with small limits, so each limit is reached by a
small request. Every case (``CASES``) sends one class of hostile input and must get its status,
a one-line ``{"error": ...}`` naming the problem in at most ``MESSAGE_LIMIT`` characters (no echo)
within ``WITHIN`` seconds, and the server must still answer a valid request afterwards. Each
case's status, message, time and the server's RSS after it are recorded; with
``HOSTILE_INPUT_SAVE=1`` (``make docs-hostile``) they are saved to
``docs/figures/hostile-input.json``, which docs/reliability.md's table is generated from.

The property-based fuzzer over raw request bytes is ``test_mlflowserver_body_fuzz.py``.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from testbed.mlflow_cli import mlflowserver
from testbed.processes import free_port, process_env, running_server, tree_rss
from tests.integration.servers import write_tiny_pyfunc

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAVED = REPO / "docs" / "figures" / "hostile-input.json"
MODEL = "tiny"
MESSAGE_LIMIT = 600  # bytes of a whole error answer: the message is at most 512 characters
WITHIN = 20.0  # seconds any case may take (the slow body: body_timeout + slack)
LIMITS = {
    "max_body_bytes": 200_000,
    "max_rows": 1_000,
    "max_inflight": 1,
    "max_waiting": 1,
    "body_timeout": 3,
    "queue_timeout": 5,
}
LONG = "n" * 100_000  # a name that must never come back whole (under max_body_bytes)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = write_tiny_pyfunc(tmp_path_factory.mktemp("hostile") / "model")
    port, grpc_port = free_port(), free_port()
    cmd = mlflowserver(
        model, MODEL, port, grpc_port, *(f"--{name}={value}" for name, value in LIMITS.items())
    )
    with running_server(cmd, port, "/v2/health/ready", env=process_env(), timeout=180, cwd=REPO) as srv:
        srv.grpc_port = grpc_port
        yield srv


@pytest.fixture(scope="module")
def recorded():
    """Each case's outcome by name; saved for docs/reliability.md when HOSTILE_INPUT_SAVE=1."""
    outcomes: dict[str, dict] = {}
    yield outcomes
    if os.environ.get("HOSTILE_INPUT_SAVE") == "1":
        names = [case.name for case in CASES]
        if sorted(outcomes) == sorted(names):
            rows = [outcomes[name] for name in names]
            SAVED.write_text(json.dumps({"limits": LIMITS, "cases": rows}, indent=1) + "\n")


# ------------------------------------------------------------------ raw HTTP


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after answering


def raw_request(
    server, request: bytes, then: bytes = b"", pause: float = 0.0, probe_close: bool = False
) -> Answer:
    """Send ``request``; after ``pause`` seconds send ``then`` (if the server has not answered);
    with ``probe_close``, wait up to 2 s to see whether the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        if then:
            time.sleep(pause)
            try:
                sock.sendall(then)
            except OSError:  # answered and closed already (e.g. 413 before the body)
                pass
        return read_answer(sock, probe_close)


def read_answer(sock, probe_close: bool) -> Answer:
    """The HTTP answer on ``sock``; with ``probe_close``, whether the server then closes it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    closed = False
    if probe_close:
        sock.settimeout(2)
        try:
            closed = sock.recv(1) == b""
        except OSError:
            pass
    return Answer(status, headers, body, closed)


def http(
    path: str, body: bytes = b"", headers: dict | None = None, content_length: int | None = None
) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if "Transfer-Encoding" not in (headers or {}):
        lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


INFER = f"/v2/models/{MODEL}/infer"


def v2(inputs: list, **extra) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def column(name, values, datatype="FP64"):
    return {"name": name, "shape": [len(values)], "datatype": datatype, "data": values}


VALID = v2([column("a", [1.0]), column("s", ["ab"], "BYTES")])


def deep(levels: int) -> bytes:
    return (
        b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": '
        + b"[" * levels
        + b"1"
        + b"]" * levels
        + b"}]}"
    )


def binary_bytes_request(prefix: int, payload: bytes) -> tuple[bytes, dict]:
    """A binary-extension request whose one BYTES element declares ``prefix`` bytes."""
    data = struct.pack("<I", prefix) + payload
    head = json.dumps(
        {
            "inputs": [
                {"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]},
                {
                    "name": "s",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(data)},
                },
            ]
        }
    ).encode()
    return head + data, {"Inference-Header-Content-Length": str(len(head))}


def chunked(body: bytes, size: int = 16384) -> bytes:
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


# ------------------------------------------------------------------ gRPC


def grpc_infer(server, request: pb.ModelInferRequest):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        try:
            GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        except grpc.RpcError as error:
            return error.code().name, error.details() or ""
    return "OK", ""


def grpc_request(model=MODEL, a=(1.0,), s_name="s", rows=None, raw_s: bytes | None = None):
    rows = len(a) if rows is None else rows
    a_tensor = pb.ModelInferRequest.InferInputTensor(name="a", datatype="FP64", shape=[rows])
    s_tensor = pb.ModelInferRequest.InferInputTensor(name=s_name, datatype="BYTES", shape=[rows])
    if raw_s is None:
        a_tensor.contents.fp64_contents.extend(a)
        s_tensor.contents.bytes_contents.extend([b"ab"] * rows)
    request = pb.ModelInferRequest(model_name=model, inputs=[a_tensor, s_tensor])
    if raw_s is not None:
        request.raw_input_contents.extend([struct.pack(f"<{rows}d", *a), raw_s])
    return request


# ------------------------------------------------------------------ cases


@dataclass(frozen=True)
class Case:
    name: str
    what: str  # the class of input, as docs/reliability.md's table shows it
    status: int | str
    mentions: str  # a phrase the message must contain
    send: object  # (server) -> (status, headers, message bytes)
    closed: bool = False  # the server must close the connection


def rest(request: bytes, then: bytes = b"", pause: float = 0.0, probe_close: bool = False):
    def send(server):
        answer = raw_request(server, request, then, pause, probe_close)
        return answer.status, answer.headers, answer.body, answer.closed

    return send


def rest_slow_body(server):
    """Declares 100,000 bytes, sends 1.4 kB, then nothing."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(http(INFER, VALID[:1400].ljust(1400), {"Content-Type": "application/json"}, 100_000))
        answer = read_answer(sock, probe_close=True)
        return answer.status, answer.headers, answer.body, answer.closed


def rest_while_admissions_are_full(server):
    """Two slow bodies hold both admissions (max_inflight + max_waiting); a third request is refused."""
    holders = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(2)]
    try:
        for sock in holders:
            sock.sendall(http(INFER, b'{"inputs": [', {"Content-Type": "application/json"}, 10_000))
        time.sleep(0.5)
        answer = raw_request(
            server, http(INFER, VALID, {"Content-Type": "application/json"}), probe_close=True
        )
        headers = dict(answer.headers)
        if headers.get("retry-after") != "1":
            return 0, headers, b"no Retry-After: 1 header", answer.closed
        return answer.status, headers, answer.body, answer.closed
    finally:
        for sock in holders:
            sock.close()


def grpc_case(request_factory):
    def send(server):
        code, details = grpc_infer(server, request_factory())
        return code, {}, details.encode(), False

    return send


BAD_PREFIX, BAD_PREFIX_HEADERS = binary_bytes_request(1_000_000, b"ab")
TOO_MANY_ROWS = v2([column("a", [1.0] * 1001), column("s", ["ab"] * 1001, "BYTES")])

CASES = [
    Case(
        "deep-json-plain",
        "JSON nested 90,000 levels deep, `Content-Type: text/plain`",
        400,
        "nested too deeply",
        rest(http(INFER, deep(90_000), {"Content-Type": "text/plain"})),
    ),
    Case(
        "deep-json-json",
        "the same with `Content-Type: application/json`",
        400,
        "nested too deeply",
        rest(http(INFER, deep(90_000), {"Content-Type": "application/json"})),
    ),
    Case(
        "deep-json-990",
        "JSON nested 990 levels (under the parsers' limits)",
        400,
        "input 'a'",
        rest(http(INFER, deep(990), {"Content-Type": "application/json"})),
    ),
    Case(
        "deep-json-v1",
        "V1 body nested 90,000 levels",
        400,
        "request format",
        rest(
            http(
                f"/v1/models/{MODEL}:predict",
                b'{"instances": ' + b"[" * 90_000,
                {"Content-Type": "application/json"},
            )
        ),
    ),
    Case(
        "binary-prefix-past-end",
        "binary extension: a BYTES element's length prefix (1,000,000) longer than its 2 bytes",
        400,
        "length prefix",
        rest(http(INFER, BAD_PREFIX, {"Content-Type": "application/octet-stream", **BAD_PREFIX_HEADERS})),
    ),
    Case(
        "binary-data-output-string",
        '`"binary_data_output": "false"` (a string)',
        400,
        "must be a boolean",
        rest(
            http(
                INFER,
                v2(
                    [column("a", [1.0]), column("s", ["ab"], "BYTES")],
                    parameters={"binary_data_output": "false"},
                ),
            )
        ),
    ),
    Case(
        "long-input-name",
        "unknown input named with 100,000 characters",
        400,
        "unknown input 'nnnn",
        rest(http(INFER, v2([column("a", [1.0]), column("s", ["ab"], "BYTES"), column(LONG, [1.0])]))),
    ),
    Case(
        "long-output-name",
        "unknown requested output named with 100,000 characters",
        400,
        "unknown output 'nnnn",
        rest(http(INFER, v2([column("a", [1.0]), column("s", ["ab"], "BYTES")], outputs=[{"name": LONG}]))),
    ),
    Case(
        "long-model-name",
        "unknown model named with 10,000 characters in the path",
        404,
        "does not exist",
        rest(http(f"/v2/models/{'m' * 10_000}/infer", VALID)),
    ),
    Case(
        "declared-body-too-large",
        "`Content-Length` over `max_body_bytes` (the body is not read)",
        413,
        "limit of 200000 bytes",
        rest(
            http(INFER, b"", {"Content-Type": "application/json"}, 10_000_000),
            then=b"x" * 100_000,
            pause=0.5,
            probe_close=True,
        ),
        closed=True,
    ),
    Case(
        "chunked-body-too-large",
        "chunked body growing past `max_body_bytes`",
        413,
        "limit of 200000 bytes",
        rest(http(INFER, chunked(b"[" * 300_000), {"Transfer-Encoding": "chunked"}), probe_close=True),
        closed=True,
    ),
    Case(
        "too-many-rows",
        "1,001 rows (over `max_rows`)",
        413,
        "limit of 1000 rows",
        rest(http(INFER, TOO_MANY_ROWS)),
    ),
    Case(
        "slow-body",
        "declares `Content-Length: 100000`, sends 1.4 kB, then nothing",
        408,
        "not received within 3 s",
        rest_slow_body,
        closed=True,
    ),
    Case(
        "server-full",
        "a request while `max_inflight + max_waiting` requests are admitted (2 slow bodies)",
        503,
        "server busy",
        rest_while_admissions_are_full,
        closed=True,
    ),
    Case(
        "grpc-raw-prefix-past-end",
        "gRPC `raw_input_contents`: a BYTES length prefix past the end",
        "INVALID_ARGUMENT",
        "input 's': a BYTES element's 4-byte length prefix runs past the end",
        grpc_case(lambda: grpc_request(raw_s=struct.pack("<I", 1_000_000) + b"ab")),
    ),
    Case(
        "grpc-long-model-name",
        "gRPC: unknown model named with 100,000 characters",
        "NOT_FOUND",
        "does not exist",
        grpc_case(lambda: grpc_request(model="m" * 100_000)),
    ),
    Case(
        "grpc-long-input-name",
        "gRPC: unknown input named with 100,000 characters",
        "INVALID_ARGUMENT",
        "unknown input 'nnnn",
        grpc_case(lambda: grpc_request(s_name=LONG)),
    ),
    Case(
        "grpc-too-many-rows",
        "gRPC: 1,001 rows",
        "RESOURCE_EXHAUSTED",
        "limit of 1000 rows",
        grpc_case(lambda: grpc_request(a=(1.0,) * 1001)),
    ),
]


def assert_still_answers(server):
    answer = raw_request(server, http(INFER, VALID, {"Content-Type": "application/json"}))
    assert answer.status == 200, answer.body[:300]
    assert json.loads(answer.body)["outputs"][0]["data"] == [4.0]


def error_message(body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")  # gRPC details are the message itself
    return document["error"] if isinstance(document, dict) and "error" in document else body.decode()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_input(server, recorded, case):
    started = time.perf_counter()
    status, _, body, closed = case.send(server)
    seconds = time.perf_counter() - started
    message = error_message(body)
    recorded[case.name] = {
        "name": case.name,
        "what": case.what,
        "status": status,
        "message": message,
        "seconds": round(seconds, 2),
        "rss_mib": round(tree_rss(server.pid) / 2**20),
    }
    assert status == case.status, message[:300]
    assert len(body) <= MESSAGE_LIMIT and "\n" not in message, f"{len(body)} bytes: {message[:300]}"
    assert case.mentions in message, message
    assert seconds < WITHIN
    if case.closed:
        assert closed, "the connection was left open"
    assert_still_answers(server)
