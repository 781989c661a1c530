"""LightGBM models read as data (lightgbm_format.py) score as lightgbm's own predict does.

Each model is read twice, from its saved .txt file and from the in-memory object, and compared
with Booster.predict / LGBMClassifier.predict(_proba) / LGBMRegressor.predict on random,
threshold-hugging, tiny, infinite, NaN and odd categorical rows, as float32 and float64.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from tensorwire.server.families.trees.ensemble import TreeEnsemble
from tensorwire.server.families.trees.lightgbm_format import (
    K_ZERO,
    ensemble_from_lightgbm_object,
    ensemble_from_lightgbm_text,
    looks_like_lightgbm,
    read_lightgbm_file,
)

from .tree_parity import adversarial_rows, assert_labels_equal, assert_scores_close, served_outputs

lgb = pytest.importorskip("lightgbm")

N_ROWS, N_FEATURES, N_ITER = 300, 5, 8
SMALL = {"n_estimators": N_ITER, "num_leaves": 7, "min_child_samples": 5, "verbose": -1, "n_jobs": 1}
TINY = [1e-36, -1e-36, 0.0, -0.0, 1e-30, -1e-30]
ODD_CATEGORIES = [0.0, 1.0, 2.0, 37.0, 1000.0, -1.0, -2.5, -0.5, 0.3, 2.7, 1e10, 2.0**31, 2.0**32 + 1, 3e38, np.nan, np.inf, -np.inf]
DTYPES = [np.float64, np.float32]


def _features(seed: int, zeros: bool = True, nan: bool = True, cat: tuple[int, ...] = ()) -> np.ndarray:
    """Training features: normal columns with exact zeros and NaN sprinkled in; `cat` columns hold integer codes."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N_ROWS, N_FEATURES))
    if zeros:
        X[rng.random(X.shape) < 0.15] = 0.0
    if nan:
        X[rng.random(X.shape) < 0.08] = np.nan
    for column, n_categories in zip(cat, (60, 3), strict=False):
        X[:, column] = rng.integers(0, n_categories, N_ROWS)
    return X


def _signal(X: np.ndarray) -> np.ndarray:
    filled = np.nan_to_num(X)
    return filled[:, 0] + 0.8 * filled[:, 1] - 0.5 * (filled[:, 2] == 0) + np.isnan(X[:, 3])


def _classes(X: np.ndarray, labels: list[Any]) -> np.ndarray:
    score = _signal(X)
    edges = np.quantile(score, np.linspace(0, 1, len(labels) + 1)[1:-1])
    return np.asarray(labels, dtype=object if isinstance(labels[0], str) else None)[np.searchsorted(edges, score)]


def _cat_signal(X: np.ndarray) -> np.ndarray:
    return np.nan_to_num(X[:, 0]) + (X[:, 3] % 3 == 0) * 2.0 - (X[:, 3] % 7 == 1) * 1.5 + (X[:, 4] == 1) * 1.0


# --- the models: each builder returns the fitted object and its training features ---

def _binary() -> tuple[Any, np.ndarray]:
    X = _features(1)
    return lgb.LGBMClassifier(objective="binary", sigmoid=0.7, **SMALL).fit(X, _classes(X, ["no", "yes"])), X


def _multiclass() -> tuple[Any, np.ndarray]:
    X = _features(2)
    return lgb.LGBMClassifier(**SMALL).fit(X, _classes(X, [3, 5, 9])), X


def _multiclassova() -> tuple[Any, np.ndarray]:
    X = _features(3)
    return lgb.LGBMClassifier(objective="multiclassova", sigmoid=1.3, **SMALL).fit(X, _classes(X, ["a", "b", "c", "d"])), X


def _regressor(objective: str, target: Callable[[np.ndarray], np.ndarray], **params: Any) -> Callable[[], tuple[Any, np.ndarray]]:
    def build() -> tuple[Any, np.ndarray]:
        X = _features(4)
        return lgb.LGBMRegressor(objective=objective, **{**SMALL, **params}).fit(X, target(X)), X
    return build


