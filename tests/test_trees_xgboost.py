"""XGBoost models read as data (ubjson.py, xgboost_format.py) score as XGBoost's own predict does.

Each model is read three ways (the in-memory object, its .json file, its .ubj file) and scored on
random rows and on rows at the thresholds, as float32 and float64, against XGBClassifier /
XGBRegressor predict, Booster.predict and inplace_predict. Refusals and the UBJSON decoder are tested too.
"""

from __future__ import annotations

import json
import pathlib
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tensorwire.server.families.trees import ubjson
from tensorwire.server.families.trees.ensemble import TreeEnsemble
from tensorwire.server.families.trees.xgboost_format import (
    ensemble_from_xgboost,
    ensemble_from_xgboost_object,
    load_document,
    looks_like_xgboost,
    read_xgboost_file,
)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # --import-mode=importlib leaves tests/ off sys.path
from tree_parity import TOLERANCES, adversarial_rows, assert_labels_equal, assert_scores_close, served_outputs  # noqa: E402

xgb = pytest.importorskip("xgboost")

N_FEATURES = 5
EPS32 = float(np.finfo(np.float32).eps)
SOURCES = ("object", "json", "ubj")
DTYPES = (np.float32, np.float64)


def features(seed: int, n_rows: int = 240, nan: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, N_FEATURES))
    if nan:
        X[rng.random(X.shape) < 0.1] = np.nan
    return X


def signal(X: np.ndarray) -> np.ndarray:
    return np.nan_to_num(X[:, 0] + 0.5 * X[:, 1] * X[:, 2] - 0.3 * X[:, 3], nan=0.2)


def labels(X: np.ndarray, n_classes: int) -> np.ndarray:
    """Classes of equal size, by the rank of the signal."""
    ranks = np.argsort(np.argsort(signal(X), kind="stable"), kind="stable")
    return ranks * n_classes // X.shape[0]


@dataclass
class Case:
    """How to fit one small model, and which of XGBoost's outputs it is compared with."""

    fit: Callable[[], Any]
    classifier: bool


def _classifier(objective: str, n_classes: int = 2, nan: bool = False, **params: Any) -> Case:
    def fit() -> Any:
        X, Xv = features(1, nan=nan), features(2, nan=nan)
        if params.pop("early_stopping", False):
            model = xgb.XGBClassifier(objective=objective, early_stopping_rounds=3, **params)
            return model.fit(X, labels(X, n_classes), eval_set=[(Xv, labels(Xv, n_classes))], verbose=False)
        return xgb.XGBClassifier(objective=objective, **params).fit(X, labels(X, n_classes))

    return Case(fit, classifier=True)


def _regressor(objective: str, target: Callable[[np.ndarray], np.ndarray] = lambda s: s, nan: bool = False, **params: Any) -> Case:
    def fit() -> Any:
        X = features(3, nan=nan)
        return xgb.XGBRegressor(objective=objective, **params).fit(X, target(signal(X)))

    return Case(fit, classifier=False)


def _positive(s: np.ndarray) -> np.ndarray:
    return np.exp(0.5 * s)


def _counts(s: np.ndarray) -> np.ndarray:
    return np.random.default_rng(4).poisson(np.exp(0.5 * s)).astype(float)


def _unit(s: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-s))


