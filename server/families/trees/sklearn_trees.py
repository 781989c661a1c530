"""Fitted scikit-learn trees, forests, gradient boosting and isolation forests as a `TreeEnsemble`.

Each converter records scikit-learn's own routing (float32 `x <= threshold` for the `tree_`
based models, float64 for HistGradientBoosting) and folds its prediction arithmetic
(learning rate, init/baseline scores, averaging, path lengths) into leaves, base and divisor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tensorwire.server.families.trees.ensemble import TreeEnsemble
from tensorwire.server.modeling.export_support import class_labels
from tensorwire.server.modeling.registry import ClassTable

# HistGradientBoosting categories become bits of a bitset indexed by the category's value
MAX_CATEGORY = 1 << 16

# scikit-learn's loss links -> (TreeEnsemble link, link_scale)
_LINKS = {
    "IdentityLink": ("identity", 1.0),
    "LogLink": ("exp", 1.0),
    "LogitLink": ("logistic", 1.0),
    "HalfLogitLink": ("logistic", 2.0),  # exponential loss: p = expit(2 * raw)
    "MultinomialLogit": ("softmax", 1.0),
}


@dataclass
class _Trees:
    """Nodes of several trees, before they are concatenated; children are indices within each tree."""

    feature: list[np.ndarray]
    threshold: list[np.ndarray]
    left: list[np.ndarray]
    right: list[np.ndarray]
    missing_left: list[np.ndarray]
    value: list[np.ndarray]
    tree_output: list[int]
    categorical: list[np.ndarray]
    cat_start: list[np.ndarray]
    cat_nbits: list[np.ndarray]
    cat_words: list[np.ndarray]
    cover: list[np.ndarray]

    @classmethod
    def empty(cls) -> _Trees:
        return cls([], [], [], [], [], [], [], [], [], [], [], [])

    def add(self, feature: np.ndarray, threshold: np.ndarray, left: np.ndarray, right: np.ndarray,
            missing_left: np.ndarray, value: np.ndarray, output: int, cover: np.ndarray) -> None:
        n = feature.shape[0]
        self.cover.append(np.asarray(cover, dtype=np.float64))
        self.feature.append(np.asarray(feature, dtype=np.int64))
        self.threshold.append(np.asarray(threshold, dtype=np.float64))
        self.left.append(np.asarray(left, dtype=np.int64))
        self.right.append(np.asarray(right, dtype=np.int64))
        self.missing_left.append(np.asarray(missing_left, dtype=bool))
        self.value.append(np.asarray(value, dtype=np.float64).reshape(n, -1))
        self.tree_output.append(output)
        self.categorical.append(np.zeros(n, dtype=bool))
        self.cat_start.append(np.zeros(n, dtype=np.int64))
        self.cat_nbits.append(np.zeros(n, dtype=np.int64))
        self.cat_words.append(np.zeros(0, dtype=np.uint32))

    def ensemble(self, estimator: Any, base: np.ndarray, **fields: Any) -> TreeEnsemble:
        sizes = np.array([f.shape[0] for f in self.feature], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        left = np.concatenate([np.where(lt >= 0, lt + o, -1) for lt, o in zip(self.left, offsets, strict=True)])
        right = np.concatenate([np.where(rt >= 0, rt + o, -1) for rt, o in zip(self.right, offsets, strict=True)])
        leaf = left < 0
        categorical = np.concatenate(self.categorical)
        cat_fields: dict[str, Any] = {}
        if categorical.any():
            word_offsets = np.concatenate([[0], np.cumsum([w.shape[0] for w in self.cat_words])[:-1]]).astype(np.int64)
            starts = [s + wo for s, wo in zip(self.cat_start, word_offsets, strict=True)]
            cat_fields = {
                "categorical": categorical,
                "cat_start": np.where(categorical, np.concatenate(starts), 0).astype(np.int64),
                "cat_nbits": np.concatenate(self.cat_nbits),
                "cat_words": np.concatenate(self.cat_words).astype(np.uint32),
                # a value outside the bitset goes where NaN goes (HistGradientBoosting's unknown categories)
                "cat_other_left": np.concatenate(self.missing_left),
            }
        result = TreeEnsemble(
            estimator=type(estimator).__name__,
            n_features=int(estimator.n_features_in_),
            feature=np.where(leaf, 0, np.concatenate(self.feature)),
            threshold=np.where(leaf, 0.0, np.concatenate(self.threshold)),
            left=left,
            right=right,
            missing_left=np.concatenate(self.missing_left) & ~leaf,
            value=np.concatenate(self.value),
            roots=offsets,
            tree_output=np.array(self.tree_output, dtype=np.int64),
            base=np.asarray(base, dtype=np.float64).reshape(-1),
            cover=np.concatenate(self.cover),
            **cat_fields,
            **fields,
        )
        result.validate()
        return result


# --- models built on sklearn.tree's Tree (float32 features, x <= threshold) ---


def _add_tree(trees: _Trees, tree: Any, value: np.ndarray, output: int = 0, features: np.ndarray | None = None) -> None:
    """One fitted sklearn.tree Tree (`tree_`); `features` maps its feature indices to the model's (bagging)."""
    feature = np.asarray(tree.feature, dtype=np.int64)
    leaf = tree.children_left < 0
    if features is not None:
        feature = np.where(leaf, 0, np.asarray(features, dtype=np.int64)[np.where(leaf, 0, feature)])
    missing = getattr(tree, "missing_go_to_left", None)
    missing_left = np.zeros(tree.node_count, dtype=bool) if missing is None else np.asarray(missing, dtype=bool)
    # shap's TreeExplainer weighs branches by weighted_n_node_samples too
    trees.add(feature, tree.threshold, tree.children_left, tree.children_right, missing_left, value, output, tree.weighted_n_node_samples)