def _cross_entropy() -> tuple[Any, np.ndarray]:
    X = _features(5)
    y = 1.0 / (1.0 + np.exp(-_signal(X)))
    return lgb.train({"objective": "cross_entropy", "num_leaves": 7, "min_data_in_leaf": 5, "verbose": -1, "num_threads": 1},
                     lgb.Dataset(X, y), N_ITER), X


def _rf_binary() -> tuple[Any, np.ndarray]:
    X = _features(6)
    model = lgb.LGBMClassifier(boosting_type="rf", subsample=0.7, subsample_freq=1, colsample_bytree=0.8, **SMALL)
    return model.fit(X, _classes(X, [0, 1])), X


def _zero_missing() -> tuple[Any, np.ndarray]:
    X = _features(7, nan=False)
    return lgb.LGBMRegressor(zero_as_missing=True, **SMALL).fit(X, _signal(X) + 3.0 * (X[:, 0] == 0)), X


def _categorical_regression() -> tuple[Any, np.ndarray]:
    X = _features(8, cat=(3, 4))
    model = lgb.LGBMRegressor(min_data_per_group=5, cat_smooth=1.0, **SMALL)
    return model.fit(X, _cat_signal(X), categorical_feature=[3, 4]), X


def _categorical_booster() -> tuple[Any, np.ndarray]:
    X = _features(9, cat=(3, 4))
    params = {"objective": "binary", "num_leaves": 7, "min_data_in_leaf": 5, "min_data_per_group": 5, "cat_smooth": 1.0,
              "verbose": -1, "num_threads": 1}
    return lgb.train(params, lgb.Dataset(X, (_cat_signal(X) > 0.8).astype(float), categorical_feature=[3, 4]), N_ITER), X


def _single_leaf() -> tuple[Any, np.ndarray]:
    X = _features(10)
    return lgb.LGBMRegressor(**{**SMALL, "min_child_samples": 10 * N_ROWS}).fit(X, _signal(X) + 2.0), X


def _single_leaf_multiclass() -> tuple[Any, np.ndarray]:
    X = _features(11)
    return lgb.LGBMClassifier(**{**SMALL, "min_child_samples": 10 * N_ROWS}).fit(X, _classes(X, [0, 1, 2])), X


def _early_stopped() -> tuple[Any, np.ndarray]:
    X = _features(12)
    y = _signal(X) + np.random.default_rng(0).normal(scale=2.0, size=N_ROWS)
    model = lgb.LGBMRegressor(**{**SMALL, "n_estimators": 60, "learning_rate": 0.3})
    model.fit(X[:200], y[:200], eval_set=[(X[200:], y[200:])], callbacks=[lgb.early_stopping(3, verbose=False)])
    return model, X


def _positive(X: np.ndarray) -> np.ndarray:
    return np.exp(0.5 * _signal(X))


BUILDERS: dict[str, Callable[[], tuple[Any, np.ndarray]]] = {
    "binary_sigmoid": _binary,
    "multiclass": _multiclass,
    "multiclassova": _multiclassova,
    "regression": _regressor("regression", _signal),
    "regression_l1": _regressor("regression_l1", _signal),
    "poisson": _regressor("poisson", lambda X: np.round(_positive(X))),
    "gamma": _regressor("gamma", _positive),
    "tweedie": _regressor("tweedie", lambda X: np.round(_positive(X)) * 0.5),
    "cross_entropy": _cross_entropy,
    "rf_regression": _regressor("regression", _signal, boosting_type="rf", subsample=0.7, subsample_freq=1),
    "rf_binary": _rf_binary,
    "zero_missing": _zero_missing,
    "categorical": _categorical_regression,
    "categorical_booster": _categorical_booster,
    "single_leaf": _single_leaf,
    "single_leaf_multiclass": _single_leaf_multiclass,
    "early_stopped": _early_stopped,
}


@dataclass
class Case:
    name: str
    model: Any  # the fitted lightgbm object
    X: np.ndarray
    text: str  # the saved file's contents
    from_object: TreeEnsemble
    from_file: TreeEnsemble
    loaded: Any  # lightgbm.Booster read back from the file


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("lightgbm_models")


