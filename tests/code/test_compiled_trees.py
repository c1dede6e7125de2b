"""The compiled trees predict what LightGBM's ``Booster.predict`` predicts, bit for bit, on
boosters built to exercise every rule the conversion reproduces (missing values both ways,
NaN read as 0, inputs near 0, one-leaf trees, the gamma link), and refuse what they do not.
The real model's boosters on every row of the dataset: tests/model/test_compiled_trees.py."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import lightgbm
import numpy as np
import onnx
import onnx.checker
import pytest
from onnx.reference import ReferenceEvaluator

from model.compiled_trees import (
    INPUT_NAME,
    MIN_ROWS_PER_THREAD,
    NAN_AS_ZERO_KEY,
    ZERO_THRESHOLD,
    CompiledTrees,
    UnsupportedBoosterError,
    compile_boosters,
)

FIT = {"verbose": -1, "num_leaves": 15, "min_data_in_leaf": 5, "num_threads": 1, "seed": 7}


def training_data(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Column 0 has missing values (LightGBM learns a side for them), column 1 is -1/0/1
    (thresholds at ±ZERO_THRESHOLD), column 2 repeats values (inputs exactly at thresholds)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    X[:, 1] = rng.choice([-1.0, 0.0, 1.0], n)
    X[:, 2] = np.round(X[:, 2], 1)
    missing = rng.random(n) < 0.15
    y = 3 * X[:, 1] + np.sin(2 * X[:, 2]) + X[:, 3] * X[:, 4] + np.where(missing, 2.5, X[:, 0])
    X[missing, 0] = np.nan
    return X, y + rng.normal(0, 0.1, n)


def splits(booster: lightgbm.Booster) -> list[dict]:
    found, stack = [], [tree["tree_structure"] for tree in booster.dump_model()["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_index" in node:
            found.append(node)
            stack += [node["left_child"], node["right_child"]]
    return found


def probe_rows(booster: lightgbm.Booster, X: np.ndarray) -> np.ndarray:
    """The training rows, then rows at every threshold, NaN everywhere, ±inf and values near 0."""
    at_threshold = np.repeat(X[:1], len(splits(booster)), axis=0)
    for row, node in zip(at_threshold, splits(booster)):
        row[node["split_feature"]] = node["threshold"]
    special = np.array(
        [
            np.nan,
            np.inf,
            -np.inf,
            0.0,
            -0.0,
            ZERO_THRESHOLD,
            -ZERO_THRESHOLD,
            1e-40,
            -1e-40,
            2 * ZERO_THRESHOLD,
        ]
    )
    edges = np.repeat(X[:1], len(special) * X.shape[1], axis=0)
    for i, (feature, value) in enumerate((f, v) for f in range(X.shape[1]) for v in special):
        edges[i, feature] = value
    return np.vstack([X, at_threshold, edges, np.full((1, X.shape[1]), np.nan)])


@pytest.fixture(scope="module")
def data():
    return training_data()


@pytest.fixture(scope="module")
def boosters(data):
    X, y = data
    return [
        lightgbm.train({**FIT, "objective": "regression", "seed": seed}, lightgbm.Dataset(X, y), 40)
        for seed in (1, 2)
    ]


@pytest.fixture(scope="module")
def compiled(boosters):
    return CompiledTrees(compile_boosters(boosters))


def test_the_boosters_exercise_every_missing_value_rule(boosters):
    rules = {(node["missing_type"], node["default_left"]) for b in boosters for node in splits(b)}
    assert {("NaN", True), ("NaN", False), ("None", True)} <= rules
    thresholds = {node["threshold"] for b in boosters for node in splits(b)}
    assert {ZERO_THRESHOLD, -ZERO_THRESHOLD} <= thresholds


def test_compiled_predictions_equal_lightgbms_bit_for_bit(boosters, compiled, data):
    rows = probe_rows(boosters[0], data[0])
    for booster, predictions in zip(boosters, compiled.predict(rows), strict=True):
        np.testing.assert_array_equal(predictions, booster.predict(rows))


@pytest.mark.parametrize("batch", [1, 2, 7, 64, 257])
def test_every_batch_size_gives_the_same_bits(boosters, compiled, data, batch):
    rows = probe_rows(boosters[0], data[0])[:600]
    pieces = [compiled.predict(rows[start : start + batch])[1] for start in range(0, len(rows), batch)]
    np.testing.assert_array_equal(np.concatenate(pieces), boosters[1].predict(rows))


def test_only_features_with_a_nan_split_keep_missing_value_tracks(boosters, data):
    # Column 0 had missing values in training (NaN splits); in the others LightGBM reads NaN as
    # 0 at every split, so CompiledTrees turns their NaN into 0 and their nodes carry no track
    # (test_compiled_predictions_equal_lightgbms_bit_for_bit covers NaN in every column).
    model = onnx.load_from_string(compile_boosters(boosters))
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    assert metadata[NAN_AS_ZERO_KEY] == "1,2,3,4"
    for node in model.graph.node:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        tracked = {
            feature
            for feature, track in zip(
                attributes["nodes_featureids"], attributes["nodes_missing_value_tracks_true"], strict=True
            )
            if track
        }
        assert tracked == {0}


def test_a_value_within_lightgbms_zero_threshold_is_read_as_zero(boosters, compiled, data):
    # LightGBM drops |x| <= 1e-35f from a row (sparse): at a split on -ZERO_THRESHOLD, the input
    # -ZERO_THRESHOLD goes where 0 goes, not where "x <= threshold" alone would send it.
    node = next(n for n in splits(boosters[0]) if n["threshold"] == -ZERO_THRESHOLD)
    rows = np.repeat(data[0][:1], 2, axis=0)
    rows[:, node["split_feature"]] = [0.0, -ZERO_THRESHOLD]
    lightgbm_says = boosters[0].predict(rows)
    assert lightgbm_says[0] == lightgbm_says[1]
    np.testing.assert_array_equal(compiled.predict(rows)[0], lightgbm_says)


def test_one_leaf_trees_and_the_gamma_link(data):
    X, y = data
    constant = lightgbm.train(
        {**FIT, "objective": "regression"}, lightgbm.Dataset(X, np.full(len(y), 4.2)), 3
    )
    assert all("split_index" not in t["tree_structure"] for t in constant.dump_model()["tree_info"])
    gamma = lightgbm.train({**FIT, "objective": "gamma"}, lightgbm.Dataset(X, np.exp(y / 4)), 40)
    rows = probe_rows(gamma, X)
    for booster in (constant, gamma):
        np.testing.assert_array_equal(
            CompiledTrees(compile_boosters([booster])).predict(rows)[0], booster.predict(rows)
        )


def test_a_batch_split_between_threads_gives_the_same_bits(boosters, data, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    threaded = CompiledTrees(compile_boosters(boosters))
    rows = np.tile(data[0], (2, 1))[: 3 * MIN_ROWS_PER_THREAD + 11]
    assert threaded.threads == 3
    for booster, predictions in zip(boosters, threaded.predict(rows), strict=True):
        np.testing.assert_array_equal(predictions, booster.predict(rows))


def test_one_session_serves_several_threads_at_once(boosters, compiled, data):
    rows = data[0][:200]
    expected = boosters[0].predict(rows)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: compiled.predict(rows[i % 3 :])[0], range(8)))
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, expected[i % 3 :])


def test_the_file_is_a_valid_onnx_model_whose_reference_semantics_agree(boosters, data):
    model = onnx.load_from_string(compile_boosters(boosters))
    onnx.checker.check_model(model, full_check=True)
    assert [(opset.domain, opset.version) for opset in model.opset_import] == [("", 21), ("ai.onnx.ml", 5)]
    rows = probe_rows(boosters[0], data[0])[:300]
    # ONNX's own Python implementation of the operator: the file means what LightGBM does,
    # independently of ONNX Runtime's kernel (its NaN-as-0 rows need the rule of CompiledTrees).
    rows = rows[~np.isnan(rows).any(axis=1)]
    outputs = ReferenceEvaluator(model).run(None, {INPUT_NAME: rows})
    for booster, output in zip(boosters, outputs, strict=True):
        np.testing.assert_array_equal(output[:, 0], booster.predict(rows))


def test_a_row_of_the_wrong_width_is_refused(compiled):
    with pytest.raises(ValueError, match=r"^expected rows of 5 features, got an array of shape \(2, 4\)$"):
        compiled.predict(np.zeros((2, 4)))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"objective": "binary"}, "objective 'binary sigmoid:1': its output transform is not reproduced"),
        ({"objective": "regression", "reg_sqrt": True}, "objective 'regression sqrt'"),
        ({"objective": "regression", "zero_as_missing": True}, "missing_type 'Zero' split on feature"),
        ({"objective": "regression", "linear_tree": True}, "linear trees"),
        ({"objective": "multiclass", "num_class": 3}, "objective 'multiclass num_class:3'"),
        (
            {"objective": "regression", "boosting": "rf", "bagging_freq": 1, "bagging_fraction": 0.5},
            "random-forest boosters",
        ),
        ({"objective": "regression", "categorical_feature": [1]}, "categorical split on feature 1"),
    ],
    ids=["binary", "sqrt", "zero_as_missing", "linear", "multiclass", "rf", "categorical"],
)
def test_what_is_not_reproduced_exactly_is_refused_at_conversion(data, params, message):
    X, y = data
    params = dict(params)
    X = np.nan_to_num(X) if "zero_as_missing" in params else X
    X = np.abs(X) + 1.0 if "categorical_feature" in params else X  # column 1: small positive integers
    label = (y > np.median(y)).astype(float) if params["objective"] == "binary" else y
    label = np.digitize(y, np.quantile(y, [0.33, 0.66])) if params["objective"] == "multiclass" else label
    label = np.abs(label) if params.get("reg_sqrt") else label
    categorical = params.pop("categorical_feature", "auto")
    booster = lightgbm.train(
        {**FIT, **params}, lightgbm.Dataset(X, label, categorical_feature=categorical), 5
    )
    with pytest.raises(UnsupportedBoosterError, match=message):
        compile_boosters([booster])


def test_boosters_over_different_features_are_refused(boosters, data):
    X, y = data
    narrower = lightgbm.train({**FIT, "objective": "regression"}, lightgbm.Dataset(X[:, :4], y), 3)
    with pytest.raises(UnsupportedBoosterError, match=r"different numbers of features: \[4, 5\]"):
        compile_boosters([boosters[0], narrower])
