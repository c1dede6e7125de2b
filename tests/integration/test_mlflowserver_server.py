"""The real runtime (`python -m mlflowserver`) as a subprocess on 127.0.0.1, called over HTTP.

One server per module, on the tiny pyfunc from tests.integration.servers (inputs a: double,
s: string, b: optional double; output y = a*2 + len(s) (+ b)). Calls go through raw HTTP
(requests) and through the kserve SDK's own REST client (kserve.InferenceRESTClient). Models this
project did not write, every client and gRPC: tests/integration/test_foreign_models.py.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import requests
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from testbed.mlflow_cli import mlflowserver
from testbed.processes import free_port, listening_addresses, process_env, running_server
from tests.integration.servers import write_tiny_pyfunc

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MODEL = "tiny"
MARKER = "PAYLOAD-MARKER-7f3a"  # must never be echoed back in an error body


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_pyfunc(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def server(model_dir):
    port = free_port()
    cmd = mlflowserver(model_dir, MODEL, port)
    with running_server(cmd, port, "/v2/health/ready", env=process_env(), timeout=120, cwd=str(REPO)) as srv:
        yield srv


def v2_body(a, s, **extra_inputs):
    inputs = [
        {"name": "a", "shape": [len(a)], "datatype": "FP64", "data": a},
        {"name": "s", "shape": [len(s)], "datatype": "BYTES", "data": s},
    ]
    for name, (datatype, data) in extra_inputs.items():
        inputs.append({"name": name, "shape": [len(data)], "datatype": datatype, "data": data})
    return {"inputs": inputs}


def infer(server, body, model=MODEL, **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(
        f"{server.base_url}/v2/models/{model}/infer",
        data=data,
        headers={"content-type": "application/json"},
        timeout=30,
        **kw,
    )


def assert_valid_request_works(server):
    r = infer(server, v2_body([1.0, 2.0], ["ab", "c"]))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [4.0, 5.0]


# ------------------------------------------------------------------ health, metadata, binding


def test_health_and_model_endpoints(server):
    base = server.base_url
    assert requests.get(f"{base}/v2/health/live", timeout=10).json() == {"live": True}
    assert requests.get(f"{base}/v2/health/ready", timeout=10).json() == {"ready": True}
    r = requests.get(f"{base}/v2/models/{MODEL}/ready", timeout=10)
    assert r.status_code == 200 and r.json() == {"name": MODEL, "ready": True}
    meta = requests.get(f"{base}/v2/models/{MODEL}", timeout=10).json()
    assert meta["name"] == MODEL and "versions" not in meta
    assert meta["inputs"] == [
        {"name": "a", "datatype": "FP64", "shape": [-1]},
        {"name": "s", "datatype": "BYTES", "shape": [-1]},
        {"name": "b", "datatype": "FP64", "shape": [-1]},
    ]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP64", "shape": [-1]}]


def test_model_versions_are_404_naming_model_and_version(server):
    base = server.base_url
    for url in (
        f"{base}/v2/models/{MODEL}/versions/3",
        f"{base}/v2/models/{MODEL}/versions/3/ready",
        f"{base}/v2/models/{MODEL}?model_version=3",
        f"{base}/v2/models/{MODEL}/ready?model_version=3",
    ):
        r = requests.get(url, timeout=10)
        assert r.status_code == 404 and r.json()["error"].startswith(f"model '{MODEL}' has no version '3'"), (
            url
        )
    r = infer(server, v2_body([1.0], ["x"]), params={"model_version": "3"})
    assert r.status_code == 404
    assert requests.get(f"{base}/v2/models/{MODEL}?model_version=", timeout=10).status_code == 200


def test_repository_load_is_404_for_unknown_models_and_unload_is_refused(server):
    base = f"{server.base_url}/v2/repository/models"
    r = requests.post(f"{base}/nope/load", timeout=10)
    assert r.status_code == 404 and "nope" in r.json()["error"]
    assert requests.post(f"{base}/{MODEL}/load", timeout=10).json() == {"name": MODEL, "load": True}
    r = requests.post(f"{base}/{MODEL}/unload", timeout=10)
    assert r.status_code == 400 and "cannot be unloaded" in r.json()["error"]
    assert requests.post(f"{base}/nope/unload", timeout=10).status_code == 404
    assert_valid_request_works(server)


def test_v1_explain_is_404(server):
    r = requests.post(f"{server.base_url}/v1/models/{MODEL}:explain", json={"instances": []}, timeout=10)
    assert r.status_code == 404 and r.json() == {"error": f"model '{MODEL}' has no explainer"}


def test_unknown_model_is_404(server):
    assert requests.get(f"{server.base_url}/v2/models/nope", timeout=10).status_code == 404
    assert requests.get(f"{server.base_url}/v2/models/nope/ready", timeout=10).status_code == 404
    r = infer(server, v2_body([1.0], ["x"]), model="nope")
    assert r.status_code == 404 and "nope" in r.json()["error"]


def test_listens_on_loopback_only(server):
    addresses = listening_addresses(server.port)
    if not addresses:
        pytest.skip("/proc/net/tcp not available")
    assert set(addresses) == {"127.0.0.1"}, addresses
    assert f"Uvicorn running on http://127.0.0.1:{server.port}" in server.log_text()


# ------------------------------------------------------------------ predictions


def test_v2_infer_raw_http(server):
    r = infer(server, v2_body([1.0, 2.5], ["ab", "c"], b=("FP64", [10.0, None])))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == MODEL and "model_version" not in body and "parameters" not in body
    (out,) = body["outputs"]
    assert out == {"name": "y", "shape": [2], "datatype": "FP64", "data": [14.0, 6.0]}


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_v2_json_without_a_json_content_type(server, content_type):
    headers = {"content-type": content_type} if content_type else {}
    r = requests.post(
        f"{server.base_url}/v2/models/{MODEL}/infer",
        data=json.dumps(v2_body([1.0], ["ab"])),
        headers=headers,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [4.0]


def test_v2_infer_int_and_n_by_1(server):
    body = {
        "inputs": [
            {"name": "a", "shape": [2, 1], "datatype": "INT64", "data": [[3], [4]]},
            {"name": "s", "shape": [2, 1], "datatype": "BYTES", "data": [["x"], ["yy"]]},
        ]
    }
    r = infer(server, body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [7.0, 10.0]


def test_v1_predict_raw_http(server):
    r = requests.post(
        f"{server.base_url}/v1/models/{MODEL}:predict",
        json={"instances": [{"a": 1, "s": "xy"}, {"a": 2.5, "s": "z", "b": 10}]},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [4.0, 16.0]}
    r = requests.post(
        f"{server.base_url}/v1/models/{MODEL}:predict", json={"inputs": {"a": [0], "s": ["abc"]}}, timeout=30
    )
    assert r.json() == {"predictions": [3.0]}


def _sdk_request(binary: bool) -> InferRequest:
    a = InferInput("a", [3], "FP64")
    a.set_data_from_numpy(np.array([1.0, 2.0, 3.0]), binary_data=binary)
    s = InferInput("s", [3], "BYTES")
    s.set_data_from_numpy(np.array(["a", "bb", "ccc"], dtype=object), binary_data=binary)
    return InferRequest(model_name=MODEL, infer_inputs=[a, s], request_id="sdk-1")


def test_kserve_sdk_rest_client(server):
    async def go():
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30)) as client:
            assert await client.is_server_live(server.base_url)
            assert await client.is_server_ready(server.base_url)
            assert await client.is_model_ready(server.base_url, MODEL)
            json_resp = await client.infer(server.base_url, _sdk_request(binary=False), model_name=MODEL)
            binary_resp = await client.infer(server.base_url, _sdk_request(binary=True), model_name=MODEL)
            with pytest.raises(httpx.HTTPStatusError) as bad:
                await client.infer(
                    server.base_url,
                    InferRequest(MODEL, [InferInput("a", [1], "FP64", [1.0])]),
                    model_name=MODEL,
                )
        async with InferenceRESTClient(RESTConfig(protocol="v1", retries=0, timeout=30)) as client:
            v1 = await client.infer(server.base_url, {"instances": [{"a": 1, "s": "x"}]}, model_name=MODEL)
        return json_resp, binary_resp, bad.value, v1

    json_resp, binary_resp, bad, v1 = asyncio.run(go())
    for resp in (json_resp, binary_resp):
        out = resp.get_output_by_name("y")
        assert out.datatype == "FP64" and out.shape == [3]
        np.testing.assert_allclose(out.as_numpy(), [3.0, 6.0, 9.0])
    assert json_resp.id == "sdk-1"
    assert bad.response.status_code == 400 and "missing required input 's'" in str(bad)
    assert v1 == {"predictions": [3.0]}


# ------------------------------------------------------------------ bad requests (table-driven)

BAD = [
    (
        "malformed-json",
        b'{"inputs": [{"name": "a", "data": ["' + MARKER.encode() + b'"',
        400,
        "malformed JSON",
    ),
    ("not-an-inference-request", {"rows": [MARKER]}, 400, "inputs: Field required"),
    (
        "shape-not-a-list",
        {"inputs": [{"name": "a", "shape": MARKER, "datatype": "FP64", "data": [1]}]},
        400,
        "shape",
    ),
    ("unknown-input", v2_body([1.0], ["x"], zz=("FP64", [1.0])), 400, "unknown input 'zz'"),
    ("missing-input", {"inputs": v2_body([1.0], [MARKER])["inputs"][1:]}, 400, "missing required input 'a'"),
    (
        "bytes-for-double",
        {
            "inputs": [
                {"name": "a", "shape": [1], "datatype": "BYTES", "data": [MARKER]},
                {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["x"]},
            ]
        },
        400,
        "input 'a' has datatype BYTES",
    ),
    (
        "fp64-for-string",
        {
            "inputs": [
                {"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]},
                {"name": "s", "shape": [1], "datatype": "FP64", "data": [1.0]},
            ]
        },
        400,
        "input 's' has datatype FP64",
    ),
    (
        "string-in-fp64",
        {
            "inputs": [
                {"name": "a", "shape": [1], "datatype": "FP64", "data": [MARKER]},
                {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["x"]},
            ]
        },
        400,
        "input 'a': expected numbers",
    ),
    (
        "length-ne-shape",
        {
            "inputs": [
                {"name": "a", "shape": [3], "datatype": "FP64", "data": [1.0, 2.0]},
                {"name": "s", "shape": [3], "datatype": "BYTES", "data": ["x", "y", MARKER]},
            ]
        },
        400,
        "data has 2 elements but shape [3] needs 3",
    ),
    ("different-lengths", v2_body([1.0, 2.0], [MARKER]), 400, "different lengths"),
    ("empty-batch", v2_body([], []), 400, "empty batch"),
    (
        "bad-rank",
        {
            "inputs": [
                {"name": "a", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]},
                {"name": "s", "shape": [1], "datatype": "BYTES", "data": [MARKER]},
            ]
        },
        400,
        "bad shape [1, 2]: expected [n] or [n, 1]",
    ),
    (
        "null-in-required-input",
        v2_body([1.0, None], ["x", MARKER]),
        400,
        "input 'a': null at row 1 of a required column",
    ),
    (
        "model-rejects-input",
        v2_body([float("nan")], [MARKER]),
        400,
        "model rejected the input: a must not be missing",
    ),
    ("model-fails", v2_body([1.0], ["boom"]), 500, "model prediction failed (RuntimeError)"),
]


@pytest.mark.parametrize("body,status,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_v2_bad_requests(server, body, status, message):
    r = infer(server, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error
    for leak in (MARKER, "Traceback", "secret", 'File "'):
        assert leak not in r.text
    assert_valid_request_works(server)


@pytest.mark.parametrize(
    "body,message",
    [
        (b'{"instances": [{"a": 1, "s": "x"', "Unrecognized request format"),
        (json.dumps({"instances": [{"a": 1, "s": "x", "c": MARKER}]}), "unknown input 'c'"),
        (json.dumps({"instances": [{"s": MARKER}]}), "missing required input 'a'"),
    ],
    ids=["malformed-json", "unknown-input", "missing-input"],
)
def test_v1_bad_requests(server, body, message):
    r = requests.post(
        f"{server.base_url}/v1/models/{MODEL}:predict",
        data=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    assert message in r.json()["error"] and MARKER not in r.text
    assert_valid_request_works(server)


def test_one_row_latency(server):
    body = json.dumps(v2_body([1.0], ["abc"]))
    with requests.Session() as session:
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            r = session.post(
                f"{server.base_url}/v2/models/{MODEL}/infer",
                data=body,
                headers={"content-type": "application/json"},
                timeout=30,
            )
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200
    median_ms = statistics.median(times) * 1000
    print(f"\nmlflowserver 1-row V2 latency: median {median_ms:.1f} ms, max {max(times) * 1000:.1f} ms")
    assert median_ms < 500


# ------------------------------------------------------------------ fail fast


def test_fails_fast_when_registry_unreachable():
    dead = free_port()  # nothing listens there
    env = process_env(
        {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{dead}", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    )
    t0 = time.monotonic()
    proc = subprocess.run(
        mlflowserver("models:/CaliforniaHousingRegressor@champion", "x", free_port()),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(REPO),
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "mlflowserver: cannot load model 'models:/CaliforniaHousingRegressor@champion':"
    ), last
    assert f"model registry at http://127.0.0.1:{dead} is unreachable" in last, last
    assert "Traceback" not in proc.stderr
    assert elapsed < 60