@pytest.fixture(scope="module")
def cases(model_dir: pathlib.Path) -> dict[str, Case]:
    """Every model, fitted, saved and read on first use, then shared by the module's tests."""

    class Built(dict[str, Case]):
        def __missing__(self, name: str) -> Case:
            model, X = BUILDERS[name]()
            booster = model if isinstance(model, lgb.Booster) else model.booster_
            path = model_dir / f"{name}.txt"
            booster.save_model(str(path))
            classes = list(model.classes_) if hasattr(model, "classes_") else None
            self[name] = Case(name, model, X, path.read_text(), ensemble_from_lightgbm_object(model),
                              read_lightgbm_file(path, classes), lgb.Booster(model_file=str(path)))
            return self[name]

    return Built()


@pytest.fixture(params=list(BUILDERS))
def case(request: pytest.FixtureRequest, cases: dict[str, Case]) -> Case:
    return cases[request.param]


def _rows(case: Case, ensemble: TreeEnsemble, seed: int) -> np.ndarray:
    """Random rows, rows at the thresholds, rows of tiny values and (categorical models) odd categories."""
    rng = np.random.default_rng(seed)
    random = rng.normal(size=(80, N_FEATURES)) * 1.5
    random[rng.random(random.shape) < 0.05] = np.nan
    tiny = rng.normal(size=(40, N_FEATURES))
    mask = rng.random(tiny.shape) < 0.6
    tiny[mask] = rng.choice(TINY, size=tiny.shape)[mask]
    tiny = np.vstack([tiny, np.array([[v] * N_FEATURES for v in TINY])])
    X = np.vstack([random, adversarial_rows(ensemble, 80, seed, nan=True, inf=True), tiny, case.X[:40]])
    if ensemble.categorical is not None:
        n_rows: int = X.shape[0]
        for column in (3, 4):
            codes = rng.integers(-3, 70, size=n_rows).astype(np.float64)
            odd = rng.random(size=n_rows) < 0.4
            codes[odd] = rng.choice(ODD_CATEGORIES, size=int(odd.sum()))
            X[:, column] = codes
    return X


def _lightgbm_outputs(model: Any, X: np.ndarray) -> dict[str, Any]:
    """What lightgbm's own predict says, under the served output names."""
    if isinstance(model, lgb.LGBMClassifier):
        return {"predict": model.predict(X), "predict_proba": model.predict_proba(X), "decision_function": model.predict(X, raw_score=True)}
    if isinstance(model, lgb.LGBMRegressor):
        return {"predict": model.predict(X)}
    return {"predict": model.predict(X), "raw": model.predict(X, raw_score=True)}