def _classifier_values(tree: Any) -> np.ndarray:
    # tree_.value of a classifier already holds each node's class fractions: predict_proba returns them as stored
    return np.asarray(tree.value[:, 0, :], dtype=np.float64)


def _regressor_values(tree: Any) -> np.ndarray:
    return np.asarray(tree.value[:, :, 0], dtype=np.float64)


def _refuse_multioutput_classifier(estimator: Any) -> None:
    if getattr(estimator, "n_outputs_", 1) != 1:
        raise ValueError(
            f"tensorwire cannot export {type(estimator).__name__}: multi-output classification "
            f"(n_outputs_={estimator.n_outputs_}) is not supported"
        )


def _classes(estimator: Any) -> list[Any]:
    return class_labels(estimator.classes_, type(estimator).__name__)[1]


def _tree_fields(estimator: Any, members: Sequence[Any]) -> dict[str, Any]:
    """What every sklearn.tree model shares: float32 `<=` routing; NaN as the trees' tags allow, never infinity
    (check_array refuses ±inf, and float64 values beyond float32's range, which the cast turns into inf)."""
    from sklearn.utils import get_tags  # exporting only: a serving process never imports scikit-learn

    return {
        "precision": "float32",
        "comparison": "le",
        "accepts_nan": bool(get_tags(members[0]).input_tags.allow_nan),
        "accepts_inf": False,
    }


def _classification_trees(estimator: Any, members: Sequence[Any]) -> TreeEnsemble:
    _refuse_multioutput_classifier(estimator)
    trees = _Trees.empty()
    for member in members:
        _add_tree(trees, member.tree_, _classifier_values(member.tree_))
    n_classes = len(estimator.classes_)
    return trees.ensemble(
        estimator, np.zeros(n_classes), divisor=float(len(members)), task="classification", link="proba",
        classes=_classes(estimator), **_tree_fields(estimator, members),
    )


def _regression_trees(estimator: Any, members: Sequence[Any]) -> TreeEnsemble:
    trees = _Trees.empty()
    for member in members:
        _add_tree(trees, member.tree_, _regressor_values(member.tree_))
    return trees.ensemble(
        estimator, np.zeros(int(estimator.n_outputs_)), divisor=float(len(members)), **_tree_fields(estimator, members)
    )


def convert_decision_tree_classifier(estimator: Any) -> TreeEnsemble:
    """DecisionTreeClassifier / ExtraTreeClassifier: predict_proba is the leaf's class fractions."""
    return _classification_trees(estimator, [estimator])


def convert_decision_tree_regressor(estimator: Any) -> TreeEnsemble:
    """DecisionTreeRegressor / ExtraTreeRegressor, one or several outputs."""
    return _regression_trees(estimator, [estimator])


def convert_forest_classifier(estimator: Any) -> TreeEnsemble:
    """RandomForestClassifier / ExtraTreesClassifier: the mean of the trees' class fractions."""
    return _classification_trees(estimator, estimator.estimators_)


