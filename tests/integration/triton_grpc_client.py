"""Calls a V2 gRPC server with ``tritonclient.grpc``, in a process of its own.

tritonclient.grpc and the kserve SDK both register the V2 protobuf messages (package
``inference``) in protobuf's default pool, so they cannot be imported in one process: the
tests, which import kserve, run this script instead. It reads a JSON list of calls on stdin,
each with the server's ``"url"`` (``host:port``), and writes one JSON result per call on stdout:

* ``{"kind": "metadata", "model": name, "version": ""}`` → ``{"ok": <metadata as JSON>}``
* ``{"kind": "infer", "model": name, "inputs": [{"name", "datatype", "shape", "data"}],
  "outputs": [names] | null, "parameters": {...} | null, "version": "", "send_shape": shape | null}``
  → ``{"ok": {"outputs": {name: {"datatype", "shape", "data"}}}}`` (data flat; BYTES as text)

and ``{"error": {"status": "StatusCode.X", "message": ...}}`` when the server refuses a call.
``send_shape`` declares another shape than the data's (to send a mismatched request).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype


def _input(spec: dict) -> grpcclient.InferInput:
    dtype = object if spec["datatype"] == "BYTES" else triton_to_np_dtype(spec["datatype"])
    values = np.array(spec["data"], dtype=dtype).reshape(spec["shape"])
    tensor = grpcclient.InferInput(spec["name"], list(values.shape), spec["datatype"])
    tensor.set_data_from_numpy(values)
    if spec.get("send_shape") is not None:
        tensor.set_shape(spec["send_shape"])
    return tensor


def _infer(client: grpcclient.InferenceServerClient, call: dict) -> dict:
    outputs = (
        [grpcclient.InferRequestedOutput(name) for name in call["outputs"]] if call.get("outputs") else None
    )
    result = client.infer(
        call["model"],
        [_input(spec) for spec in call["inputs"]],
        model_version=call.get("version", ""),
        outputs=outputs,
        parameters=call.get("parameters"),
    )
    response = result.get_response(as_json=True)
    decoded = {}
    for output in response["outputs"]:
        values = result.as_numpy(output["name"])
        if values.dtype == object:
            data = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values.reshape(-1)]
        else:
            data = values.reshape(-1).tolist()
        decoded[output["name"]] = {"datatype": output["datatype"], "shape": list(values.shape), "data": data}
    return {"outputs": decoded}


def main() -> int:
    clients: dict[str, grpcclient.InferenceServerClient] = {}
    results = []
    for call in json.load(sys.stdin):
        client = clients.setdefault(call["url"], grpcclient.InferenceServerClient(url=call["url"]))
        try:
            if call["kind"] == "metadata":
                results.append(
                    {"ok": client.get_model_metadata(call["model"], call.get("version", ""), as_json=True)}
                )
            else:
                results.append({"ok": _infer(client, call)})
        except InferenceServerException as exc:
            results.append({"error": {"status": str(exc.status()), "message": exc.message()}})
    for client in clients.values():
        client.close()
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