CASES: dict[str, Case] = {
    "binary-nan-depth3": _classifier("binary:logistic", nan=True, n_estimators=20, max_depth=3),
    "binary-depth1": _classifier("binary:logistic", n_estimators=15, max_depth=1),
    "softprob-parallel-early-stop": _classifier("multi:softprob", 3, n_estimators=25, max_depth=4, num_parallel_tree=2,
                                                subsample=0.8, early_stopping=True),
    "softmax-nan-depth2": _classifier("multi:softmax", 4, nan=True, n_estimators=10, max_depth=2),
    "dart-binary": _classifier("binary:logistic", booster="dart", rate_drop=0.3, n_estimators=12, max_depth=3),
    "squarederror-nan-depth8": _regressor("reg:squarederror", nan=True, n_estimators=12, max_depth=8),
    "squarederror-depth5": _regressor("reg:squarederror", n_estimators=20, max_depth=5, learning_rate=0.5),
    "random-forest": _regressor("reg:squarederror", n_estimators=2, num_parallel_tree=4, subsample=0.7, max_depth=4),
    "dart-regression": _regressor("reg:squarederror", booster="dart", rate_drop=0.4, n_estimators=15, max_depth=4),
    "poisson": _regressor("count:poisson", _counts, n_estimators=15, max_depth=3),
    "gamma-nan": _regressor("reg:gamma", _positive, nan=True, n_estimators=15, max_depth=4),
    "tweedie": _regressor("reg:tweedie", _counts, n_estimators=15, max_depth=3, tweedie_variance_power=1.3),
    "reg-logistic": _regressor("reg:logistic", _unit, n_estimators=15, max_depth=3),
    "pseudohuber": _regressor("reg:pseudohubererror", n_estimators=10, max_depth=3),
    "absoluteerror": _regressor("reg:absoluteerror", n_estimators=10, max_depth=3),
    "squaredlogerror": _regressor("reg:squaredlogerror", _positive, n_estimators=10, max_depth=3),
    "quantile": _regressor("reg:quantileerror", n_estimators=10, max_depth=3, quantile_alpha=0.8),
}


@dataclass
class Fitted:
    model: Any
    files: dict[str, Path]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Fitted]:
    """Each case fitted once, and saved as .json and .ubj, on first use."""
    folder = tmp_path_factory.mktemp("xgboost-models")
    cache: dict[str, Fitted] = {}

    def get(name: str) -> Fitted:
        if name not in cache:
            model = CASES[name].fit()
            files = {kind: folder / f"{name}.{kind}" for kind in ("json", "ubj")}
            for path in files.values():
                model.save_model(path)
            cache[name] = Fitted(model, files)
        return cache[name]

    return get


def read(fitted: Fitted, source: str) -> TreeEnsemble:
    return ensemble_from_xgboost_object(fitted.model) if source == "object" else read_xgboost_file(fitted.files[source])


def float32_scale(ensemble: TreeEnsemble, dtype: Any) -> float:
    """How far XGBoost's float32 arithmetic may put its scores from tensorwire's float64 sum, in units of the dtype's atol.

    XGBoost adds each tree's leaf to a float32 running margin (cpu_predictor), and each addition may
    round by up to eps32 * |running sum|; the sum's magnitude is at most |base| + the sum over trees of
    the largest |leaf|. So an output column built from n trees is off by up to about
    n * eps32 * magnitude, plus a few eps32 from ProbToMargin, the link (sigmoid, softmax, exp, in float32)
    and the final float32 rounding. Probabilities move by at most that much (the links' slopes are <= 1;
    exp's error is relative). The helper widens rtol by the same factor as atol; labels are compared exactly.
    """
    _, atol = TOLERANCES[np.dtype(dtype)]
    bound = 0.0
    leaves = ensemble.left < 0
    for column in range(ensemble.n_raw):
        trees = np.flatnonzero(ensemble.tree_output == column)
        magnitude = abs(float(ensemble.base[column]))
        for t in trees:
            end = ensemble.roots[t + 1] if t + 1 < ensemble.n_trees else ensemble.n_nodes
            nodes = np.arange(ensemble.roots[t], end)
            magnitude += float(np.abs(ensemble.value[nodes[leaves[nodes]], 0]).max())
        bound = max(bound, (trees.size + 6) * EPS32 * max(magnitude, 1.0))
    return max(1.0, bound / atol)


def rows_for(ensemble: TreeEnsemble, seed: int) -> np.ndarray:
    """Random rows with NaN, then rows at, and a float step either side of, the thresholds, with NaN and ±inf."""
    random_rows = features(100 + seed, n_rows=150, nan=True)
    return np.vstack([random_rows, adversarial_rows(ensemble, 150, seed, nan=True, inf=True)])


def xgboost_outputs(model: Any, X: np.ndarray, classifier: bool) -> dict[str, np.ndarray]:
    """The scikit-learn wrapper's outputs (inplace_predict underneath: it takes NaN and ±inf)."""
    if not classifier:
        return {"predict": model.predict(X)}
    margin = model.predict(X, output_margin=True)
    return {"predict": model.predict(X), "predict_proba": model.predict_proba(X), "decision_function": margin}


