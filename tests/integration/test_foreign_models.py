"""The V2 runtime on MLflow models this project did not write, through every V2 client.

One ``python -m mlflowserver`` (REST and gRPC, on 127.0.0.1) per model of tests/foreign_models.py,
started in parallel once for the module. Each model is called through raw HTTP (with a JSON
Content-Type, without one, and with curl -d's form type), tritonclient.http (JSON and binary),
the kserve SDK's InferenceRESTClient (JSON and binary) and tritonclient.grpc (in a process of
its own: tests/integration/triton_grpc_client.py); every answer must equal the in-process
``mlflow.pyfunc.load_model(path).predict`` to 1e-9. Then a table of malformed requests per
model, over REST and gRPC: each a 4xx (gRPC INVALID_ARGUMENT / NOT_FOUND) naming the problem,
never a 5xx.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as triton_http
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from testbed.mlflow_cli import mlflowserver
from testbed.processes import free_port, listening_addresses, process_env, running_servers
from tests import foreign_models
from tests.foreign_models import ForeignModel

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MODELS = list(foreign_models.BUILDERS)
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}

# What each model's metadata advertises: {output: (datatype, shape)}.
OUTPUTS = {
    "diabetes": {"output-0": ("FP64", [-1])},
    "iris-int": {"output-0": ("INT64", [-1])},
    "iris-str": {"output-0": ("BYTES", [-1])},
    "tensor": {"output-0": ("FP64", [-1, 3])},
    "text": {"score": ("FP64", [-1]), "words": ("INT64", [-1])},
    "params": {"y": ("FP64", [-1]), "lower": ("FP64", [-1]), "upper": ("FP64", [-1])},
}


@dataclass
class Served:
    model: ForeignModel
    base_url: str
    grpc_port: int
    expected: dict  # {output: array} from the in-process predict of the request

    @property
    def infer_url(self) -> str:
        return f"{self.base_url}/v2/models/{self.model.name}/infer"


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict[str, Served]:
    directory = tmp_path_factory.mktemp("foreign")
    built = [foreign_models.build(name, directory) for name in MODELS]
    ports = [(free_port(), free_port()) for _ in built]
    specs = [
        (
            mlflowserver(model.path, model.name, port, grpc_port),
            port,
            f"/v2/models/{model.name}/ready",
        )
        for model, (port, grpc_port) in zip(built, ports)
    ]
    with running_servers(specs, env=process_env(), timeout=240, cwd=REPO) as servers:
        yield {
            model.name: Served(model, server.base_url, grpc_port, model.predict())
            for model, server, (_, grpc_port) in zip(built, servers, ports)
        }


# ------------------------------------------------------------------ request and answer helpers


def json_data(values: np.ndarray) -> list:
    """Flat JSON data; NaN (a missing value here) as null."""
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values.reshape(-1).tolist()]


def v2_body(model: ForeignModel) -> dict:
    inputs = [
        {"name": n, "shape": list(v.shape), "datatype": d, "data": json_data(v)} for n, d, v in model.inputs
    ]
    body = {"id": "req-1", "inputs": inputs}
    if model.params:
        body["parameters"] = model.params
    return body


def rest_outputs(body: dict) -> dict:
    return {o["name"]: (o["datatype"], o["shape"], o["data"]) for o in body["outputs"]}


def assert_equal_to_in_process(got: dict, expected: dict) -> None:
    """``got``: {output: (datatype, shape, flat or nested data)}; equal to the in-process arrays to 1e-9."""
    assert set(got) == set(expected), (sorted(got), sorted(expected))
    for name, want in expected.items():
        datatype, shape, data = got[name]
        assert list(shape) == list(want.shape), name
        values = np.asarray(data, dtype=object).reshape(-1)
        if want.dtype.kind in "OUS":
            assert datatype == "BYTES"
            assert [v.decode() if isinstance(v, bytes) else v for v in values] == [
                str(v) for v in want.reshape(-1)
            ]
        else:
            assert datatype == {"f": "FP64", "i": "INT64"}[want.dtype.kind], name
            np.testing.assert_allclose(
                values.astype(float), want.reshape(-1).astype(float), rtol=1e-9, atol=1e-9
            )


def post(url: str, body, content_type: str | None = "application/json") -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": content_type} if content_type else {}
    return requests.post(url, data=data, headers=headers, timeout=60)


# ------------------------------------------------------------------ metadata, binding


@pytest.mark.parametrize("name", MODELS)
def test_metadata_lists_the_signatures_outputs(served, name):
    s = served[name]
    meta = requests.get(f"{s.base_url}/v2/models/{name}", timeout=30).json()
    assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == OUTPUTS[name]
    assert [i["name"] for i in meta["inputs"]] == [n for n, _, _ in s.model.inputs]
    assert "versions" not in meta  # the spec: omit what the server does not provide
    if name == "tensor":
        assert meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]


def test_rest_and_grpc_listen_on_loopback_only(served):
    s = served["diabetes"]
    for port in (int(s.base_url.rsplit(":", 1)[1]), s.grpc_port):
        addresses = listening_addresses(port)
        if not addresses:
            pytest.skip("/proc/net/tcp not available")
        assert set(addresses) <= LOOPBACK, (port, addresses)


def test_grpc_repository_and_readiness_with_kserves_own_stub(served):
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    with grpc.insecure_channel(f"127.0.0.1:{served['text'].grpc_port}") as channel:
        stub = GRPCInferenceServiceStub(channel)
        assert stub.ModelReady(pb.ModelReadyRequest(name="text")).ready
        assert stub.ServerMetadata(pb.ServerMetadataRequest()).extensions == [
            "binary_tensor_data",
            "parameters",
        ]
        assert stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="text")).isLoaded
        for call, status in [
            (
                lambda: stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="nope")),
                grpc.StatusCode.NOT_FOUND,
            ),
            (
                lambda: stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="text")),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            (
                lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="text", version="7")),
                grpc.StatusCode.NOT_FOUND,
            ),
        ]:
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == status
        assert stub.ModelReady(pb.ModelReadyRequest(name="text")).ready  # still loaded


def test_server_metadata_lists_the_extensions_it_implements(served):
    meta = requests.get(f"{served['diabetes'].base_url}/v2", timeout=30).json()
    assert meta["extensions"] == ["binary_tensor_data", "parameters"]


# ------------------------------------------------------------------ every client, every model


@pytest.mark.parametrize("content_type", ["application/json", None, "application/x-www-form-urlencoded"])
@pytest.mark.parametrize("name", MODELS)
def test_raw_http(served, name, content_type):
    s = served[name]
    response = post(s.infer_url, v2_body(s.model), content_type)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "req-1" and body["model_name"] == name and "model_version" not in body
    assert all("parameters" not in o for o in body["outputs"])
    assert_equal_to_in_process(rest_outputs(body), s.expected)


def triton_inputs(model: ForeignModel, binary: bool) -> list:
    inputs = []
    for name, datatype, values in model.inputs:
        tensor = triton_http.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def triton_outputs(result) -> dict:
    return {
        o["name"]: (o["datatype"], o["shape"], result.as_numpy(o["name"]))
        for o in result.get_response()["outputs"]
    }


@pytest.mark.parametrize("name", MODELS)
def test_tritonclient_http_json_mode_sends_no_content_type(served, name, capsys):
    s = served[name]
    with triton_http.InferenceServerClient(url=s.base_url.removeprefix("http://"), verbose=True) as client:
        requested = [triton_http.InferRequestedOutput(o, binary_data=False) for o in s.expected]
        capsys.readouterr()
        result = client.infer(
            name, triton_inputs(s.model, binary=False), outputs=requested, parameters=s.model.params or None
        )
        sent = capsys.readouterr().out
    # verbose prints "POST <uri>, headers <dict>": tritonclient's JSON mode sends no Content-Type
    assert "headers" in sent and "content-type" not in sent.split("\n", 1)[0].lower()
    assert_equal_to_in_process(triton_outputs(result), s.expected)


@pytest.mark.parametrize("name", MODELS)
def test_tritonclient_http_binary_mode(served, name):
    s = served[name]
    with triton_http.InferenceServerClient(url=s.base_url.removeprefix("http://")) as client:
        assert client.is_model_ready(name)
        metadata = client.get_model_metadata(name)
        result = client.infer(name, triton_inputs(s.model, binary=True), parameters=s.model.params or None)
    assert [o["name"] for o in metadata["outputs"]] == list(OUTPUTS[name])
    assert_equal_to_in_process(triton_outputs(result), s.expected)


def kserve_request(model: ForeignModel, binary: bool) -> InferRequest:
    inputs = []
    for name, datatype, values in model.inputs:
        tensor = InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return InferRequest(model.name, inputs, request_id="sdk-1", parameters=model.params or None)


@pytest.mark.parametrize("name", MODELS)
def test_kserve_sdk_rest_client(served, name):
    s = served[name]

    async def both_modes():
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60)) as client:
            assert await client.is_model_ready(s.base_url, name)
            return [
                await client.infer(s.base_url, kserve_request(s.model, b), model_name=name)
                for b in (False, True)
            ]

    for response in asyncio.run(both_modes()):
        assert response.id == "sdk-1"
        got = {o.name: (o.datatype, o.shape, o.as_numpy()) for o in response.outputs}
        assert_equal_to_in_process(got, s.expected)


# ------------------------------------------------------------------ gRPC (tritonclient.grpc in its own process)


def grpc_input(name: str, datatype: str, values: np.ndarray, **extra) -> dict:
    data = [str(v) for v in values.reshape(-1)] if datatype == "BYTES" else values.reshape(-1).tolist()
    return {"name": name, "datatype": datatype, "shape": list(values.shape), "data": data, **extra}


def grpc_calls(s: Served) -> dict[str, dict]:
    """The gRPC calls for one model, by id: metadata, a valid inference, then malformed ones."""
    model = s.model
    valid = [grpc_input(n, d, v) for n, d, v in model.inputs]
    first_name, first_type, first = model.inputs[0]
    infer = {"kind": "infer", "model": model.name, "inputs": valid, "parameters": model.params or None}
    other_type = "FP64" if first_type == "BYTES" else "BYTES"
    retyped = np.ones(first.shape) if other_type == "FP64" else first.astype(str)
    return {
        "metadata": {"kind": "metadata", "model": model.name},
        "infer": infer,
        "unknown-input": {**infer, "inputs": valid + [grpc_input("no-such-input", first_type, first)]},
        "missing-input": {**infer, "inputs": valid[1:]},
        "wrong-datatype": {**infer, "inputs": [grpc_input(first_name, other_type, retyped)] + valid[1:]},
        "wrong-rank": {
            **infer,
            "inputs": [grpc_input(first_name, first_type, first[..., None, None])] + valid[1:],
        },
        "data-shorter-than-shape": {
            **infer,
            "inputs": [
                grpc_input(first_name, first_type, first, send_shape=[first.shape[0] + 1, *first.shape[1:]])
            ]
            + valid[1:],
        },
        "unknown-output": {**infer, "outputs": ["no-such-output"]},
        "unknown-model": {**infer, "model": "no-such-model"},
        "model-version": {**infer, "version": "1"},
    }


GRPC_BAD = {
    "unknown-input": ("StatusCode.INVALID_ARGUMENT", "unknown input 'no-such-input'"),
    "missing-input": ("StatusCode.INVALID_ARGUMENT", "missing required input"),
    "wrong-datatype": ("StatusCode.INVALID_ARGUMENT", "which cannot be safely cast"),
    "wrong-rank": ("StatusCode.INVALID_ARGUMENT", "bad shape"),
    "data-shorter-than-shape": ("StatusCode.INVALID_ARGUMENT", "shape"),
    "unknown-output": ("StatusCode.INVALID_ARGUMENT", "unknown output 'no-such-output'"),
    "unknown-model": ("StatusCode.NOT_FOUND", "no-such-model"),
    "model-version": ("StatusCode.NOT_FOUND", "has no version '1'"),
}


@pytest.fixture(scope="module")
def grpc_results(served) -> dict[str, dict[str, dict]]:
    """Every model's gRPC calls, made by tritonclient.grpc in one subprocess: {model: {call id: result}}."""
    calls = [
        (name, call_id, {**call, "url": f"127.0.0.1:{s.grpc_port}"})
        for name, s in served.items()
        for call_id, call in grpc_calls(s).items()
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.triton_grpc_client"],
        input=json.dumps([c for _, _, c in calls]),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(REPO),
        env=process_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results: dict[str, dict[str, dict]] = {}
    for (name, call_id, _), result in zip(calls, json.loads(proc.stdout), strict=True):
        results.setdefault(name, {})[call_id] = result
    return results


@pytest.mark.parametrize("name", MODELS)
def test_tritonclient_grpc(served, grpc_results, name):
    results = grpc_results[name]
    meta = results["metadata"]["ok"]
    assert [o["name"] for o in meta["outputs"]] == list(OUTPUTS[name])
    outputs = results["infer"]["ok"]["outputs"]
    got = {n: (o["datatype"], o["shape"], o["data"]) for n, o in outputs.items()}
    assert_equal_to_in_process(got, served[name].expected)


@pytest.mark.parametrize("case", list(GRPC_BAD))
@pytest.mark.parametrize("name", MODELS)
def test_tritonclient_grpc_malformed(grpc_results, name, case):
    result = grpc_results[name][case]
    assert "error" in result, result
    status, mention = GRPC_BAD[case]
    assert result["error"]["status"] == status, result
    assert mention in result["error"]["message"]


# ------------------------------------------------------------------ malformed REST requests, per model


def malformed(model: ForeignModel) -> dict[str, tuple]:
    """id -> (path, body, status, mention), from the model's valid request."""
    body = v2_body(model)
    infer = f"/v2/models/{model.name}/infer"
    first, rest = body["inputs"][0], body["inputs"][1:]
    n = first["shape"][0]
    numeric = first["datatype"] != "BYTES"

    def with_first(**changes) -> dict:
        return {**body, "inputs": [{**first, **changes}, *rest]}

    return {
        "missing-input": (infer, {**body, "inputs": rest}, 400, f"missing required input '{first['name']}'"),
        "unknown-input": (
            infer,
            {**body, "inputs": [*body["inputs"], {**first, "name": "no-such-input"}]},
            400,
            "unknown input 'no-such-input'",
        ),
        "wrong-datatype": (
            infer,
            with_first(datatype="BYTES" if numeric else "FP64"),
            400,
            "which cannot be safely cast",
        ),
        "wrong-value-type": (
            infer,
            with_first(data=["1.5"] + first["data"][1:] if numeric else [5] + first["data"][1:]),
            400,
            "expected",
        ),
        "length-mismatch": (infer, with_first(shape=[n + 1, *first["shape"][1:]]), 400, "elements but shape"),
        "wrong-rank": (infer, with_first(shape=[*first["shape"], 1, 1]), 400, "bad shape"),
        "null": (infer, with_first(data=[None] + first["data"][1:]), 400, "null at"),
        "unknown-output": (
            infer,
            {**body, "outputs": [{"name": "no-such-output"}]},
            400,
            "unknown output 'no-such-output'",
        ),
        "empty-body": (infer, b"", 400, "invalid request body"),
        "malformed-json": (infer, b'{"inputs": [{"name": ', 400, "malformed JSON"),
        "not-an-inference-request": (infer, {"rows": []}, 400, "inputs: Field required"),
        "unknown-model": ("/v2/models/no-such-model/infer", body, 404, "no-such-model"),
        "model-version": (f"/v2/models/{model.name}/versions/1/infer", body, 404, "has no version '1'"),
        "model-version-query": (f"{infer}?model_version=2", body, 404, "has no version '2'"),
    }


MALFORMED_IDS = list(
    malformed(foreign_models.ForeignModel("m", Path("."), [("x", "FP64", np.zeros(2))], None))
)


@pytest.mark.parametrize("case", MALFORMED_IDS)
@pytest.mark.parametrize("name", MODELS)
def test_malformed_requests_are_4xx_naming_the_problem(served, name, case):
    s = served[name]
    path, body, status, mention = malformed(s.model)[case]
    response = post(
        s.base_url + path, body, content_type=None if case == "empty-body" else "application/json"
    )
    assert response.status_code == status, response.text
    assert mention in response.json()["error"]
    assert post(s.infer_url, v2_body(s.model)).status_code == 200  # the server still answers


# ------------------------------------------------------------------ parameters and optional outputs


def test_params_over_every_protocol(served, grpc_results):
    s = served["params"]
    assert s.model.params == {"scale": 2.5, "intervals": True, "width": 3}
    # raw HTTP JSON and tritonclient's binary mode carried them above; gRPC's floats come as double_param
    assert set(grpc_results["params"]["infer"]["ok"]["outputs"]) == {"y", "lower", "upper"}
    without = post(s.infer_url, {k: v for k, v in v2_body(s.model).items() if k != "parameters"})
    assert list(rest_outputs(without.json())) == ["y"]  # the declared defaults
    np.testing.assert_allclose(rest_outputs(without.json())["y"][2], s.model.predict({})["y"], rtol=1e-9)


@pytest.mark.parametrize(
    "parameters,status,mention",
    [
        ({"scale": "big"}, 400, "parameter 'scale' must be a double, got a str"),
        ({"intervals": 1}, 400, "parameter 'intervals' must be a boolean, got a int"),
        ({"width": 2.5}, 400, "parameter 'width' must be a long, got a float"),
        ({"binary_data_output": False, "not_declared": "x"}, 200, None),
    ],
)
def test_param_types_are_checked_and_undeclared_params_ignored(served, parameters, status, mention):
    s = served["params"]
    response = post(s.infer_url, {**v2_body(s.model), "parameters": parameters})
    assert response.status_code == status, response.text
    if mention:
        assert mention in response.json()["error"]


def test_requesting_an_optional_output_the_model_did_not_produce_is_400(served):
    s = served["params"]
    body = {k: v for k, v in v2_body(s.model).items() if k != "parameters"}
    response = post(s.infer_url, {**body, "outputs": [{"name": "lower"}]})
    assert response.status_code == 400
    assert (
        response.json()["error"] == "output 'lower' was not produced for this request (the model returned: y)"
    )
    response = post(s.infer_url, {**v2_body(s.model), "outputs": [{"name": "upper"}]})
    assert response.status_code == 200 and list(rest_outputs(response.json())) == ["upper"]


def test_v1_protocol_on_a_foreign_model(served):
    s = served["iris-int"]
    frame = s.model.model_input
    response = requests.post(
        f"{s.base_url}/v1/models/iris-int:predict", json={"instances": frame.to_dict("records")}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": s.expected["output-0"].tolist()}
