"""The `contributions` output of tree models: exact path-dependent TreeSHAP (kernels/tree_shap.py).

Two oracles. On random ensembles of every split kind (test_kernels_trees.py's), the Shapley
values of the path-dependent game itself, by enumerating every subset of features in plain
numpy (a subset's value: its features follow the row, the others split by cover). On models
trained by each library, shap.TreeExplainer for scikit-learn's, and XGBoost's pred_contribs and
LightGBM's pred_contrib for theirs, to 1e-6 of the largest absolute raw score in fp64 (fp32
inputs too), with missing values and categorical splits.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

import lightgbm
import numpy as np
import pytest
import shap
import xgboost
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from tensorwire.kernels import config, tree_shap
from tensorwire.server.families.trees.ensemble import TreeEnsemble
from tensorwire.server.families.trees.lightgbm_format import ensemble_from_lightgbm_object
from tensorwire.server.families.trees.scorer import TreeEnsembleScorer, exported_ensemble
from tensorwire.server.families.trees.sklearn_trees import SKLEARN_CONVERTERS
from tensorwire.server.families.trees.xgboost_format import ensemble_from_xgboost_object, read_xgboost_file
from tensorwire.server.modeling.export import export
from tensorwire.server.modeling.registry import build_scorer
from tensorwire.server.repository.model_format import INPUT_NAME, Manifest, ModelFormatError, TensorSpec, array_spec, load_model

from .test_kernels_trees import CASES, N_FEATURES, as_raw_model, random_ensemble, random_rows

TOLERANCE = 1e-6  # of the largest absolute raw score


def served_outputs(ensemble: TreeEnsemble, X: np.ndarray, dtype: Any = np.float64) -> dict[str, np.ndarray]:
    """Every output of `ensemble`, contributions included, for rows X (cast to dtype), scored as the server scores them."""
    datatype = "FP32" if np.dtype(dtype) == np.float32 else "FP64"
    exported = exported_ensemble(ensemble, ensemble, None, datatype, "test")
    manifest = Manifest(
        kind=exported.kind, estimator=ensemble.estimator, inputs=[TensorSpec(INPUT_NAME, datatype, [-1, exported.n_features])],
        outputs=exported.outputs, arrays={name: array_spec(a) for name, a in exported.arrays.items()}, params=exported.params,
    )
    arrays = {name: _read_only(a) for name, a in exported.arrays.items()}
    names = [o.name for o in manifest.outputs]
    return dict(zip(names, TreeEnsembleScorer(manifest, arrays).score(_read_only(np.ascontiguousarray(X, dtype=dtype)), names), strict=True))


def _read_only(a: np.ndarray) -> np.ndarray:
    a = np.array(a)
    a.setflags(write=False)
    return a


# --- the oracle: Shapley values of the path-dependent game, every subset enumerated ---


def subset_values(ensemble: TreeEnsemble, X: np.ndarray) -> np.ndarray:
    """v [rows, 2**F, n_raw]: for each subset S (bit f set: feature f in S), base + (sum over trees of
    E(root)) / divisor, where E(leaf) is its value, E(split on f in S) E(the child the row goes to),
    E(split on f not in S) the cover-weighted mean of its children's E."""
    assert ensemble.cover is not None
    Xc = X.astype(np.float32).astype(np.float64) if ensemble.precision == "float32" else X.astype(np.float64)
    n_rows, n_features = Xc.shape
    subsets = np.arange(2**n_features)
    in_subset = (subsets[:, None] >> np.arange(n_features)) & 1 == 1  # [2**F, F]
    E = np.zeros((ensemble.n_nodes, n_rows, subsets.shape[0], ensemble.width))
    order = _children_first(ensemble)
    for node in order:
        if ensemble.left[node] < 0:
            E[node] = ensemble.value[node]
            continue
        f, lo, hi = ensemble.feature[node], ensemble.left[node], ensemble.right[node]
        goes_left = ensemble.go_left(np.full(n_rows, node), Xc[:, f])[:, None, None]
        followed = np.where(goes_left, E[lo], E[hi])
        c = ensemble.cover
        averaged = (c[lo] * E[lo] + c[hi] * E[hi]) / c[node]
        E[node] = np.where(in_subset[None, :, f, None], followed, averaged)
    total = np.zeros((n_rows, subsets.shape[0], ensemble.n_raw))
    for root, column in zip(ensemble.roots, ensemble.tree_output, strict=True):
        total[:, :, column : column + ensemble.width] += E[root]
    return ensemble.base + total / ensemble.divisor


