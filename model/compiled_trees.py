"""LightGBM boosters compiled into ONNX ``TreeEnsemble`` nodes, run by ONNX Runtime.

LightGBM's own predictor walks each row through every tree of a generic layout; ONNX
Runtime's ``TreeEnsemble`` kernel (``ai.onnx.ml`` opset 5, double thresholds and double
output) walks a compact one of its own and is faster at every batch size (the engine
section of docs/performance.md). The trees are converted once, at training time, from
LightGBM's public ``Booster.dump_model()``; serving only loads the result.

The predictions are LightGBM's own, bit for bit (tests/code/test_compiled_trees.py on
boosters built to exercise each rule below, tests/model/test_compiled_trees.py on every
row of the dataset):

* a split is ``x <= threshold`` in double, the threshold as LightGBM stores it (its JSON
  dump prints 17 significant digits, which round-trips a double);
* a missing value (NaN) goes where LightGBM sends it: the default side for a
  ``missing_type`` NaN split, the side of 0.0 for a ``None`` split (LightGBM reads NaN
  as 0 there). In a feature whose every split is ``None`` (all of them, when training saw
  no missing value), :meth:`CompiledTrees.predict` turns NaN into 0.0 before the trees, and
  the nodes carry no missing-value track: ONNX Runtime walks trees without any track on a
  faster path. Elsewhere ``nodes_missing_value_tracks_true`` says which side NaN takes;
* LightGBM reads an input within ``±ZERO_THRESHOLD`` of 0 as 0 (it keeps rows sparse):
  :meth:`CompiledTrees.predict` does the same before the trees see it;
* each booster is its own ``TreeEnsemble`` node with one target, whose leaves ONNX
  Runtime adds in tree order from 0, as LightGBM does (on one thread: see
  :class:`CompiledTrees`);
* the objective's output transform (``exp`` for gamma, Poisson and Tweedie) is applied
  afterwards with the C library's ``exp``, the function LightGBM calls.

Anything else LightGBM can fit — categorical splits, zero-as-missing splits, linear
trees, random-forest averaging, an objective not listed in ``OUTPUT_TRANSFORMS`` (so no
classifier) — is refused at conversion (:class:`UnsupportedBoosterError`), never
approximated.

The ONNX file is written with a few lines of protobuf encoding (``_Proto``) instead of
the ``onnx`` package: the trainer runs from the serving image, and ``onnx`` (with its
``ml_dtypes`` dependency) would add to the image far more than the few dozen lines it
replaces here. The test suite checks the result with ``onnx``'s checker and reference evaluator.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import lightgbm

# LightGBM's kZeroThreshold (include/LightGBM/meta.h: 1e-35f, a float widened to double).
ZERO_THRESHOLD = float(np.float32(1e-35))
# Objective (the first word of the booster's "objective" line) → what LightGBM's
# ConvertOutput does to the raw score. Anything else is refused.
OUTPUT_TRANSFORMS = {
    "regression": None,
    "regression_l1": None,
    "huber": None,
    "fair": None,
    "quantile": None,
    "mape": None,
    "gamma": "exp",
    "poisson": "exp",
    "tweedie": "exp",
}
ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 5  # TreeEnsemble, with double thresholds, weights and output
ONNX_OPSET = 21  # the default domain's opset of IR version 10
IR_VERSION = 10
INPUT_NAME = "X"
NAN_AS_ZERO_KEY = "nan_as_zero_features"  # metadata: the features whose NaN becomes 0.0 first
# Rows each thread gets at least before a batch is split between threads (a hand-off costs
# about as much as a few rows' trees).
MIN_ROWS_PER_THREAD = 1_000
_DOUBLE, _UINT8 = 11, 2  # onnx.TensorProto.DataType
_ATTR_INT, _ATTR_TENSOR, _ATTR_INTS = 2, 4, 7  # onnx.AttributeProto.AttributeType
_SUM, _NO_TRANSFORM = 1, 0  # TreeEnsemble's aggregate_function and post_transform


class UnsupportedBoosterError(ValueError):
    """A booster uses a LightGBM feature the conversion does not reproduce exactly."""


def compile_boosters(boosters: Sequence[lightgbm.Booster]) -> bytes:
    """An ONNX model with input ``X`` (n rows × the boosters' features, double) and one
    output per booster, in order: its raw score, before the objective's transform."""
    dumps = [booster.dump_model() for booster in boosters]
    n_features = {dump["max_feature_idx"] + 1 for dump in dumps}
    if len(n_features) != 1:
        raise UnsupportedBoosterError(f"boosters over different numbers of features: {sorted(n_features)}")
    transforms = [_output_transform(dump) or "none" for dump in dumps]  # refused before any work
    n_features = n_features.pop()
    nan_as_zero = _nan_as_zero_features(dumps, n_features)
    nodes = [_Proto.node(_tree_ensemble(dump, nan_as_zero), f"booster_{k}") for k, dump in enumerate(dumps)]
    outputs = [_Proto.value_info(f"booster_{k}", None, 1) for k in range(len(dumps))]
    graph = _Proto.graph(nodes, _Proto.value_info(INPUT_NAME, None, n_features), outputs)
    metadata = {
        "output_transforms": ",".join(transforms),
        NAN_AS_ZERO_KEY: ",".join(str(feature) for feature in sorted(nan_as_zero)),
    }
    return _Proto.model(graph, metadata)


class CompiledTrees:
    """What :func:`compile_boosters` made, loaded into an ONNX Runtime session.

    ``predict(X)`` gives each booster's ``Booster.predict(X)``, bit for bit. The session
    runs on one thread: ONNX Runtime's multi-threaded kernel splits the trees between its
    threads and adds their partial sums in another order (most rows then differ from
    LightGBM's in the last bits: benchmarks/engine_choice.txt). A large batch is instead
    split by rows between ``OMP_NUM_THREADS`` threads (the thread count of every tree
    engine here; all cores when unset), each running the session on its own rows: each
    row still adds its leaves in LightGBM's order. A session may be called from several
    threads at once.
    """

    def __init__(self, model: bytes):
        # Imported here: a process that loads no compiled trees (training, an artifact
        # without them) never loads ONNX Runtime.
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.transforms = [None if t == "none" else t for t in metadata["output_transforms"].split(",")]
        self.n_features = self.session.get_inputs()[0].shape[1]
        # Files compiled before the key existed track NaN at every node: nothing to turn to 0.
        nan_as_zero = [int(f) for f in metadata.get(NAN_AS_ZERO_KEY, "").split(",") if f]
        self._nan_as_zero = np.isin(np.arange(self.n_features), nan_as_zero) if nan_as_zero else None
        self.threads = _threads()
        # Its threads start on the first split batch only.
        self._pool = ThreadPoolExecutor(self.threads, "compiled-trees") if self.threads > 1 else None

    def predict(self, X: np.ndarray) -> list[np.ndarray]:
        """Each booster's predictions for the rows of ``X`` (2-D, ``n_features`` columns)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got an array of shape {X.shape}")
        to_zero = (np.abs(X) <= ZERO_THRESHOLD) & (X != 0)
        if self._nan_as_zero is not None:
            to_zero |= np.isnan(X) & self._nan_as_zero
        if to_zero.any():
            X = np.where(to_zero, 0.0, X)
        X = np.ascontiguousarray(X)
        if self._pool is not None and len(X) >= self.threads * MIN_ROWS_PER_THREAD:
            parts = list(self._pool.map(self._raw, np.array_split(X, self.threads)))
            raw = [np.concatenate(scores) for scores in zip(*parts)]
        else:
            raw = self._raw(X)
        return [_transform(scores, transform) for scores, transform in zip(raw, self.transforms)]

    def _raw(self, X: np.ndarray) -> list[np.ndarray]:
        return [scores[:, 0] for scores in self.session.run(None, {INPUT_NAME: X})]


_libm_exp = np.frompyfunc(math.exp, 1, 1)


def _transform(raw: np.ndarray, transform: str | None) -> np.ndarray:
    if transform is None:
        return raw
    # math.exp is the C library's exp, as LightGBM's std::exp is; NumPy's own SIMD exp
    # may differ from it in the last bit.
    return _libm_exp(raw).astype(np.float64)


def _threads() -> int:
    threads = os.environ.get("OMP_NUM_THREADS", "")
    return int(threads) if threads.isdigit() and int(threads) > 0 else len(os.sched_getaffinity(0))


def _output_transform(dump: dict) -> str | None:
    objective, *options = dump["objective"].split()
    if objective not in OUTPUT_TRANSFORMS or "sqrt" in options:
        raise UnsupportedBoosterError(
            f"objective {dump['objective']!r}: its output transform is not reproduced"
        )
    if dump.get("average_output"):
        raise UnsupportedBoosterError("random-forest boosters (average_output) are not supported")
    return OUTPUT_TRANSFORMS[objective]


def _nan_as_zero_features(dumps: list[dict], n_features: int) -> set[int]:
    """The features every split of every booster reads NaN as 0 in (``missing_type`` None)."""
    tracked = set()
    for dump in dumps:
        pending = [tree["tree_structure"] for tree in dump["tree_info"]]
        while pending:
            node = pending.pop()
            if "split_index" in node:
                if node["missing_type"] != "None":
                    tracked.add(node["split_feature"])
                pending += [node["left_child"], node["right_child"]]
    return set(range(n_features)) - tracked


def _tree_ensemble(dump: dict, nan_as_zero: set[int]) -> list[bytes]:
    """The ``TreeEnsemble`` attributes (``ai.onnx.ml`` opset 5) of one booster's trees; a split
    on a feature of ``nan_as_zero`` never sees NaN (:meth:`CompiledTrees.predict`)."""
    features, thresholds, missing_true = [], [], []
    true_ids, true_leaf, false_ids, false_leaf = [], [], [], []
    leaf_weights, roots = [], []

    def child(structure: dict, pending: list) -> tuple[int, int]:
        """(index, 1) of a new leaf, or (index, 0) of a new interior node to fill in."""
        if "split_index" not in structure:
            if "leaf_coeff" in structure:
                raise UnsupportedBoosterError("linear trees (linear_tree) are not supported")
            leaf_weights.append(structure["leaf_value"])
            return len(leaf_weights) - 1, 1
        for column in (features, thresholds, missing_true, true_ids, true_leaf, false_ids, false_leaf):
            column.append(0)
        pending.append((len(features) - 1, structure))
        return len(features) - 1, 0

    for tree in dump["tree_info"]:
        structure = tree["tree_structure"]
        pending: list = []
        if "split_index" not in structure:
            # A one-leaf tree: one node whose both branches are that leaf (the operator's convention).
            roots.append(len(features))
            leaf, _ = child(structure, pending)
            for column, value in zip(
                (features, thresholds, missing_true, true_ids, true_leaf, false_ids, false_leaf),
                (0, 0.0, 0, leaf, 1, leaf, 1),
            ):
                column.append(value)
            continue
        roots.append(child(structure, pending)[0])
        while pending:
            index, node = pending.pop()
            features[index] = node["split_feature"]
            thresholds[index] = node["threshold"]
            goes_left = _missing_goes_left(node)  # refuses what is not reproduced
            missing_true[index] = 0 if node["split_feature"] in nan_as_zero else goes_left
            true_ids[index], true_leaf[index] = child(node["left_child"], pending)
            false_ids[index], false_leaf[index] = child(node["right_child"], pending)

    return [
        _Proto.attribute_int("n_targets", 1),
        _Proto.attribute_int("aggregate_function", _SUM),
        _Proto.attribute_int("post_transform", _NO_TRANSFORM),
        _Proto.attribute_ints("tree_roots", roots),
        _Proto.attribute_ints("nodes_featureids", features),
        _Proto.attribute_tensor("nodes_splits", np.array(thresholds, dtype="<f8"), _DOUBLE),
        _Proto.attribute_tensor("nodes_modes", np.zeros(len(features), dtype=np.uint8), _UINT8),  # BRANCH_LEQ
        _Proto.attribute_ints("nodes_truenodeids", true_ids),
        _Proto.attribute_ints("nodes_trueleafs", true_leaf),
        _Proto.attribute_ints("nodes_falsenodeids", false_ids),
        _Proto.attribute_ints("nodes_falseleafs", false_leaf),
        _Proto.attribute_ints("nodes_missing_value_tracks_true", missing_true),
        _Proto.attribute_ints("leaf_targetids", [0] * len(leaf_weights)),
        _Proto.attribute_tensor("leaf_weights", np.array(leaf_weights, dtype="<f8"), _DOUBLE),
    ]


def _missing_goes_left(node: dict) -> int:
    """1 if LightGBM sends a NaN in this split's feature to the left (``<=``) child."""
    if node["decision_type"] != "<=":
        raise UnsupportedBoosterError(f"categorical split on feature {node['split_feature']}")
    if node["missing_type"] == "NaN":
        return int(node["default_left"])
    if node["missing_type"] == "None":  # LightGBM reads NaN as 0.0 here
        return int(0.0 <= node["threshold"])
    raise UnsupportedBoosterError(
        f"missing_type {node['missing_type']!r} split on feature {node['split_feature']} (zero_as_missing)"
    )


class _Proto:
    """The few ONNX messages a model needs, in protobuf's wire format.

    Field numbers are onnx.proto's (stable across ONNX releases); repeated integers are
    packed, tensors carry their values as little-endian ``raw_data``.
    """

    @staticmethod
    def varint(value: int) -> bytes:
        value &= (1 << 64) - 1  # an int64 below 0 as its two's complement
        out = bytearray()
        while value > 0x7F:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
        return bytes(out)

    @classmethod
    def int_field(cls, number: int, value: int) -> bytes:
        return cls.varint(number << 3) + cls.varint(value)

    @classmethod
    def bytes_field(cls, number: int, payload: bytes | str) -> bytes:
        payload = payload.encode() if isinstance(payload, str) else payload
        return cls.varint(number << 3 | 2) + cls.varint(len(payload)) + payload

    @classmethod
    def attribute_int(cls, name: str, value: int) -> bytes:
        return cls.bytes_field(1, name) + cls.int_field(20, _ATTR_INT) + cls.int_field(3, value)

    @classmethod
    def attribute_ints(cls, name: str, values: Sequence[int]) -> bytes:
        packed = b"".join(cls.varint(int(v)) for v in values)
        return cls.bytes_field(1, name) + cls.int_field(20, _ATTR_INTS) + cls.bytes_field(8, packed)

    @classmethod
    def attribute_tensor(cls, name: str, values: np.ndarray, data_type: int) -> bytes:
        tensor = (
            cls.int_field(1, len(values)) + cls.int_field(2, data_type) + cls.bytes_field(9, values.tobytes())
        )
        return cls.bytes_field(1, name) + cls.int_field(20, _ATTR_TENSOR) + cls.bytes_field(5, tensor)

    @classmethod
    def node(cls, attributes: list[bytes], output: str) -> bytes:
        return (
            cls.bytes_field(1, INPUT_NAME)
            + cls.bytes_field(2, output)
            + cls.bytes_field(3, output)
            + cls.bytes_field(4, "TreeEnsemble")
            + cls.bytes_field(7, ML_DOMAIN)
            + b"".join(cls.bytes_field(5, attribute) for attribute in attributes)
        )

    @classmethod
    def value_info(cls, name: str, rows: int | None, columns: int) -> bytes:
        """A double tensor of shape (rows, columns); ``rows`` None: any number, named N."""
        first = cls.bytes_field(2, "N") if rows is None else cls.int_field(1, rows)
        shape = cls.bytes_field(1, first) + cls.bytes_field(1, cls.int_field(1, columns))
        tensor_type = cls.int_field(1, _DOUBLE) + cls.bytes_field(2, shape)
        return cls.bytes_field(1, name) + cls.bytes_field(2, cls.bytes_field(1, tensor_type))

    @classmethod
    def graph(cls, nodes: list[bytes], input_: bytes, outputs: list[bytes]) -> bytes:
        return (
            b"".join(cls.bytes_field(1, node) for node in nodes)
            + cls.bytes_field(2, "lightgbm_boosters")
            + cls.bytes_field(11, input_)
            + b"".join(cls.bytes_field(12, output) for output in outputs)
        )

    @classmethod
    def model(cls, graph: bytes, metadata: dict[str, str]) -> bytes:
        opsets = [("", ONNX_OPSET), (ML_DOMAIN, ML_OPSET)]
        return (
            cls.int_field(1, IR_VERSION)
            + cls.bytes_field(2, "model.compiled_trees")
            + cls.bytes_field(7, graph)
            + b"".join(
                cls.bytes_field(8, cls.bytes_field(1, domain) + cls.int_field(2, v)) for domain, v in opsets
            )
            + b"".join(
                cls.bytes_field(14, cls.bytes_field(1, key) + cls.bytes_field(2, value))
                for key, value in metadata.items()
            )
        )
