"""Run under ``valgrind --tool=callgrind --instr-atstart=no`` by ``benchmarks.intervals``.

``python -m benchmarks.callgrind_worker FRAMES_PICKLE NAME=MODEL_DIR[:interval] …`` loads each
model and makes every variant's calls once uninstrumented (so Python's specialising
interpreter has warmed the shared code for all of them alike), then for each variant prints
``READY <name>``, waits for a line on stdin (the harness has switched instrumentation on),
makes the calls, prints ``DONE <name>`` and waits again (the harness switches it off and
dumps the counters). The instructions between the two lines are the variant's.
"""

from __future__ import annotations

import pickle
import sys

import mlflow


def main(argv: list[str]) -> None:
    frames = pickle.loads(open(argv[0], "rb").read())
    variants = {}
    for spec in argv[1:]:
        name, target = spec.split("=", 1)
        directory, _, level = target.partition(":")
        model = mlflow.pyfunc.load_model(directory)
        params = {"interval": float(level)} if level else None
        variants[name] = (model, params)
    for model, params in variants.values():
        for frame in frames:
            model.predict(frame, params=params)
    for name, (model, params) in variants.items():
        print(f"READY {name}", flush=True)
        sys.stdin.readline()
        for frame in frames:
            model.predict(frame, params=params)
        print(f"DONE {name}", flush=True)
        sys.stdin.readline()


if __name__ == "__main__":
    main(sys.argv[1:])