def _children_first(ensemble: TreeEnsemble) -> list[int]:
    order: list[int] = []
    stack = [int(r) for r in ensemble.roots]
    while stack:
        node = stack.pop()
        order.append(node)
        if ensemble.left[node] >= 0:
            stack += [int(ensemble.left[node]), int(ensemble.right[node])]
    return order[::-1]


def shapley_oracle(ensemble: TreeEnsemble, X: np.ndarray) -> np.ndarray:
    """[rows, n_raw, F + 1]: each feature's Shapley value of the game subset_values defines, then v(empty set)."""
    v = subset_values(ensemble, X)
    n_features = X.shape[1]
    phi = np.zeros((X.shape[0], ensemble.n_raw, n_features + 1))
    for i in range(n_features):
        for s in range(2**n_features):
            if s >> i & 1:
                continue
            size = bin(s).count("1")
            weight = math.factorial(size) * math.factorial(n_features - size - 1) / math.factorial(n_features)
            phi[:, :, i] += weight * (v[:, s | 1 << i] - v[:, s])
    phi[:, :, n_features] = v[:, 0]
    return phi


def with_random_covers(ensemble: TreeEnsemble, seed: int) -> TreeEnsemble:
    """Covers as training would leave them: each node's the sum of its children's, leaves random (some tiny)."""
    rng = np.random.default_rng(seed)
    cover = np.where(rng.random(ensemble.n_nodes) < 0.1, 1e-3, rng.integers(1, 50, size=ensemble.n_nodes)).astype(np.float64)
    for node in _children_first(ensemble):
        if ensemble.left[node] >= 0:
            cover[node] = cover[ensemble.left[node]] + cover[ensemble.right[node]]
    ensemble.cover = cover
    return ensemble


def assert_contributions(actual: np.ndarray, expected: np.ndarray, raw: np.ndarray) -> None:
    scale = max(1.0, float(np.abs(raw).max()))
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=0, atol=TOLERANCE * scale)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("algorithm", ["fast", "plain"])
def test_kernel_gives_the_shapley_values_of_random_ensembles(case: dict[str, Any], seed: int, dtype: Any, algorithm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both algorithms: Fast TreeSHAP v2's tables where a tree's paths are short enough (here every tree), the plain one elsewhere."""
    if algorithm == "plain":
        monkeypatch.setattr(tree_shap, "FAST_TABLE_BUDGET", 0)
    ensemble = with_random_covers(as_raw_model(random_ensemble(seed, **case)), seed)
    ensemble.validate()
    X = random_rows(ensemble, 40, seed).astype(dtype)
    expected = shapley_oracle(ensemble, X)
    raw = ensemble.raw_reference(X)
    for rows in (1, 40):
        served = served_outputs(ensemble, X[:rows], dtype)
        contributions = served["contributions"].reshape(rows, ensemble.n_raw, N_FEATURES + 1)
        assert_contributions(contributions, expected[:rows], raw)
        # each row sums to its raw score
        assert_contributions(contributions.astype(np.float64).sum(axis=2), served["predict"].reshape(rows, -1), raw)
    monkeypatch.setattr(config, "PARALLEL_MIN_ROWS", 1)
    monkeypatch.setattr(config, "parallel_enabled", lambda: True)
    parallel = served_outputs(ensemble, X, dtype)["contributions"].reshape(40, ensemble.n_raw, N_FEATURES + 1)
    assert_contributions(parallel, expected, raw)


@pytest.mark.parametrize("case", [CASES[0], {"special": True, "precision": "float64", "comparison": "le"}], ids=["numeric", "special"])
@pytest.mark.parametrize("budget", [0, 40, 1 << 20], ids=["plain", "mixed", "fast"])
def test_rows_in_several_blocks_match_rows_one_by_one(case: dict[str, Any], budget: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel explains ROW_BLOCK rows tree by tree: a batch over several blocks (the last one short), whose trees take
    either algorithm, gives each row what it gets alone (bit for bit: each row still adds its trees in order) and the oracle's values."""
    monkeypatch.setattr(tree_shap, "FAST_TABLE_BUDGET", budget)
    ensemble = with_random_covers(as_raw_model(random_ensemble(5, **case)), 5)
    ensemble.validate()
    n_rows = 2 * tree_shap.ROW_BLOCK + 7
    X = random_rows(ensemble, n_rows, 5)
    batch = served_outputs(ensemble, X)["contributions"].reshape(n_rows, ensemble.n_raw, N_FEATURES + 1)
    for row in (0, tree_shap.ROW_BLOCK - 1, tree_shap.ROW_BLOCK, n_rows - 1):
        alone = served_outputs(ensemble, X[row : row + 1])["contributions"].reshape(ensemble.n_raw, N_FEATURES + 1)
        np.testing.assert_array_equal(batch[row], alone)
    assert_contributions(batch, shapley_oracle(ensemble, X), ensemble.raw_reference(X))


def test_hand_computed_stump() -> None:
    """One split on feature 0 at 0.5, covers 3 (left, value 1) and 1 (right, value 5): E = 2; x0 = 0 -> phi0 = -1."""
    ensemble = TreeEnsemble(
        estimator="stump", n_features=2, feature=np.array([0, 0, 0]), threshold=np.array([0.5, 0.0, 0.0]),
        left=np.array([1, -1, -1]), right=np.array([2, -1, -1]), missing_left=np.zeros(3, dtype=bool),
        value=np.array([[0.0], [1.0], [5.0]]), roots=np.array([0]), tree_output=np.array([0]), base=np.array([0.0]),
        cover=np.array([4.0, 3.0, 1.0]),
    )
    out = served_outputs(ensemble, np.array([[0.0, 7.0], [1.0, 7.0]]))["contributions"]
    np.testing.assert_allclose(out, [[-1.0, 0.0, 2.0], [3.0, 0.0, 2.0]])


# --- scikit-learn, against shap.TreeExplainer ---


def regression_data(seed: int, n_rows: int = 300, n_features: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_features))
    y = 2 * X[:, 0] + X[:, 1] * X[:, 2] + np.sin(3 * X[:, 3]) + 0.3 * rng.normal(size=n_rows)
    return X, y