def assert_matches(ensemble: TreeEnsemble, X: np.ndarray, expected: dict[str, np.ndarray], dtype: Any) -> None:
    served = served_outputs(ensemble, X, dtype)
    scale = float32_scale(ensemble, dtype)
    for name, values in expected.items():
        if name == "predict" and ensemble.task == "classification":
            assert_labels_equal(served[name], values)
        else:
            assert_scores_close(served[name], values, dtype, scale=scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_sklearn_wrapper(fitted: Callable[[str], Fitted], case: str, source: str, dtype: Any) -> None:
    model = fitted(case)
    ensemble = read(model, source)
    X = rows_for(ensemble, seed=len(case)).astype(dtype)
    assert_matches(ensemble, X, xgboost_outputs(model.model, X, CASES[case].classifier), dtype)


@pytest.mark.parametrize("case", ["binary-nan-depth3", "softprob-parallel-early-stop", "dart-regression", "gamma-nan"])
def test_booster_margin_uses_all_trees(fitted: Callable[[str], Fitted], case: str) -> None:
    """A bare Booster (loaded from either file, or in memory) predicts with every tree, best_iteration or not."""
    model = fitted(case)
    for path in model.files.values():
        booster = xgb.Booster(model_file=str(path))
        ensemble = ensemble_from_xgboost_object(booster)
        X = rows_for(ensemble, seed=7)
        margin = booster.inplace_predict(X, predict_type="margin")
        raw = ensemble.raw_reference(X)
        np.testing.assert_allclose(raw if margin.ndim == 2 else raw[:, 0], margin,
                                   atol=float32_scale(ensemble, np.float64) * TOLERANCES[np.dtype(np.float64)][1], rtol=0)
        finite = np.where(np.isinf(X), 0.0, X)  # DMatrix refuses ±inf
        assert_scores_close(ensemble.raw_reference(finite).squeeze(axis=1) if margin.ndim == 1 else ensemble.raw_reference(finite),
                            booster.predict(xgb.DMatrix(finite), output_margin=True), np.float64,
                            scale=float32_scale(ensemble, np.float64))


def test_best_iteration_is_honoured_like_the_wrapper(fitted: Callable[[str], Fitted]) -> None:
    model = fitted("softprob-parallel-early-stop")
    best = model.model.best_iteration
    assert best + 1 < model.model.get_booster().num_boosted_rounds(), "early stopping should have cut the model short"
    per_round = 3 * 2  # classes * num_parallel_tree
    for source in SOURCES:
        assert read(model, source).n_trees == (best + 1) * per_round
    everything = ensemble_from_xgboost(load_document(model.files["json"].read_bytes()), iteration_range=(0, 0))
    assert everything.n_trees == model.model.get_booster().num_boosted_rounds() * per_round
    X = features(9, nan=True)
    window = ensemble_from_xgboost_object(model.model, iteration_range=(2, 5))
    np.testing.assert_allclose(window.raw_reference(X), model.model.predict(X, output_margin=True, iteration_range=(2, 5)),
                               atol=float32_scale(window, np.float64) * 1e-12, rtol=0)


def test_model_facts(fitted: Callable[[str], Fitted]) -> None:
    binary = read(fitted("binary-nan-depth3"), "ubj")
    assert (binary.task, binary.link, binary.classes, binary.has_decision) == ("classification", "logistic", [0, 1], True)
    assert (binary.comparison, binary.precision, binary.accepts_nan, binary.accepts_inf) == ("lt", "float32", True, True)
    assert binary.depths().max() <= 3 and binary.n_features == N_FEATURES
    softmax = read(fitted("softmax-nan-depth2"), "json")
    assert (softmax.link, softmax.n_raw, softmax.classes) == ("softmax", 4, [0, 1, 2, 3])
    deep = read(fitted("squarederror-nan-depth8"), "object")
    assert deep.depths().max() == 8
    for name, link in (("poisson", "exp"), ("gamma-nan", "exp"), ("tweedie", "exp"), ("reg-logistic", "logistic")):
        assert read(fitted(name), "json").link == link


def test_custom_class_labels(fitted: Callable[[str], Fitted]) -> None:
    document = load_document(fitted("softmax-nan-depth2").files["ubj"].read_bytes())
    ensemble = ensemble_from_xgboost(document, classes=["a", "b", "c", "d"])
    X = features(11)
    expected = np.array(["a", "b", "c", "d"])[fitted("softmax-nan-depth2").model.predict(X)]
    assert_labels_equal(served_outputs(ensemble, X)["predict"], expected)
    with pytest.raises(ValueError, match="4 classes, 2 labels"):
        ensemble_from_xgboost(document, classes=["a", "b"])


def test_logitraw_decision_function_is_the_margin(tmp_path: Path) -> None:
    X = features(12, nan=True)
    model = xgb.XGBClassifier(objective="binary:logitraw", n_estimators=10, max_depth=3).fit(X, (signal(X) > 0).astype(int))
    model.save_model(tmp_path / "raw.ubj")
    for ensemble in (ensemble_from_xgboost_object(model), read_xgboost_file(tmp_path / "raw.ubj")):
        served = served_outputs(ensemble, X)
        margin = model.predict(X, output_margin=True)
        assert_scores_close(served["decision_function"], margin, np.float64, scale=float32_scale(ensemble, np.float64))
        # predict_proba / predict are sigmoid(margin) and margin > 0 (XGBClassifier's own are not probabilities: see notes)
        assert_labels_equal(served["predict"], (margin > 0).astype(int))
        assert "logitraw" in ensemble.notes


def test_regressor_with_logistic_objective_predicts_probability() -> None:
    X = features(13)
    model = xgb.XGBRegressor(objective="binary:logistic", n_estimators=8, max_depth=3).fit(X, (signal(X) > 0).astype(int))
    ensemble = ensemble_from_xgboost_object(model)
    assert (ensemble.task, ensemble.link) == ("regression", "logistic")
    assert_scores_close(served_outputs(ensemble, X)["predict"], model.predict(X), np.float64, scale=float32_scale(ensemble, np.float64))


# --- categorical splits ---

def categorical_data(seed: int, n_rows: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 40, size=n_rows).astype(float)
    codes[rng.random(n_rows) < 0.05] = np.nan
    X = np.column_stack([codes, rng.normal(size=n_rows), rng.integers(0, 5, size=n_rows).astype(float)])
    y = np.isin(codes, [0, 3, 7, 8, 21, 30]) + 0.5 * X[:, 1] - 0.4 * (X[:, 2] == 2)
    return X, y


def categorical_rows(seed: int) -> np.ndarray:
    """Codes seen and unseen, past the bitsets, non-integer, negative (<= -1), huge, ±inf and NaN.
    Values in (-1, 0) are left out: see test_categorical_negative_fraction_divergence."""
    rng = np.random.default_rng(seed)
    specials = np.array([40, 41, 63, 64, 65, 1000, 2.0**24, 2.0**24 + 2, 1e30, np.inf, -np.inf, np.nan, -1, -1.5, -7, 0.5, 3.25, 7.99])
    codes = np.concatenate([np.arange(45, dtype=float), specials, rng.uniform(-3, 80, size=200)])
    codes[(codes > -1) & (codes < 0)] = 0.0
    small = np.concatenate([np.arange(7, dtype=float), [np.nan, -1, 2.5, 9]])
    X = np.column_stack([codes, rng.normal(size=codes.size), rng.choice(small, size=codes.size)])
    X[rng.random(X.shape) < 0.03] = np.nan
    return X


@pytest.fixture(scope="module")
def categorical_boosters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Path, Path]]:
    folder = tmp_path_factory.mktemp("xgboost-categorical")
    X, y = categorical_data(20)
    boosters = {}
    for name, onehot in (("partition", 1), ("onehot", 64)):
        train = xgb.DMatrix(X, label=y, feature_types=["c", "q", "c"], enable_categorical=True)
        booster = xgb.train({"max_depth": 4, "max_cat_to_onehot": onehot, "eta": 0.3}, train, num_boost_round=12)
        paths = folder / f"{name}.json", folder / f"{name}.ubj"
        for path in paths:
            booster.save_model(str(path))
        boosters[name] = (booster, *paths)
    return boosters


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", ["partition", "onehot"])
def test_categorical_parity(categorical_boosters: dict[str, tuple[Any, Path, Path]], kind: str, dtype: Any) -> None:
    booster, json_path, ubj_path = categorical_boosters[kind]
    X = categorical_rows(21).astype(dtype)
    expected = booster.inplace_predict(X)
    for ensemble in (ensemble_from_xgboost_object(booster), read_xgboost_file(json_path), read_xgboost_file(ubj_path)):
        assert ensemble.categorical is not None and ensemble.categorical.any()
        assert_scores_close(served_outputs(ensemble, X, dtype)["predict"], expected, dtype, scale=float32_scale(ensemble, dtype))