def convert_forest_regressor(estimator: Any) -> TreeEnsemble:
    """RandomForestRegressor / ExtraTreesRegressor: the mean of the trees' predictions."""
    return _regression_trees(estimator, estimator.estimators_)


# --- GradientBoosting ---

_CONSTANT_DUMMY: ClassTable[tuple[str, ...]] = ClassTable("_CONSTANT_DUMMY", {
    "sklearn.dummy.DummyRegressor": ("mean", "median", "quantile", "constant"),
    "sklearn.dummy.DummyClassifier": ("prior", "most_frequent", "constant"),
})


def _link(estimator: Any) -> tuple[str, float]:
    name = type(estimator._loss.link).__name__
    if name not in _LINKS:
        raise ValueError(f"tensorwire cannot export {type(estimator).__name__}: its loss link {name} is not supported")
    return _LINKS[name]


def _gb_base(estimator: Any) -> np.ndarray:
    """The init estimator's raw prediction, a constant: computed as _gb.py's _init_raw_predictions does."""
    init = estimator.init_
    n_raw = int(estimator.n_trees_per_iteration_)
    if isinstance(init, str) and init == "zero":
        return np.zeros(n_raw)
    if type(init) not in _CONSTANT_DUMMY or init.strategy not in _CONSTANT_DUMMY[type(init)]:
        raise ValueError(
            f"tensorwire cannot export {type(estimator).__name__}: init={type(init).__name__} has no closed form "
            "(use init=None or init='zero')"
        )
    from sklearn.base import is_classifier  # exporting only: a serving process never imports scikit-learn

    row = np.zeros((1, int(estimator.n_features_in_)), dtype=np.float32)  # Dummy estimators ignore X's values
    if is_classifier(estimator):
        predictions = init.predict_proba(row)
        if not estimator._loss.is_multiclass:
            predictions = predictions[:, 1]
        eps = np.finfo(np.float64).eps
        predictions = np.clip(predictions, eps, 1 - eps, dtype=np.float64)
    else:
        predictions = init.predict(row).astype(np.float64)
    return np.asarray(estimator._loss.link.link(predictions), dtype=np.float64).reshape(-1)


def _gb_trees(estimator: Any) -> _Trees:
    trees = _Trees.empty()
    learning_rate = float(estimator.learning_rate)
    for stage in estimator.estimators_:
        for k, member in enumerate(stage):
            tree = member.tree_
            # predict_stages adds learning_rate * value (in that order): the same product, made once here
            value = learning_rate * np.asarray(tree.value[:, 0, 0], dtype=np.float64)
            _add_tree(trees, tree, value, output=k)
            # GradientBoosting refuses NaN, and its fast predict path never looks at missing_go_to_left
            trees.missing_left[-1] = np.zeros_like(trees.missing_left[-1])
    return trees


def _gb_fields() -> dict[str, Any]:
    return {"precision": "float32", "comparison": "le", "accepts_nan": False, "accepts_inf": False}


def convert_gradient_boosting_classifier(estimator: Any) -> TreeEnsemble:
    """GradientBoostingClassifier: raw = init's raw prior + learning_rate * leaves; log_loss or exponential."""
    link, scale = _link(estimator)
    return _gb_trees(estimator).ensemble(
        estimator, _gb_base(estimator), task="classification", link=link, link_scale=scale,
        classes=_classes(estimator), has_decision=True, binary_rule="raw_nonnegative", **_gb_fields(),
    )


def convert_gradient_boosting_regressor(estimator: Any) -> TreeEnsemble:
    """GradientBoostingRegressor: raw = init's prediction + learning_rate * leaves, every loss an identity link."""
    return _gb_trees(estimator).ensemble(estimator, _gb_base(estimator), **_gb_fields())


# --- HistGradientBoosting ---


def _hgb_feature_map(estimator: Any) -> np.ndarray:
    """Predictor feature index -> the model's input column: a model with categorical features reorders its
    columns through a ColumnTransformer, categorical columns first."""
    n = int(estimator.n_features_in_)
    if estimator._preprocessor is None:
        return np.arange(n, dtype=np.int64)
    categorical = np.asarray(estimator.is_categorical_, dtype=bool)
    return np.concatenate([np.flatnonzero(categorical), np.flatnonzero(~categorical)]).astype(np.int64)


