"""``python -m benchmarks.coldstart_worker MODEL_DIR``: the V2 runtime's start, timed part by part
in this fresh process (benchmarks/coldstart.py); prints one JSON line of seconds."""

from __future__ import annotations

import gc
import time

started = time.perf_counter()
gc.disable()  # as `python -m mlflowserver` starts (mlflowserver/__main__.py)

import asyncio  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import mlflowserver.__main__  # noqa: E402, F401 - what `python -m mlflowserver` imports
from mlflowserver.model import MLflowModel  # noqa: E402

imported = time.perf_counter()


def main(model_dir: str) -> None:
    from kserve.protocol.infer_type import InferInput, InferRequest

    model = MLflowModel("model", model_dir)
    model.load()
    loaded = time.perf_counter()
    # The model's own input example: a row its contract accepts.
    row = model._pyfunc.metadata.load_input_example(model_dir).iloc[:1]
    inputs = []
    for spec in model.inputs:
        values = row[spec.key].tolist()
        datatype = "BYTES" if spec.dtype.kind == "O" else "FP64"
        inputs.append(InferInput(spec.name, [1], datatype, values))
    asyncio.run(model.predict(InferRequest("model", inputs)))
    predicted = time.perf_counter()
    parts = {"imports": imported - started, "load": loaded - imported, "first_predict": predicted - loaded}
    print(json.dumps(parts))


if __name__ == "__main__":
    main(sys.argv[1])