def _stump_with_category_zero_in_set() -> Any:
    """One categorical split whose set (the categories going right) holds 0, 3 and 40."""
    X, y = categorical_data(22)
    train = xgb.DMatrix(X[:, :1], label=y, feature_types=["c"], enable_categorical=True)
    booster = xgb.train({"max_depth": 1, "max_cat_to_onehot": 1, "eta": 1.0}, train, num_boost_round=1)
    document = json.loads(booster.save_raw("json"))
    tree = document["learner"]["gradient_booster"]["model"]["trees"][0]
    tree["categories"], tree["categories_sizes"] = [0, 3, 40], [3]
    return document


def test_categorical_set_goes_right() -> None:
    document = _stump_with_category_zero_in_set()
    booster = xgb.Booster(model_file=bytearray(json.dumps(document).encode()))
    ensemble = ensemble_from_xgboost(document)
    X = np.array([[0.0], [-0.0], [3.0], [3.9], [40.0], [1.0], [41.0], [64.0], [-1.0], [np.inf], [np.nan]])
    right = booster.inplace_predict(X[:1])[0]
    served = served_outputs(ensemble, X)["predict"]
    np.testing.assert_array_equal(served[:-1] == right, [True, True, True, True, True, False, False, False, False, False])
    np.testing.assert_allclose(served, booster.inplace_predict(X), rtol=1e-6)