def _hgb_categories(estimator: Any) -> list[np.ndarray | None]:
    """For each predictor feature index: the raw values the OrdinalEncoder maps to codes 0, 1, ... (None: numeric)."""
    n = int(estimator.n_features_in_)
    result: list[np.ndarray | None] = [None] * n
    if estimator._preprocessor is None:
        return result
    encoder = estimator._preprocessor.named_transformers_["encoder"]
    where = type(estimator).__name__
    for j, categories in enumerate(encoder.categories_):
        values = np.asarray(categories, dtype=np.float64)
        values = values[~np.isnan(values)]
        if values.size and (values.min() < 0 or values.max() >= MAX_CATEGORY or (values != np.trunc(values)).any()):
            raise ValueError(
                f"tensorwire cannot export {where}: categorical feature {int(_hgb_feature_map(estimator)[j])} has "
                f"categories that are not integers in [0, {MAX_CATEGORY})"
            )
        result[j] = values
    return result


def _in_bitset(bitset: np.ndarray, code: int) -> bool:
    return bool((int(bitset[code // 32]) >> (code % 32)) & 1)


def _hgb_category_words(categories: np.ndarray, left_codes: np.ndarray, known_codes: np.ndarray, missing_left: bool) -> tuple[np.ndarray, int]:
    """A node's bitset over raw category values: a known category goes left iff its code is in the node's left
    set; any other value is unknown to the OrdinalEncoder (-> NaN) and goes where missing goes.
    Returns the bitset's words and its number of bits (values past it go cat_other_left = where missing goes)."""
    nbits = int(categories.max()) + 1 if categories.size else 1
    bits = np.full(nbits, missing_left, dtype=bool)
    for code, raw in enumerate(categories.astype(np.int64)):
        # a code the bin mapper never saw (early-stopping split, subsample) is unknown at predict too
        bits[raw] = _in_bitset(left_codes, code) if _in_bitset(known_codes, code) else missing_left
    padded = np.zeros(((nbits + 31) // 32) * 32, dtype=np.uint64)
    padded[:nbits] = bits
    weights = np.left_shift(np.uint64(1), np.arange(32, dtype=np.uint64))
    return (padded.reshape(-1, 32) * weights).sum(axis=1).astype(np.uint32), nbits


def _hgb_trees(estimator: Any) -> _Trees:
    trees = _Trees.empty()
    feature_map = _hgb_feature_map(estimator)
    categories = _hgb_categories(estimator)
    known_bitsets, f_idx_map = (None, None)
    if estimator._preprocessor is not None:
        known_bitsets, f_idx_map = estimator._bin_mapper.make_known_categories_bitsets()
    for iteration in estimator._predictors:
        for k, predictor in enumerate(iteration):
            nodes = predictor.nodes
            leaf = nodes["is_leaf"].astype(bool)
            left = np.where(leaf, -1, nodes["left"].astype(np.int64))
            right = np.where(leaf, -1, nodes["right"].astype(np.int64))
            feature = np.where(leaf, 0, feature_map[np.where(leaf, 0, nodes["feature_idx"].astype(np.int64))])
            is_cat = nodes["is_categorical"].astype(bool) & ~leaf
            threshold = np.where(is_cat, 0.0, nodes["num_threshold"].astype(np.float64))
            missing_left = nodes["missing_go_to_left"].astype(bool)
            trees.add(feature, threshold, left, right, missing_left, nodes["value"], output=k, cover=nodes["count"])
            words: list[np.ndarray] = []
            for n in np.flatnonzero(is_cat):
                f = int(nodes["feature_idx"][n])
                cats = categories[f]
                assert cats is not None and known_bitsets is not None and f_idx_map is not None
                node_words, nbits = _hgb_category_words(
                    cats, predictor.raw_left_cat_bitsets[int(nodes["bitset_idx"][n])],
                    known_bitsets[int(f_idx_map[f])], bool(missing_left[n]),
                )
                trees.cat_start[-1][n] = sum(w.shape[0] for w in words)
                trees.cat_nbits[-1][n] = nbits
                words.append(node_words)
            trees.categorical[-1] = is_cat
            if words:
                trees.cat_words[-1] = np.concatenate(words)
    return trees


def _hgb_fields(estimator: Any) -> dict[str, Any]:
    return {
        "precision": "float64",
        "comparison": "le",
        "accepts_nan": True,
        # the OrdinalEncoder of a model with categorical features refuses ±inf in those columns (numeric ones take it)
        "accepts_inf": estimator._preprocessor is None,
        # a categorical value no fitted category equals (2.5 as much as 300) goes where NaN goes
        "cat_rule": "exact",
    }


def _hgb_ensemble(estimator: Any, trees: _Trees, **fields: Any) -> TreeEnsemble:
    return trees.ensemble(estimator, np.asarray(estimator._baseline_prediction, dtype=np.float64), **fields)


def convert_hist_gradient_boosting_classifier(estimator: Any) -> TreeEnsemble:
    """HistGradientBoostingClassifier: raw = _baseline_prediction + the predictors' leaves; logistic or softmax."""
    link, scale = _link(estimator)
    fields = _hgb_fields(estimator)
    return _hgb_ensemble(
        estimator, _hgb_trees(estimator), task="classification", link=link, link_scale=scale,
        classes=_classes(estimator), has_decision=True, binary_rule="raw_positive", **fields,
    )


def convert_hist_gradient_boosting_regressor(estimator: Any) -> TreeEnsemble:
    """HistGradientBoostingRegressor: predict = inverse link (identity; exp for poisson and gamma) of raw."""
    link, scale = _link(estimator)
    return _hgb_ensemble(estimator, _hgb_trees(estimator), link=link, link_scale=scale, **_hgb_fields(estimator))


# --- IsolationForest ---


def _average_path_length(n: float) -> float:
    """c(n), as _iforest.py's _average_path_length."""
    if n <= 1:
        return 0.0
    if n == 2:
        return 1.0
    return float(2.0 * (np.log(n - 1.0) + np.euler_gamma) - 2.0 * (n - 1.0) / n)


def convert_isolation_forest(estimator: Any) -> TreeEnsemble:
    """IsolationForest: raw = sum over trees of (leaf depth + c(leaf samples) - 1) / (n_trees * c(max_samples))."""
    trees = _Trees.empty()
    subsample = estimator._max_features != estimator.n_features_in_  # as _compute_chunked_score_samples decides
    for t, (member, features) in enumerate(zip(estimator.estimators_, estimator.estimators_features_, strict=True)):
        # the per-node path length _compute_score_samples adds, computed with its own arithmetic
        value = estimator._decision_path_lengths[t] + estimator._average_path_length_per_tree[t] - 1.0
        _add_tree(trees, member.tree_, value, features=features if subsample else None)
    denominator = len(estimator.estimators_) * _average_path_length(estimator._max_samples)
    base, divisor = np.zeros(1), denominator
    if denominator == 0:  # one sample per tree: sklearn sets depth / denominator to 1 (score -0.5)
        base, divisor = np.ones(1), 1.0
        trees.value = [np.zeros_like(v) for v in trees.value]
    return trees.ensemble(
        estimator, base, divisor=float(divisor), task="isolation", link="isolation", offset=float(estimator.offset_),
        precision="float32", comparison="le", accepts_nan=True, accepts_inf=True,
    )


SKLEARN_CONVERTERS: ClassTable[Callable[[Any], TreeEnsemble]] = ClassTable("SKLEARN_CONVERTERS", {
    "sklearn.tree.DecisionTreeClassifier": convert_decision_tree_classifier,
    "sklearn.tree.ExtraTreeClassifier": convert_decision_tree_classifier,
    "sklearn.tree.DecisionTreeRegressor": convert_decision_tree_regressor,
    "sklearn.tree.ExtraTreeRegressor": convert_decision_tree_regressor,
    "sklearn.ensemble.RandomForestClassifier": convert_forest_classifier,
    "sklearn.ensemble.ExtraTreesClassifier": convert_forest_classifier,
    "sklearn.ensemble.RandomForestRegressor": convert_forest_regressor,
    "sklearn.ensemble.ExtraTreesRegressor": convert_forest_regressor,
    "sklearn.ensemble.GradientBoostingClassifier": convert_gradient_boosting_classifier,
    "sklearn.ensemble.GradientBoostingRegressor": convert_gradient_boosting_regressor,
    "sklearn.ensemble.HistGradientBoostingClassifier": convert_hist_gradient_boosting_classifier,
    "sklearn.ensemble.HistGradientBoostingRegressor": convert_hist_gradient_boosting_regressor,
    "sklearn.ensemble.IsolationForest": convert_isolation_forest,
})