def _assert_parity(ensemble: TreeEnsemble, model: Any, X: np.ndarray, dtype: Any) -> None:
    with np.errstate(over="ignore"):  # 1e308 rows become inf in float32, for lightgbm as for tensorwire
        Xd = np.ascontiguousarray(X, dtype=dtype)
    served = served_outputs(ensemble, Xd, dtype)
    theirs = _lightgbm_outputs(model, Xd)
    if isinstance(model, lgb.LGBMClassifier):
        assert_labels_equal(served["predict"], theirs["predict"])
        assert_scores_close(served["predict_proba"], theirs["predict_proba"], dtype)
    elif ensemble.task == "regression":
        assert_scores_close(served["predict"], theirs["predict"], dtype)
    else:  # a Booster's predict is the probability of class 1 (binary) or of each class
        proba = served["predict_proba"]
        assert_scores_close(proba[:, 1] if ensemble.n_raw == 1 else proba, theirs["predict"], dtype)
    if ensemble.has_decision:
        raw = theirs.get("decision_function", theirs.get("raw"))
        assert_scores_close(served["decision_function"], raw, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_file_matches_lightgbm(case: Case, dtype: Any) -> None:
    _assert_parity(case.from_file, case.loaded, _rows(case, case.from_file, 1), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_object_matches_lightgbm(case: Case, dtype: Any) -> None:
    _assert_parity(case.from_object, case.model, _rows(case, case.from_object, 2), dtype)


def test_file_and_object_read_alike(case: Case) -> None:
    for name in ("feature", "threshold", "left", "right", "missing_left", "value", "roots", "tree_output", "base"):
        np.testing.assert_array_equal(getattr(case.from_file, name), getattr(case.from_object, name))
    assert (case.from_file.task, case.from_file.link, case.from_file.link_scale) == (case.from_object.task, case.from_object.link, case.from_object.link_scale)
    assert case.from_file.accepts_nan and case.from_file.accepts_inf


# --- what each case is meant to exercise really is in the model ---

def _decision_types(text: str) -> set[int]:
    lines = [line for line in text.splitlines() if line.startswith("decision_type=")]
    return {int(v) for line in lines for v in line.partition("=")[2].split()}


def test_models_hold_what_the_cases_are_about(cases: dict[str, Case]) -> None:
    assert {(t >> 2) & 3 for t in _decision_types(cases["regression"].text)} >= {2}  # NaN missing type
    assert any("1.0000000180025095e-35" in line for line in cases["regression"].text.splitlines() if line.startswith("threshold="))
    assert {(t >> 2) & 3 for t in _decision_types(cases["zero_missing"].text)} == {1}  # Zero missing type
    categorical = cases["categorical"].from_object
    assert categorical.categorical is not None and categorical.cat_nbits is not None
    assert categorical.cat_nbits[categorical.categorical].max() > 32  # bitsets longer than one word
    assert (cases["single_leaf"].from_object.left == -1).all()
    assert cases["binary_sigmoid"].from_object.link_scale == 0.7
    assert cases["multiclassova"].from_object.link_scale == 1.3 and cases["multiclassova"].from_object.n_raw == 4
    stopped = cases["early_stopped"].model
    assert 0 < stopped.best_iteration_ < 60 and cases["early_stopped"].from_object.n_trees == stopped.best_iteration_
    assert cases["rf_regression"].from_object.divisor == N_ITER


def test_rf_classifier_serves_no_decision_function(cases: dict[str, Case]) -> None:
    """LightGBM's raw_score for rf is the undivided sum of the trees, unlike the averaged score its probabilities use."""
    ensemble, model = cases["rf_binary"].from_object, cases["rf_binary"].model
    assert not ensemble.has_decision and "decision_function" not in served_outputs(ensemble, cases["rf_binary"].X[:5])
    raw = model.predict(cases["rf_binary"].X, raw_score=True)
    np.testing.assert_allclose(model.predict_proba(cases["rf_binary"].X)[:, 1], 1 / (1 + np.exp(-raw / N_ITER)), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_zero_threshold_band_is_zero(cases: dict[str, Case], dtype: Any) -> None:
    """Values in (1e-35, float32(1e-35)] are zero to LightGBM: a Zero-missing node sends them the default way."""
    case = cases["zero_missing"]
    band = np.array([1e-35, K_ZERO, -K_ZERO, (1e-35 + K_ZERO) / 2, np.nextafter(1e-35, 1.0)])
    X = np.repeat(case.X[:30], band.size, axis=0)
    X[:, :3] = np.tile(band, 30)[:, None]
    _assert_parity(case.from_object, case.model, X, dtype)


def test_thresholds_at_minus_kzero_route_as_lightgbm(cases: dict[str, Case]) -> None:
    """LightGBM rounds |x| <= kZeroThreshold to 0.0 before routing: -kZero goes where 0.0 goes, not where x <= -kZero says."""
    case = cases["regression"]
    X = np.repeat(case.X[:30], 4, axis=0)
    X[:, :3] = np.tile(np.array([K_ZERO, -K_ZERO, 1e-36, -1e-36]), 30)[:, None]
    for dtype in DTYPES:
        _assert_parity(case.from_object, case.model, X, dtype)


# --- files, detection, refusals ---

def test_looks_like_lightgbm(cases: dict[str, Case], tmp_path: pathlib.Path) -> None:
    text = cases["regression"].text
    assert looks_like_lightgbm(text.encode()[:64])
    assert looks_like_lightgbm(text.replace("\n", "\r\n").encode()[:64])
    assert not looks_like_lightgbm(b'{"learner": {"gradient_booster": {}}}')
    assert not looks_like_lightgbm(b"\x80\x04\x95 pickle")
    assert not looks_like_lightgbm(b"tree")
    path = tmp_path / "model.txt"
    path.write_bytes(text.replace("\n", "\r\n").encode())
    windows = read_lightgbm_file(path)
    np.testing.assert_array_equal(windows.threshold, cases["regression"].from_object.threshold)


def _refused(text: str, *words: str) -> None:
    with pytest.raises(ValueError) as error:
        ensemble_from_lightgbm_text(text)
    for word in words:
        assert word in str(error.value), str(error.value)


def _train_text(params: dict[str, Any], X: np.ndarray, y: np.ndarray, **dataset: Any) -> str:
    base = {"num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1, "num_threads": 1}
    return lgb.train({**base, **params}, lgb.Dataset(X, y, **dataset), 3).model_to_string()


@pytest.fixture(scope="module")
def regression_text(cases: dict[str, Case]) -> str:
    return cases["regression"].text


def test_ranking_objectives_are_refused() -> None:
    X = _features(20, nan=False)
    y = np.random.default_rng(0).integers(0, 3, N_ROWS)
    ranker = lgb.LGBMRanker(**SMALL).fit(X, y, group=[30] * 10)
    with pytest.raises(ValueError, match="lambdarank"):
        ensemble_from_lightgbm_object(ranker)
    _refused(_train_text({"objective": "rank_xendcg"}, X, y, group=[30] * 10), "rank_xendcg")


def test_unexpressible_objectives_are_refused(regression_text: str) -> None:
    X = _features(21, nan=False)
    y = 1.0 / (1.0 + np.exp(-_signal(X)))
    _refused(_train_text({"objective": "cross_entropy_lambda"}, X, y), "cross_entropy_lambda", "log1p")
    _refused(_train_text({"objective": "regression", "reg_sqrt": True}, X, _signal(X)), "regression sqrt")
    _refused(regression_text.replace("objective=regression\n", "objective=survival\n"), "survival")
    _refused(regression_text.replace("objective=regression\n", ""), "custom objective")
    ova2 = _train_text({"objective": "multiclassova", "num_class": 2}, X, (y > 0.5).astype(float))
    _refused(ova2, "multiclassova")


def test_custom_objective_is_refused() -> None:
    X = _features(22, nan=False)
    y = _signal(X)

    def squared_error(preds: np.ndarray, data: Any) -> tuple[np.ndarray, np.ndarray]:
        return preds - data.get_label(), np.ones_like(preds)

    booster = lgb.train({"objective": squared_error, "verbose": -1, "num_leaves": 4}, lgb.Dataset(X, y), 2)
    with pytest.raises(ValueError, match="custom objective"):
        ensemble_from_lightgbm_object(booster)


def test_linear_trees_are_refused() -> None:
    X = _features(23, nan=False)
    _refused(_train_text({"objective": "regression", "linear_tree": True}, X, _signal(X)), "linear")


def test_wrong_wrapper_is_refused(cases: dict[str, Case]) -> None:
    with pytest.raises(ValueError, match="not a lightgbm"):
        ensemble_from_lightgbm_object(object())
    with pytest.raises(ValueError, match="3 classes"):
        ensemble_from_lightgbm_text(cases["binary_sigmoid"].text, classes=[1, 2, 3])


@pytest.mark.parametrize("damage, words", [
    (lambda t: t[: len(t) // 2], ["truncated"]),
    (lambda t: t[: t.index("end of trees")], ["truncated"]),
    (lambda t: t.replace("Tree=1\n", "", 1), ["Tree=1"]),
    (lambda t: "garbage\n" + t, ["'tree'"]),
    (lambda t: "", ["'tree'"]),
    (lambda t: t.replace("is_linear=0", "is_linear=0\nleaf_magic=1", 1), ["leaf_magic"]),
    (lambda t: t.replace("version=v4", "version=v9"), ["v9"]),
    (lambda t: t.replace("num_class=1", "num_class=1\nnew_header=1"), ["new_header"]),
    (lambda t: t.replace("left_child=", "left_child=99 ", 1), ["left_child"]),
    (lambda t: t.replace("leaf_value=", "leaf_value=abc ", 1), ["leaf_value"]),
    (lambda t: _set_first(t, "leaf_value", "inf"), ["finite"]),
    (lambda t: _set_first(t, "split_feature", "7"), ["feature"]),
    (lambda t: t.replace("max_feature_idx=4", "max_feature_idx=1"), ["feature"]),
    (lambda t: _set_first(t, "decision_type", "14"), ["decision_type"]),
    (lambda t: _set_first(t, "left_child", "40"), ["child"]),
    (lambda t: _set_first(t, "num_leaves", "0"), ["num_leaves"]),
], ids=["half", "no_end", "tree_count", "not_lightgbm", "empty", "unknown_tree_key", "version", "unknown_header",
        "child_count", "not_a_number", "infinite_leaf", "feature_range", "max_feature", "missing_type_3", "child_range",
        "no_leaves"])
def test_damaged_text_is_refused(regression_text: str, damage: Callable[[str], str], words: list[str]) -> None:
    _refused(damage(regression_text), *words)



def _set_first(text: str, key: str, value: str) -> str:
    """The text with the first value of the first `key=` line replaced."""
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}="))
    values = lines[index].partition("=")[2].split()
    lines[index] = f"{key}=" + " ".join([value] + values[1:])
    return "\n".join(lines) + "\n"


ONE_SPLIT = """tree
version=v4
num_class=1
num_tree_per_iteration=1
label_index=0
max_feature_idx=0
objective=regression
feature_names=x
feature_infos=[-1:1]

Tree=0
num_leaves=2
num_cat=0
split_feature=0
split_gain=1
threshold={threshold}
decision_type={decision_type}
left_child=-1
right_child=-2
leaf_value=1 2
leaf_weight=1 1
leaf_count=1 1
internal_value=0
internal_weight=0
internal_count=2
is_linear=0
shrinkage=1


end of trees
"""


@pytest.mark.parametrize("threshold, decision_type", [("inf", 8), ("inf", 0), ("inf", 10), ("-1.0000000180025095e-35", 2), ("0", 4)],
                         ids=["inf_nan_right", "inf_none", "inf_nan_left", "minus_kzero", "zero_missing_right"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_one_split_edges(threshold: str, decision_type: int, dtype: Any) -> None:
    """LightGBM writes threshold=inf for 'every number left, NaN right' (missing type NaN): +inf goes left there."""
    text = ONE_SPLIT.format(threshold=threshold, decision_type=decision_type)
    values = [np.inf, -np.inf, np.nan, 1e308, -1e308, 0.0, -0.0, 1e-36, -K_ZERO, K_ZERO, 1e-30, -1e-30]
    if (decision_type >> 2) & 3 == 1:  # the (1e-35, kZero] band of Zero-missing nodes: test_zero_threshold_band_is_zero
        values = [v for v in values if abs(v) != K_ZERO]
    X = np.array(values)[:, None]
    _assert_parity(ensemble_from_lightgbm_text(text), lgb.Booster(model_str=text), X, dtype)


@pytest.mark.parametrize("params", [{"boosting": "dart"}, {"boosting": "goss"}, {"data_sample_strategy": "goss"}])
def test_dart_and_goss_boosters_match(params: dict[str, str]) -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 6))
    X[::9, 1] = np.nan
    y = (X[:, 0] + np.nan_to_num(X[:, 1]) > 0).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 7, **params}, lgb.Dataset(X, label=y), num_boost_round=15)
    got = served_outputs(ensemble_from_lightgbm_object(booster), X, np.float64)
    assert_scores_close(got["decision_function"], booster.predict(X, raw_score=True), np.float64)