def test_categorical_negative_fraction_goes_where_xgboost_sends_it() -> None:
    document = _stump_with_category_zero_in_set()
    booster = xgb.Booster(model_file=bytearray(json.dumps(document).encode()))
    X = np.array([[-0.5], [-1e-30]])
    np.testing.assert_allclose(served_outputs(ensemble_from_xgboost(document), X)["predict"], booster.inplace_predict(X), rtol=1e-6)


def test_categorical_with_pandas(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    X, y = categorical_data(23)
    frame = pd.DataFrame({"c": pd.Categorical(np.nan_to_num(X[:, 0], nan=-1).astype(int), categories=range(40)), "x": X[:, 1]})
    model = xgb.XGBRegressor(enable_categorical=True, max_cat_to_onehot=1, n_estimators=10, max_depth=3).fit(frame, y)
    model.save_model(tmp_path / "cat.ubj")
    codes = np.column_stack([frame["c"].cat.codes.to_numpy(dtype=float), X[:, 1]])
    codes[codes[:, 0] < 0, 0] = np.nan  # pandas codes a missing category as -1
    for ensemble in (ensemble_from_xgboost_object(model), read_xgboost_file(tmp_path / "cat.ubj")):
        assert_scores_close(served_outputs(ensemble, codes)["predict"], model.predict(frame), np.float64,
                            scale=float32_scale(ensemble, np.float64))


# --- refusals ---

@pytest.fixture(scope="module")
def binary_document(fitted: Callable[[str], Fitted]) -> bytes:
    return fitted("binary-depth1").files["json"].read_bytes()


@pytest.mark.parametrize("objective", ["rank:ndcg", "rank:pairwise", "survival:aft", "survival:cox", "binary:hinge", "reg:made-up"])
def test_unsupported_objectives_are_refused(binary_document: bytes, objective: str) -> None:
    document = json.loads(binary_document)
    document["learner"]["objective"]["name"] = objective
    with pytest.raises(ValueError, match=f"objective '{objective}' is not supported"):
        ensemble_from_xgboost(document)


def test_trained_hinge_is_refused() -> None:
    X = features(30)
    model = xgb.XGBClassifier(objective="binary:hinge", n_estimators=3, max_depth=2).fit(X, (signal(X) > 0).astype(int))
    with pytest.raises(ValueError, match="binary:hinge"):
        ensemble_from_xgboost_object(model)


def test_gblinear_is_refused(tmp_path: Path) -> None:
    X = features(31)
    model = xgb.XGBRegressor(booster="gblinear", n_estimators=3).fit(X, signal(X))
    model.save_model(tmp_path / "linear.ubj")
    for read_it in (lambda: ensemble_from_xgboost_object(model), lambda: read_xgboost_file(tmp_path / "linear.ubj")):
        with pytest.raises(ValueError, match="gblinear"):
            read_it()


@pytest.mark.parametrize("params", [
    {"multi_strategy": "multi_output_tree", "tree_method": "hist"},
    {"multi_strategy": "one_output_per_tree"},
    {"objective": "reg:quantileerror", "quantile_alpha": [0.2, 0.8]},
], ids=["vector-leaves", "one-output-per-tree", "several-quantiles"])
def test_multi_target_is_refused(params: dict[str, Any]) -> None:
    X = features(32)
    y = np.column_stack([signal(X), X[:, 4]]) if "quantile_alpha" not in params else signal(X)
    model = xgb.XGBRegressor(n_estimators=3, max_depth=2, **params).fit(X, y)
    with pytest.raises(ValueError, match="targets|vector leaves"):
        ensemble_from_xgboost_object(model)


def test_missing_fields_are_refused(binary_document: bytes) -> None:
    document = json.loads(binary_document)
    del document["learner"]["gradient_booster"]["model"]["trees"][0]["split_conditions"]
    with pytest.raises(ValueError, match="num_nodes"):
        ensemble_from_xgboost(document)
    with pytest.raises(ValueError, match="learner"):
        ensemble_from_xgboost({"version": [3, 2, 0]})
    document = json.loads(binary_document)
    document["learner"]["gradient_booster"]["name"] = "gbforest"
    with pytest.raises(ValueError, match="gbforest"):
        ensemble_from_xgboost(document)


@pytest.mark.parametrize("kind", ["json", "ubj"])
def test_truncated_and_corrupt_files_are_refused(fitted: Callable[[str], Fitted], tmp_path: Path, kind: str) -> None:
    data = fitted("binary-depth1").files[kind].read_bytes()
    broken = tmp_path / f"broken.{kind}"
    for cut in (len(data) // 2, len(data) - 1, 20):
        broken.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a readable XGBoost model"):
            read_xgboost_file(broken)
    corrupt = bytearray(data)
    corrupt[len(data) // 3 : len(data) // 3 + 8] = b"\xff" * 8
    broken.write_bytes(bytes(corrupt))
    with pytest.raises(ValueError):
        read_xgboost_file(broken)


def test_format_detection_is_by_content(fitted: Callable[[str], Fitted], tmp_path: Path) -> None:
    model = fitted("binary-depth1")
    swapped = {"json": tmp_path / "model.ubj", "ubj": tmp_path / "model.json"}
    X = features(33)
    for kind, path in swapped.items():
        data = model.files[kind].read_bytes()
        assert looks_like_xgboost(data[:64])
        path.write_bytes(data)
        assert_scores_close(served_outputs(read_xgboost_file(path), X)["predict_proba"], model.model.predict_proba(X), np.float64,
                            scale=float32_scale(read_xgboost_file(path), np.float64))
    for head in (b"PK\x03\x04", b'{"model": 1}', b"", b"\x80\x04\x95", b"{L\x00\x00\x00\x00\x00\x00\x00\x07weights"):
        assert not looks_like_xgboost(head)
    assert looks_like_xgboost(b'  {"learner": {')


# --- the UBJSON decoder ---

def test_ubjson_matches_xgboost_json(fitted: Callable[[str], Fitted]) -> None:
    booster = fitted("softprob-parallel-early-stop").model.get_booster()
    from_ubj = ubjson.loads(bytes(booster.save_raw("ubj")))
    from_json = json.loads(bytes(booster.save_raw("json")))

    def same(a: Any, b: Any) -> None:
        if isinstance(a, np.ndarray):
            assert a.dtype.isnative
            np.testing.assert_array_equal(a, np.asarray(b, dtype=np.float64).astype(a.dtype))
        elif isinstance(a, dict):
            assert a.keys() == b.keys()
            for key in a:
                same(a[key], b[key])
        elif isinstance(a, list):
            assert len(a) == len(b)
            for x, y in zip(a, b, strict=True):
                same(x, y)
        elif isinstance(a, float):
            assert np.float32(a) == np.float32(b)
        else:
            assert a == b

    same(from_ubj, from_json)
    tree = from_ubj["learner"]["gradient_booster"]["model"]["trees"][0]
    assert tree["split_conditions"].dtype == np.float32 and tree["default_left"].dtype == np.uint8


def _length(n: int) -> bytes:
    return b"L" + struct.pack(">q", n)


def _key(text: str) -> bytes:
    return _length(len(text.encode())) + text.encode()


def test_ubjson_values() -> None:
    document = (b"{" + _key("i") + b"i\xff" + _key("U") + b"U\xff" + _key("I") + b"I\x80\x00" + _key("l") + b"l\x00\x01\x00\x00"
                + _key("L") + b"L" + struct.pack(">q", -2**40) + _key("d") + b"d" + struct.pack(">f", 1.5)
                + _key("D") + b"D" + struct.pack(">d", -0.1) + _key("s") + b"S" + _key("héllo")
                + _key("c") + b"Cx" + _key("z") + b"Z" + _key("t") + b"T" + _key("f") + b"F" + _key("h") + b"HU\x0512345"
                + _key("n") + b"N[i\x01N]" + b"}")
    assert ubjson.loads(document) == {"i": -1, "U": 255, "I": -32768, "l": 65536, "L": -2**40, "d": 1.5, "D": -0.1, "s": "héllo",
                                      "c": "x", "z": None, "t": True, "f": False, "h": 12345, "n": [1]}


@pytest.mark.parametrize("marker,dtype", [("i", np.int8), ("U", np.uint8), ("I", np.int16), ("l", np.int32), ("L", np.int64),
                                          ("d", np.float32), ("D", np.float64)])
def test_ubjson_typed_arrays(marker: str, dtype: Any) -> None:
    values = np.array([0, 1, 2, 100, 7], dtype=dtype)
    encoded = b"[$" + marker.encode() + b"#" + _length(5) + values.astype(np.dtype(dtype).newbyteorder(">")).tobytes()
    decoded = ubjson.loads(encoded)
    assert isinstance(decoded, np.ndarray) and decoded.dtype == dtype and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, values)


def test_ubjson_optimised_containers() -> None:
    assert ubjson.loads(b"[#U\x03i\x01Si\x01aZ") == [1, "a", None]
    assert ubjson.loads(b"[$T#U\x02") == [True, True]
    assert ubjson.loads(b"[$S#U\x02U\x01aU\x02bc") == ["a", "bc"]
    assert ubjson.loads(b"{$i#U\x02U\x01a\x01U\x01b\x02") == {"a": 1, "b": 2}
    assert ubjson.loads(b"{#U\x01U\x01a[]") == {"a": []}


@pytest.mark.parametrize("data,message", [
    (b"", "truncated"),
    (b"[i\x01", "truncated"),
    (b"{U\x05ab", "truncated"),
    (b"[$d#L" + struct.pack(">q", 10**12) + b"\x00\x00", "exceeds the input"),
    (b"[$Z#L" + struct.pack(">q", 10**12), "exceeds the input"),
    (b"[#i\xff", "negative length"),
    (b"[$di\x01", "needs a count"),
    (b"Sd\x00\x00\x00\x00", "integer length"),
    (b"Q", "unknown type marker"),
    (b"\x00", "unknown type marker 0x00"),
    (b"i\x01i\x02", "after the document"),
    (b"SU\x02\xff\xfe", "not UTF-8"),
    (b"HU\x03abc", "not a number"),
    (b"[" * 100 + b"]" * 100, "nested deeper"),
])
def test_ubjson_malformed_input(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ubjson.loads(data)