def class_labels(y: np.ndarray, n_classes: int) -> np.ndarray:
    return np.digitize(y, np.quantile(y, np.linspace(0, 1, n_classes + 1)[1:-1]))


def with_nan(X: np.ndarray, seed: int, rate: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = X.copy()
    X[rng.random(X.shape) < rate] = np.nan
    return X


def _sklearn_models() -> dict[str, Any]:
    X, y = regression_data(0)
    Xn = with_nan(X, 1)
    binary, three = class_labels(y, 2), class_labels(y, 3)
    small = {"n_estimators": 15, "random_state": 0}
    return {
        "DecisionTreeRegressor": (DecisionTreeRegressor(max_depth=8, random_state=0).fit(X, y), X),
        "DecisionTreeClassifier": (DecisionTreeClassifier(max_depth=6, random_state=0).fit(X, three), X),
        "RandomForestRegressor": (RandomForestRegressor(max_depth=7, **small).fit(X, y), X),
        "RandomForestClassifier": (RandomForestClassifier(max_depth=6, **small).fit(X, three), X),
        "ExtraTreesRegressor": (ExtraTreesRegressor(max_depth=7, **small).fit(X, y), X),
        "ExtraTreesClassifier-binary": (ExtraTreesClassifier(max_depth=6, **small).fit(X, binary), X),
        "GradientBoostingRegressor": (GradientBoostingRegressor(max_depth=4, **small).fit(X, y), X),
        "GradientBoostingClassifier-binary": (GradientBoostingClassifier(max_depth=3, **small).fit(X, binary), X),
        "GradientBoostingClassifier-multiclass": (GradientBoostingClassifier(max_depth=3, **small).fit(X, three), X),
        "HistGradientBoostingRegressor-nan": (HistGradientBoostingRegressor(max_iter=15, random_state=0).fit(Xn, y), Xn),
        "HistGradientBoostingClassifier-binary-nan": (HistGradientBoostingClassifier(max_iter=15, random_state=0).fit(Xn, binary), Xn),
        "HistGradientBoostingClassifier-multiclass": (HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(X, three), X),
    }


@pytest.fixture(scope="module")
def sklearn_models() -> dict[str, Any]:
    return _sklearn_models()


def shap_layout(values: Any, n_rows: int, n_features: int) -> np.ndarray:
    """shap's (rows, F) or (rows, F, outputs) as [rows, outputs, F]."""
    values = np.asarray(values, dtype=np.float64)
    return values.reshape(n_rows, 1, n_features) if values.ndim == 2 else values.transpose(0, 2, 1)


SKLEARN_CASES = [
    "DecisionTreeRegressor", "DecisionTreeClassifier", "RandomForestRegressor", "RandomForestClassifier", "ExtraTreesRegressor",
    "ExtraTreesClassifier-binary", "GradientBoostingRegressor", "GradientBoostingClassifier-binary",
    "HistGradientBoostingRegressor-nan", "HistGradientBoostingClassifier-binary-nan", "HistGradientBoostingClassifier-multiclass",
]


@pytest.mark.parametrize("name", SKLEARN_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sklearn_models_match_shap(sklearn_models: dict[str, Any], name: str, dtype: Any) -> None:
    model, X = sklearn_models[name]
    ensemble = SKLEARN_CONVERTERS[type(model)](model)
    rows = X[:60].astype(dtype)
    explainer = shap.TreeExplainer(model)
    expected = shap_layout(explainer.shap_values(rows), rows.shape[0], X.shape[1])
    served = served_outputs(ensemble, rows, dtype)["contributions"]
    served = served.reshape(rows.shape[0], -1, X.shape[1] + 1)
    raw = ensemble.raw_reference(rows)
    assert_contributions(served[:, :, :-1], expected, raw)
    assert_contributions(served[0, :, -1], np.asarray(explainer.expected_value, dtype=np.float64).reshape(-1), raw)
    assert_contributions(served.sum(axis=2), raw, raw)


def test_isolation_forest_matches_shap_in_path_length_units() -> None:
    """shap explains the mean path length; tensorwire's raw score is that over c(max_samples), score_samples = -2 ** -raw."""
    X, _ = regression_data(2)
    model = IsolationForest(n_estimators=20, max_samples=128, max_features=0.8, random_state=0).fit(X)
    ensemble = SKLEARN_CONVERTERS[IsolationForest](model)
    rows = X[:40]
    explainer = shap.TreeExplainer(model)
    n = model._max_samples
    scale = 2.0 * (np.log(n - 1.0) + np.euler_gamma) - 2.0 * (n - 1.0) / n  # c(n), the mean path length of n samples
    served = served_outputs(ensemble, rows)["contributions"]
    raw = ensemble.raw_reference(rows)
    assert_contributions(served[:, :-1], np.asarray(explainer.shap_values(rows)) / scale, raw)
    assert_contributions(served[:, -1], np.full(rows.shape[0], float(np.ravel(explainer.expected_value)[0]) / scale), raw)


def test_multiclass_gradient_boosting_matches_the_oracle(sklearn_models: dict[str, Any]) -> None:
    """shap refuses multiclass GradientBoostingClassifier: the subset-enumerating oracle stands in."""
    model, X = sklearn_models["GradientBoostingClassifier-multiclass"]
    ensemble = SKLEARN_CONVERTERS[type(model)](model)
    rows = X[:30]
    served = served_outputs(ensemble, rows)["contributions"]
    assert served.shape == (30, 3, X.shape[1] + 1)
    assert_contributions(served, shapley_oracle(ensemble, rows), ensemble.raw_reference(rows))


def test_decision_tree_with_missing_values_matches_the_oracle() -> None:
    """shap sends NaN left at every scikit-learn tree split; tensorwire follows missing_go_to_left, as predict does."""
    X, y = regression_data(3, n_rows=200, n_features=5)
    Xn = with_nan(X, 4, rate=0.2)
    model = DecisionTreeRegressor(max_depth=5, random_state=0).fit(Xn, y)
    ensemble = SKLEARN_CONVERTERS[DecisionTreeRegressor](model)
    rows = Xn[:30]
    served = served_outputs(ensemble, rows)["contributions"]
    assert_contributions(served.reshape(30, 1, 6), shapley_oracle(ensemble, rows), ensemble.raw_reference(rows))


def test_histgradientboosting_categorical_matches_the_oracle() -> None:
    rng = np.random.default_rng(5)
    X = np.column_stack([rng.integers(0, 6, 400), rng.normal(size=400), rng.integers(0, 3, 400), rng.normal(size=400)]).astype(np.float64)
    y = np.array([0.0, 2, -1, 3, 0.5, -2])[X[:, 0].astype(int)] + X[:, 1] + (X[:, 2] == 1)
    X[rng.random(400) < 0.1, 0] = np.nan
    model = HistGradientBoostingRegressor(max_iter=10, categorical_features=[0, 2], random_state=0).fit(X, y)
    ensemble = SKLEARN_CONVERTERS[HistGradientBoostingRegressor](model)
    rows = np.vstack([X[:25], [[7.0, 0.0, 1.0, 0.0], [2.5, 0.0, 0.0, 1.0]]])  # an unknown category and a fraction route as missing
    served = served_outputs(ensemble, rows)["contributions"]
    assert_contributions(served.reshape(rows.shape[0], 1, 5), shapley_oracle(ensemble, rows), ensemble.raw_reference(rows))


# --- XGBoost and LightGBM, against their own TreeSHAP ---


def _xgboost_models() -> dict[str, tuple[Any, np.ndarray]]:
    X, y = regression_data(6)
    Xn = with_nan(X, 7)
    params = {"n_estimators": 20, "max_depth": 5, "random_state": 0}
    return {
        "regression": (xgboost.XGBRegressor(**params).fit(Xn, y), Xn),
        "binary": (xgboost.XGBClassifier(**params).fit(Xn, class_labels(y, 2)), Xn),
        "multiclass": (xgboost.XGBClassifier(**params).fit(X, class_labels(y, 3)), X),
    }


@pytest.fixture(scope="module")
def xgboost_models() -> dict[str, tuple[Any, np.ndarray]]:
    return _xgboost_models()


def margins_scale(values: np.ndarray) -> np.ndarray:
    """The raw scores a pred_contribs array sums to."""
    return values.sum(axis=-1)


@pytest.mark.parametrize("name", ["regression", "binary", "multiclass"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_xgboost_matches_pred_contribs(xgboost_models: dict[str, tuple[Any, np.ndarray]], name: str, dtype: Any) -> None:
    model, X = xgboost_models[name]
    rows = X[:60].astype(dtype)
    expected = model.get_booster().predict(xgboost.DMatrix(rows, missing=np.nan), pred_contribs=True).astype(np.float64)
    served = served_outputs(ensemble_from_xgboost_object(model), rows, dtype)["contributions"]
    assert served.shape == expected.shape
    assert_contributions(served, expected, margins_scale(expected))


def test_xgboost_files_keep_the_covers(xgboost_models: dict[str, tuple[Any, np.ndarray]], tmp_path: pathlib.Path) -> None:
    model, X = xgboost_models["binary"]
    expected = model.get_booster().predict(xgboost.DMatrix(X[:20], missing=np.nan), pred_contribs=True)
    for suffix in ("json", "ubj"):
        path = tmp_path / f"model.{suffix}"
        model.get_booster().save_model(path)
        served = served_outputs(read_xgboost_file(path), X[:20])["contributions"]
        assert_contributions(served, expected, margins_scale(expected))


def test_xgboost_categorical_matches_pred_contribs() -> None:
    rng = np.random.default_rng(8)
    X = np.column_stack([rng.integers(0, 8, 500), rng.normal(size=500), rng.integers(0, 4, 500)]).astype(np.float64)
    y = np.array([0.0, 1, -1, 2, 0, 3, -2, 1])[X[:, 0].astype(int)] + X[:, 1] + 0.5 * X[:, 2]
    X[rng.random(500) < 0.05, 0] = np.nan
    train = xgboost.DMatrix(X, y, feature_types=["c", "q", "c"], enable_categorical=True)
    booster = xgboost.train({"max_depth": 4, "max_cat_to_onehot": 1, "tree_method": "hist"}, train, num_boost_round=15)
    rows = np.vstack([X[:30], [[9.0, 0.0, 1.0], [-1.0, 0.5, 2.0]]])
    expected = booster.predict(xgboost.DMatrix(rows, feature_types=["c", "q", "c"], enable_categorical=True), pred_contribs=True)
    served = served_outputs(ensemble_from_xgboost_object(booster), rows)["contributions"]
    assert_contributions(served, expected, margins_scale(expected))


def _lightgbm_models() -> dict[str, tuple[Any, np.ndarray]]:
    X, y = regression_data(9)
    Xn = with_nan(X, 10)
    params = {"n_estimators": 20, "num_leaves": 15, "min_child_samples": 5, "random_state": 0, "verbose": -1}
    rng = np.random.default_rng(11)
    Xc = np.column_stack([rng.integers(0, 10, 300), X[:, :3]]).astype(np.float64)
    yc = np.array([0.0, 1, -1, 2, 0, 3, -2, 1, 0, 2])[Xc[:, 0].astype(int)] + X[:, 0]
    return {
        "regression": (lightgbm.LGBMRegressor(**params).fit(Xn, y), Xn),
        "binary": (lightgbm.LGBMClassifier(**params).fit(Xn, class_labels(y, 2)), Xn),
        "multiclass": (lightgbm.LGBMClassifier(**params).fit(X, class_labels(y, 3)), X),
        "categorical": (lightgbm.LGBMRegressor(**params, min_data_per_group=5, cat_smooth=1).fit(Xc, yc, categorical_feature=[0]), Xc),
        "zero-as-missing": (lightgbm.LGBMRegressor(**params, zero_as_missing=True).fit(np.where(np.isnan(Xn), 0.0, Xn), y), np.where(np.isnan(Xn), 0.0, Xn)),
    }


@pytest.fixture(scope="module")
def lightgbm_models() -> dict[str, tuple[Any, np.ndarray]]:
    return _lightgbm_models()


@pytest.mark.parametrize("name", ["regression", "binary", "multiclass", "categorical", "zero-as-missing"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lightgbm_matches_pred_contrib(lightgbm_models: dict[str, tuple[Any, np.ndarray]], name: str, dtype: Any) -> None:
    model, X = lightgbm_models[name]
    rows = X[:60].astype(dtype)
    if name == "categorical":
        rows = np.vstack([rows, np.array([[25.0, 0, 0, 0], [-3.0, 1, 1, 1]], dtype=dtype)])  # unseen and negative categories
    served = served_outputs(ensemble_from_lightgbm_object(model), rows, dtype)["contributions"]
    expected = np.asarray(model.predict(rows.astype(np.float64), pred_contrib=True, raw_score=True), dtype=np.float64)
    expected = expected.reshape(served.shape)
    assert_contributions(served, expected, margins_scale(expected))


# --- which models have the output ---


def test_pipeline_scaler_explains_the_raw_inputs(tmp_path: pathlib.Path) -> None:
    X, y = regression_data(12)
    X = X * 10 + 3
    pipeline = make_pipeline(StandardScaler(), GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=0)).fit(X, y)
    stored = load_model(export(pipeline, tmp_path / "1", dtype="float64"))
    scorer = build_scorer(stored.manifest, stored.arrays)
    (served,) = scorer.score(X[:30], ["contributions"])
    tree = pipeline[-1]
    expected = shap.TreeExplainer(tree).shap_values(pipeline[0].transform(X[:30]))
    assert_contributions(served[:, :-1], expected, tree.predict(pipeline[0].transform(X[:30])))


def test_pipeline_that_mixes_features_has_no_contributions(tmp_path: pathlib.Path) -> None:
    X, y = regression_data(13)
    pipeline = make_pipeline(PCA(3), DecisionTreeRegressor(max_depth=3, random_state=0)).fit(X, y)
    stored = load_model(export(pipeline, tmp_path / "1", dtype="float64"))
    assert "contributions" not in [o.name for o in stored.manifest.outputs]
    assert "cover" not in stored.arrays


def test_model_file_without_covers_has_no_contributions(tmp_path: pathlib.Path) -> None:
    """An export from before covers were stored: no array, no output; asking for it names the outputs there are."""
    X, y = regression_data(14)
    stored = load_model(export(DecisionTreeRegressor(max_depth=3, random_state=0).fit(X, y), tmp_path / "1", dtype="float64"))
    manifest = stored.manifest
    old_outputs = [o for o in manifest.outputs if o.name != "contributions"]
    old_arrays = {name: a for name, a in stored.arrays.items() if name != "cover"}
    old_manifest = type(manifest)(**{**manifest.__dict__, "outputs": old_outputs, "arrays": {k: v for k, v in manifest.arrays.items() if k != "cover"}})
    scorer = build_scorer(old_manifest, old_arrays)
    with pytest.raises(ValueError, match="has no output 'contributions'"):
        scorer.score(X[:2], ["contributions"])
    with pytest.raises(ModelFormatError, match="declares contributions but has no array 'cover'"):
        build_scorer(type(manifest)(**{**manifest.__dict__, "arrays": old_manifest.arrays}), old_arrays)


def test_bad_covers_are_refused_at_load(tmp_path: pathlib.Path) -> None:
    X, y = regression_data(15)
    stored = load_model(export(DecisionTreeRegressor(max_depth=3, random_state=0).fit(X, y), tmp_path / "1", dtype="float64"))
    for bad in (0.0, -1.0, np.nan):
        cover = np.array(stored.arrays["cover"])
        cover[0] = bad
        with pytest.raises(ModelFormatError, match="cover"):
            build_scorer(stored.manifest, {**stored.arrays, "cover": cover})

