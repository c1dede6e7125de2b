"""How the tree engine was chosen: LightGBM, ONNX Runtime and lleaves on the default model's
boosters, all 20,640 rows, in one interleaved run. Its output is ``benchmarks/engine_choice.txt``.

lleaves is not a dependency of the project (docs/performance.md#compiled-trees says why), so
this runs in two steps and two environments:

    # 1. in the project's venv: fit the default model, write its boosters and every row's features
    .venv/bin/python -m benchmarks.engine_choice export /tmp/engine-choice
    # 2. in a scratch venv with the candidates (never in .venv):
    python3.11 -m venv /tmp/engine-choice/venv
    /tmp/engine-choice/venv/bin/pip install lleaves==1.3.0 llvmlite==0.44.0 lightgbm==4.7.0 \\
        onnxruntime==1.31.1 numpy==2.4.6
    OMP_NUM_THREADS=1 /tmp/engine-choice/venv/bin/python benchmarks/engine_choice.py compare /tmp/engine-choice

Each engine predicts the two boosters' average, as the pyfunc does. Timings are per row, the
median of blocks of calls, the engines taking turns block by block (a call right after
another engine's would find that engine's trees in the CPU caches).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SIZES = {1: (40, 25), 100: (20, 5), 10_000: (6, 1)}  # rows per call → (rounds, calls per block)


def export(directory: Path) -> None:
    from model.data import FEATURE_COLUMNS, RAW_DATA_PATH, load_raw, split_train_test
    from model.train import TrainingConfig, fit_model

    raw = load_raw(RAW_DATA_PATH)
    model = fit_model(split_train_test(raw)[0], TrainingConfig())
    directory.mkdir(parents=True, exist_ok=True)
    for i, booster in enumerate(model.regressor.boosters):
        booster.save_model(str(directory / f"booster{i}.txt"))
    np.save(directory / "X.npy", model.features.transform(raw[list(FEATURE_COLUMNS)]))


def compare(directory: Path) -> None:
    import lightgbm
    import lleaves
    import llvmlite
    import onnxruntime

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from model.compiled_trees import CompiledTrees, compile_boosters

    files = sorted(directory.glob("booster*.txt"))
    boosters = [lightgbm.Booster(model_file=str(f)) for f in files]
    X = np.load(directory / "X.npy")
    started = time.process_time()
    onnx_model = compile_boosters(boosters)
    convert = time.process_time() - started
    compiled = CompiledTrees(onnx_model)
    threaded = _two_threads(onnx_model)
    started = time.process_time()
    compiled_lleaves = []
    for f in files:
        model = lleaves.Model(model_file=str(f))
        model.compile(cache=str(f.with_suffix(".o")), finline=False)
        compiled_lleaves.append(model)
    lleaves_build = time.process_time() - started
    engines = {
        "LightGBM Booster.predict": lambda x: sum(b.predict(x) for b in boosters) / len(boosters),
        "ONNX Runtime TreeEnsemble (double)": lambda x: sum(compiled.predict(x)) / len(boosters),
        "lleaves 1.3 (finline=False)": lambda x: (
            sum(m.predict(x, n_jobs=1) for m in compiled_lleaves) / len(boosters)
        ),
    }
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"lightgbm {lightgbm.__version__}, onnxruntime {onnxruntime.__version__}, lleaves 1.3.0 with "
        f"llvmlite {llvmlite.__version__}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
        f"load average at the start {os.getloadavg()[0]:.1f}"
    )
    print(
        f"build: ONNX conversion {convert:.1f} s CPU, {len(onnx_model) / 1e6:.1f} MB; lleaves "
        f"{lleaves_build:.1f} s CPU (0 if its cached objects were there)"
    )
    reference = engines["LightGBM Booster.predict"](X)
    for name, engine in {**engines, "ONNX Runtime, 2 intra-op threads": threaded}.items():
        got = engine(X)
        print(
            f"agreement on {len(X):,} rows, {name}: {int((got != reference).sum()):,} rows differ from "
            f"LightGBM, at most {np.abs(got - reference).max():.2g} USD"
        )
    rng = np.random.default_rng(0)
    for rows, (rounds, block) in SIZES.items():
        seconds = {name: [] for name in engines}
        for round_ in range(rounds):
            order = list(engines.items())[:: 1 if round_ % 2 == 0 else -1]
            for name, engine in order:
                for _ in range(block):
                    start = int(rng.integers(0, len(X) - rows))
                    t0 = time.perf_counter()
                    engine(X[start : start + rows])
                    seconds[name].append(time.perf_counter() - t0)
        base = statistics.median(seconds["LightGBM Booster.predict"]) / rows
        for name in engines:
            per_row = statistics.median(seconds[name]) / rows
            print(
                f"{rows:>6,}-row calls  {name:36s} {per_row * 1e6:7.1f} µs/row  {per_row / base:.2f}× LightGBM"
            )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


def _two_threads(onnx_model: bytes):
    """ONNX Runtime's own multi-threading, which ``CompiledTrees`` does not use."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
    return lambda x: sum(out[:, 0] for out in session.run(None, {"X": x})) / len(session.get_outputs())


if __name__ == "__main__":
    {"export": export, "compare": compare}[sys.argv[1]](Path(sys.argv[2]))
