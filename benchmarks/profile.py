"""Where a server's time goes: its request handler run in this process, without HTTP, under cProfile.

cProfile follows one thread, and both servers run the model in a worker thread, so the
handler is called here directly, in the same steps the server takes after the body has
arrived: ``mlflow models serve`` calls ``scoring_server.invocations`` (parse, schema
enforcement, predict, JSON); the V2 runtime validates the ``InferenceRequest``, converts
it, calls ``MLflowModel.predict`` and serialises the ``InferenceResponse``. What the
server's measured latency adds on top of the handler is HTTP, the ASGI stack and the
event loop's hand-off to the thread.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import time

import mlflow.pyfunc

from benchmarks.bench import Bench, p50
from benchmarks.servers import MLFLOWSERVER, V2_MODEL_NAME, Kind, bodies, mlflow_serve


def mlflow_serve_handler(model_dir):
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(str(model_dir))
    schema = model.metadata.get_input_schema()

    def handle(body: bytes):
        response = scoring_server.invocations(body.decode(), "application/json", model, schema)
        assert response.status == 200, response.response
        return response.response

    return handle


def mlflowserver_handler(model_dir):
    from kserve.protocol.infer_type import InferRequest
    from kserve.protocol.rest.v2_datamodels import InferenceRequest, InferenceResponse

    from mlflowserver.model import MLflowModel

    model = MLflowModel(V2_MODEL_NAME, str(model_dir))
    model.load()

    def handle(body: bytes):
        request = InferRequest.from_inference_request(
            InferenceRequest.model_validate_json(body), V2_MODEL_NAME
        )
        rest, _ = asyncio.run(model.predict(request)).to_rest()
        return InferenceResponse.model_validate(rest).model_dump_json()

    return handle


HANDLERS = {"mlflow_serve": mlflow_serve_handler, "mlflowserver": mlflowserver_handler}


def top_functions(profile: cProfile.Profile, calls: int, count: int = 10) -> list[str]:
    stats = pstats.Stats(profile, stream=io.StringIO())
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:count]  # by own time
    lines = []
    for (filename, line, function), (_, _, own, cumulative, _) in rows:
        where = filename.split("site-packages/")[-1].split("/work/main/")[-1]
        lines.append(
            f"{own / calls * 1e3:8.3f} ms own {cumulative / calls * 1e3:8.3f} ms cumulative  {function} ({where}:{line})"
        )
    return lines


def handler_seconds(handle, body_pool: list[bytes], calls: int) -> float:
    handle(body_pool[0])
    times = []
    for i in range(calls):
        started = time.perf_counter()
        handle(body_pool[i % len(body_pool)])
        times.append(time.perf_counter() - started)
    return p50(times)


def run(bench: Bench) -> None:
    calls = 30 if bench.options.short else 200
    for kind in (mlflow_serve(1), MLFLOWSERVER):
        family = "mlflow_serve" if kind.key.startswith("mlflow_serve") else "mlflowserver"
        label = kind.label.replace(" --workers 1", "")
        lines = []
        for rows in (1, bench.options.body_rows):
            pool = bodies(bench, kind, rows, 16)
            project = HANDLERS[family](bench.model_dir)
            trivial = HANDLERS[family](bench.trivial_dir)
            seconds = {
                name: handler_seconds(h, pool, calls)
                for name, h in (("project", project), ("trivial", trivial))
            }
            lines.append(
                f"{rows}-row body: handler p50 {seconds['project'] * 1e3:.2f} ms on the project model, "
                f"{seconds['trivial'] * 1e3:.2f} ms on the trivial model"
            )
            profile = cProfile.Profile()
            profile.enable()
            for i in range(calls):
                project(pool[i % len(pool)])
            profile.disable()
            lines.append(f"  project model, top functions by own time per request ({rows}-row body):")
            lines += [f"    {line}" for line in top_functions(profile, calls)]
        bench.profiles[label] = "\n".join(lines)
        print(f"\n{label}\n" + bench.profiles[label], flush=True)


__all__ = ["run", "Kind"]
