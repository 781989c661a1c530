"""XGBoost models read as data (JSON or UBJSON documents, doc/model.schema) into a TreeEnsemble, without importing xgboost.

Routing is XGBoost's (src/predictor/predict_fn.h): float32 features, left iff x < split_condition,
NaN to the default child; categories in a node's set go right (src/common/categorical.h).
Leaves carry split_conditions (learning rate already applied); the margin starts at the
objective's ProbToMargin(base_score) (src/objective/*), computed in float32 as XGBoost does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tensorwire.server.families.trees import ubjson
from tensorwire.server.families.trees.ensemble import TreeEnsemble

K_RT_EPS = np.float32(1e-6)  # include/xgboost/base.h kRtEps: logistic base_score is clamped to [eps, 1 - eps]
MAX_CATEGORY = 16777216  # common::OutOfRangeCat(): larger categories are invalid in XGBoost
_UBJ_INTEGERS = b"iUIlL"


@dataclass(frozen=True)
class _Objective:
    task: str
    link: str
    base: str  # how ProbToMargin maps base_score: "identity", "logit", "log"


_OBJECTIVES: dict[str, _Objective] = {
    **{name: _Objective("regression", "identity", "identity") for name in (
        "reg:squarederror", "reg:linear", "reg:squaredlogerror", "reg:pseudohubererror", "reg:absoluteerror", "reg:quantileerror")},
    "reg:logistic": _Objective("regression", "logistic", "logit"),
    "binary:logistic": _Objective("classification", "logistic", "logit"),
    # LogisticRaw: ProbToMargin and PredTransform are both the identity; the margin is the decision function
    "binary:logitraw": _Objective("classification", "logistic", "identity"),
    **{name: _Objective("regression", "exp", "log") for name in ("count:poisson", "reg:gamma", "reg:tweedie")},
    "multi:softmax": _Objective("classification", "softmax", "identity"),
    "multi:softprob": _Objective("classification", "softmax", "identity"),
}


def looks_like_xgboost(head: bytes) -> bool:
    """Whether the first bytes of a file are an XGBoost model document (JSON or UBJSON; both start with "learner")."""
    text = head.lstrip()
    if text.startswith(b"{"):
        if re.match(rb'\{\s*"(learner|version)"', text):
            return True
        # UBJSON: '{', then the key's length as an integer of any width, then the key itself
        if len(text) > 2 and text[1] in _UBJ_INTEGERS:
            width = {ord("i"): 1, ord("U"): 1, ord("I"): 2, ord("l"): 4, ord("L"): 8}[text[1]]
            key = text[2 + width : 2 + width + 7]
            return int.from_bytes(text[2 : 2 + width], "big") == 7 and key in (b"learner", b"version")
    return False


def load_document(data: bytes) -> dict[str, Any]:
    """The model document in a file's bytes, JSON or UBJSON told apart by content."""
    text = data.lstrip()
    try:
        document = json.loads(text) if re.match(rb'\{\s*["}]', text) else ubjson.loads(data)
    except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"not a readable XGBoost model: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("learner"), dict):
        raise ValueError("not an XGBoost model: the document has no 'learner' object")
    return document


def read_xgboost_file(path: str | Path, classes: list[Any] | None = None, iteration_range: tuple[int, int] | None = None) -> TreeEnsemble:
    """The ensemble in a model file written by XGBoost's save_model (.json or .ubj, whatever its name)."""
    return ensemble_from_xgboost(load_document(Path(path).read_bytes()), classes, iteration_range=iteration_range)


def ensemble_from_xgboost_object(obj: Any, iteration_range: tuple[int, int] | None = None) -> TreeEnsemble:
    """The ensemble of an in-memory xgboost.Booster, XGBClassifier or XGBRegressor (any XGBModel).

    Like the scikit-learn wrapper's predict, a wrapped model uses its trees up to best_iteration
    when it was trained with early stopping; a bare Booster uses all its trees, as Booster.predict does.
    """
    wrapped = callable(getattr(obj, "get_booster", None))
    booster = obj.get_booster() if wrapped else obj
    if not callable(getattr(booster, "save_raw", None)):
        raise ValueError(f"{type(obj).__name__} is not an XGBoost Booster or scikit-learn XGBoost model")
    document = json.loads(bytes(booster.save_raw("json")))
    classifier = wrapped and callable(getattr(obj, "predict_proba", None))
    classes = [c.item() if hasattr(c, "item") else c for c in obj.classes_] if classifier else None
    if iteration_range is None:
        iteration_range = _default_range(document, wrapped)
    estimator_type = ("classifier" if classifier else "regressor") if wrapped else None
    return ensemble_from_xgboost(document, classes, iteration_range=iteration_range, estimator_type=estimator_type)


def ensemble_from_xgboost(model: dict[str, Any], classes: list[Any] | None = None, *,
                          iteration_range: tuple[int, int] | None = None, estimator_type: str | None = None) -> TreeEnsemble:
    """The ensemble a parsed XGBoost model document describes.

    iteration_range: boosting rounds [begin, end) as XGBoost's predict takes them (end 0: all);
    None: XGBoost's default for whoever saved it (the scikit-learn wrapper: up to best_iteration; a Booster: all).
    estimator_type: "classifier" / "regressor" when known (else the document's scikit_learn attribute says).
    """
    learner = _object(model, "learner", "document")
    attributes = learner.get("attributes") or {}
    sklearn_meta = _sklearn_meta(attributes)
    estimator_type = estimator_type or sklearn_meta.get("_estimator_type")
    objective_name = str(_object(learner, "objective", "learner").get("name"))
    objective = _objective(objective_name, estimator_type)
    param = _object(learner, "learner_model_param", "learner")
    n_classes, n_targets, n_features = (_int_param(param, key) for key in ("num_class", "num_target", "num_feature"))
    if n_targets > 1:
        raise ValueError(f"XGBoost model with {n_targets} targets (multi-target / multi_output_tree): not supported")
    n_outputs = max(n_classes, 1)
    booster = _object(learner, "gradient_booster", "learner")
    trees_doc, weight_drop = _gbtree(booster)
    if iteration_range is None:
        iteration_range = _default_range(model, sklearn_meta != {})
    tree_info = _int_array(trees_doc.get("tree_info"), "tree_info")
    first, last = _tree_span(trees_doc, tree_info, n_outputs, iteration_range)
    trees = _ordered_trees(trees_doc, tree_info.shape[0])
    parts = [_tree_arrays(trees[t], t, _weight(weight_drop, t)) for t in range(first, last)]
    if not parts:
        raise ValueError("XGBoost model has no trees in the iteration range")
    base = _margin_base(param.get("base_score"), n_outputs, objective.base, objective_name)
    ensemble = _assemble(parts, tree_info[first:last], base, n_features, objective_name)
    _apply_head(ensemble, objective, objective_name, n_classes, classes)
    ensemble.notes.update(_notes(model, learner, objective_name, iteration_range, first, last))
    ensemble.validate()
    return ensemble


# --- the document's parts ---

def _object(parent: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"XGBoost model: {where} has no '{key}' object")
    return value


def _int_param(param: dict[str, Any], key: str) -> int:
    try:
        return int(param.get(key, "0" if key != "num_target" else "1"))
    except (TypeError, ValueError):
        raise ValueError(f"XGBoost model: learner_model_param.{key} = {param.get(key)!r} is not an integer") from None


def _sklearn_meta(attributes: dict[str, Any]) -> dict[str, Any]:
    try:
        meta = json.loads(attributes["scikit_learn"]) if "scikit_learn" in attributes else {}
    except (TypeError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _default_range(model: dict[str, Any], from_sklearn: bool) -> tuple[int, int]:
    """XGBModel._get_iteration_range(None): (0, best_iteration + 1) after early stopping; Booster.predict: all rounds."""
    best = ((model.get("learner") or {}).get("attributes") or {}).get("best_iteration")
    return (0, int(best) + 1) if from_sklearn and best is not None else (0, 0)


def _objective(name: str, estimator_type: str | None) -> _Objective:
    if name not in _OBJECTIVES:
        raise ValueError(f"XGBoost objective {name!r} is not supported (supported: {', '.join(sorted(_OBJECTIVES))})")
    objective = _OBJECTIVES[name]
    if estimator_type == "regressor" and objective.task == "classification":
        if objective.link == "softmax":
            raise ValueError(f"XGBoost objective {name!r} in a regressor (predict returns probabilities per class): not supported")
        # XGBRegressor(objective="binary:logistic").predict is the probability itself
        return _Objective("regression", "logistic" if name == "binary:logistic" else "identity", objective.base)
    return objective


def _gbtree(booster: dict[str, Any]) -> tuple[dict[str, Any], list[float] | None]:
    """The tree model and DART's per-tree weights (gradient_booster.weight_drop before 3.4, model.weight_drop from 3.4)."""
    name = booster.get("name")
    if name == "gblinear":
        raise ValueError("XGBoost booster 'gblinear' is a linear model, not trees: not supported by the tree family")
    if name not in ("gbtree", "dart"):
        raise ValueError(f"XGBoost booster {name!r} is not supported")
    holder = _object(booster, "gbtree", "dart booster") if name == "dart" else booster
    trees_doc = _object(holder, "model", f"{name} booster")
    weights = booster.get("weight_drop", trees_doc.get("weight_drop"))
    return trees_doc, None if weights is None else [float(w) for w in weights]


def _weight(weight_drop: list[float] | None, t: int) -> float | None:
    if weight_drop is None:
        return None
    return weight_drop[t] if t < len(weight_drop) else 1.0


def _int_array(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(value if value is not None else [], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"XGBoost model: {name} is not an array of integers") from None
    if array.ndim != 1:
        raise ValueError(f"XGBoost model: {name} is not a flat array")
    return array


def _float32_array(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(value if value is not None else [], dtype=np.float64).astype(np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"XGBoost model: {name} is not an array of numbers") from None
    if array.ndim != 1:
        raise ValueError(f"XGBoost model: {name} is not a flat array")
    return array


def _tree_span(trees_doc: dict[str, Any], tree_info: np.ndarray, n_outputs: int, iteration_range: tuple[int, int]) -> tuple[int, int]:
    """Trees [first, last) of boosting rounds [begin, end) (gbm::detail::LayerToTree)."""
    n_trees = tree_info.shape[0]
    if tree_info.size and (tree_info.min() < 0 or tree_info.max() >= n_outputs):
        raise ValueError(f"XGBoost model: tree_info names an output group outside 0..{n_outputs - 1}")
    if "iteration_indptr" in trees_doc:
        indptr = _int_array(trees_doc["iteration_indptr"], "iteration_indptr")
    else:  # before 2.0: every round has num_parallel_tree trees per output group (MakeIndptr)
        parallel = int((trees_doc.get("gbtree_model_param") or {}).get("num_parallel_tree", 1))
        per_round = max(parallel, 1) * n_outputs
        indptr = np.arange(0, n_trees // per_round + 1) * per_round
    if indptr.size == 0 or indptr[0] != 0 or indptr[-1] != n_trees or (np.diff(indptr) < 0).any():
        raise ValueError(f"XGBoost model: iteration_indptr does not partition the {n_trees} trees")
    begin, end = iteration_range
    rounds = indptr.shape[0] - 1
    end = rounds if end == 0 else end
    if not 0 <= begin < end <= rounds:
        raise ValueError(f"iteration range {iteration_range} is outside the model's {rounds} boosting rounds")
    return int(indptr[begin]), int(indptr[end])


def _ordered_trees(trees_doc: dict[str, Any], n_trees: int) -> list[dict[str, Any]]:
    """Trees in id order (XGBoost places each tree by its "id", not its position)."""
    trees = trees_doc.get("trees")
    if not isinstance(trees, list) or len(trees) != n_trees:
        raise ValueError(f"XGBoost model: {n_trees} entries in tree_info but {len(trees) if isinstance(trees, list) else 'no'} trees")
    ordered: list[dict[str, Any] | None] = [None] * n_trees
    for position, tree in enumerate(trees):
        if not isinstance(tree, dict):
            raise ValueError(f"XGBoost model: tree {position} is not an object")
        tree_id = int(tree.get("id", position))
        if not 0 <= tree_id < n_trees or ordered[tree_id] is not None:
            raise ValueError(f"XGBoost model: tree id {tree_id} is out of range or repeated")
        ordered[tree_id] = tree
    return [tree for tree in ordered if tree is not None]


# --- one tree ---

@dataclass
class _Tree:
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    value: np.ndarray
    categorical: np.ndarray
    cat_nbits: np.ndarray
    cat_words: list[np.ndarray]  # per node, empty for numeric nodes
    cover: np.ndarray | None  # sum_hessian per node (what pred_contribs weighs branches by); None where the document has none


def _tree_arrays(tree: dict[str, Any], t: int, weight: float | None) -> _Tree:
    where = f"XGBoost tree {t}"
    tree_param = tree.get("tree_param") or {}
    if int(tree_param.get("size_leaf_vector", 1) or 1) > 1:
        raise ValueError(f"{where} has vector leaves (multi_strategy='multi_output_tree'): not supported")
    n = int(tree_param.get("num_nodes", -1))
    left = _int_array(tree.get("left_children"), "left_children")
    right = _int_array(tree.get("right_children"), "right_children")
    feature = _int_array(tree.get("split_indices"), "split_indices")
    conditions = _float32_array(tree.get("split_conditions"), "split_conditions")
    default_left = _int_array(tree.get("default_left"), "default_left")
    split_type = _int_array(tree.get("split_type", np.zeros(left.shape[0], dtype=np.int64)), "split_type")
    if n < 1 or any(a.shape[0] != n for a in (left, right, feature, conditions, default_left, split_type)):
        raise ValueError(f"{where}: node arrays disagree with num_nodes = {n}")
    if ((left < 0) != (right < 0)).any() or max(left.max(), right.max()) >= n:
        raise ValueError(f"{where}: a child index is out of range or a node has one child")
    reachable = _reachable(left, right, where)
    internal = (left >= 0) & reachable
    leaf_value = conditions
    if weight is not None:
        leaf_value = conditions * np.float32(weight)  # DART scales each tree's output in float32 (gbtree.cc PredictBatchImpl)
    categorical = internal & (split_type == 1)
    nbits, words = _category_bitsets(tree, categorical, n, where)
    cover = _float32_array(tree["sum_hessian"], "sum_hessian").astype(np.float64) if "sum_hessian" in tree else None
    return _Tree(
        feature=np.where(internal, feature, 0),
        threshold=np.where(internal & ~categorical, conditions, 0.0).astype(np.float64),
        left=np.where(internal, left, -1),
        right=np.where(internal, right, -1),
        missing_left=default_left.astype(bool) & internal,
        value=np.where(internal | ~reachable, 0.0, leaf_value.astype(np.float64)),
        categorical=categorical,
        cat_nbits=nbits,
        cat_words=words,
        cover=cover if cover is not None and cover.shape == (n,) else None,
    )


def _reachable(left: np.ndarray, right: np.ndarray, where: str) -> np.ndarray:
    """Nodes reached from the root; the rest are ones a pruner deleted (kept in XGBoost's arrays, never visited)."""
    seen = np.zeros(left.shape[0], dtype=bool)
    frontier = np.array([0])
    while frontier.size:
        if seen[frontier].any() or np.unique(frontier).size != frontier.size:
            raise ValueError(f"{where}: a node is reached twice")
        seen[frontier] = True
        inner = frontier[left[frontier] >= 0]
        frontier = np.concatenate([left[inner], right[inner]])
    return seen


def _category_bitsets(tree: dict[str, Any], categorical: np.ndarray, n: int, where: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each categorical node's TreeEnsemble bitset: bit c set iff category c goes LEFT, i.e. is NOT in XGBoost's set.

    common::Decision goes left for c < 0, c >= 2**24, c past the node's bitset and c not in the set,
    right for c in the set; so bits cover whole 32-bit words and every other value goes left.
    """
    nbits = np.zeros(n, dtype=np.int64)
    words: list[np.ndarray] = [np.zeros(0, dtype=np.uint32)] * n
    if not categorical.any():
        return nbits, words
    nodes = _int_array(tree.get("categories_nodes"), "categories_nodes")
    segments = _int_array(tree.get("categories_segments"), "categories_segments")
    sizes = _int_array(tree.get("categories_sizes"), "categories_sizes")
    categories = _int_array(tree.get("categories"), "categories")
    if not nodes.shape == segments.shape == sizes.shape:
        raise ValueError(f"{where}: categories_nodes, _segments and _sizes differ in length")
    for node, start, size in zip(nodes.tolist(), segments.tolist(), sizes.tolist(), strict=True):
        if not 0 <= node < n or size < 1 or start < 0 or start + size > categories.shape[0]:
            raise ValueError(f"{where}: categorical split of node {node} is out of range")
        if not categorical[node]:
            continue  # a split the pruner deleted, or a leaf
        chosen = categories[start : start + size]
        if chosen.min() < 0 or chosen.max() >= MAX_CATEGORY:
            raise ValueError(f"{where}: node {node} splits on category {int(chosen.min() if chosen.min() < 0 else chosen.max())}, outside XGBoost's 0..2**24")
        n_words = (int(chosen.max()) + 32) // 32
        bits = np.ones(n_words * 32, dtype=bool)
        bits[chosen] = False
        nbits[node] = n_words * 32
        words[node] = np.packbits(bits, bitorder="little").view("<u4").astype(np.uint32)
    # a categorical node with no stored set loads as an empty bitset in XGBoost: every category goes left
    return nbits, words


# --- the whole ensemble ---

def _assemble(parts: list[_Tree], tree_info: np.ndarray, base: np.ndarray, n_features: int, objective: str) -> TreeEnsemble:
    sizes = np.array([p.left.shape[0] for p in parts])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])

    def shift(children: np.ndarray, offset: int) -> np.ndarray:
        return np.where(children >= 0, children + offset, -1)

    has_cats = any(p.categorical.any() for p in parts)
    ensemble = TreeEnsemble(
        estimator=f"xgboost {objective}",
        n_features=n_features,
        feature=np.concatenate([p.feature for p in parts]).astype(np.int64),
        threshold=np.concatenate([p.threshold for p in parts]),
        left=np.concatenate([shift(p.left, o) for p, o in zip(parts, offsets, strict=True)]).astype(np.int64),
        right=np.concatenate([shift(p.right, o) for p, o in zip(parts, offsets, strict=True)]).astype(np.int64),
        missing_left=np.concatenate([p.missing_left for p in parts]),
        value=np.concatenate([p.value for p in parts])[:, None],
        roots=offsets.astype(np.int64),
        tree_output=tree_info.astype(np.int64),
        base=base,
        comparison="lt",
        precision="float32",
        accepts_nan=True,
        accepts_inf=True,  # the scikit-learn wrapper's predict (inplace_predict) takes ±inf as ordinary values
        cover=None if any(p.cover is None for p in parts) else np.concatenate([p.cover for p in parts if p.cover is not None]),
    )
    if has_cats:
        _add_categories(ensemble, parts)
    return ensemble


def _add_categories(ensemble: TreeEnsemble, parts: list[_Tree]) -> None:
    node_words = [w for p in parts for w in p.cat_words]
    counts = np.array([w.shape[0] for w in node_words], dtype=np.int64)
    ensemble.categorical = np.concatenate([p.categorical for p in parts])
    ensemble.cat_nbits = np.concatenate([p.cat_nbits for p in parts])
    ensemble.cat_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    ensemble.cat_words = np.concatenate(node_words + [np.zeros(0, dtype=np.uint32)]).astype(np.uint32)
    ensemble.cat_other_left = ensemble.categorical.copy()
    ensemble.cat_rule = "nonnegative"  # Decision() refuses a negative value before truncating it: -0.5 is no category


def _margin_base(text: Any, n_outputs: int, kind: str, objective: str) -> np.ndarray:
    """ProbToMargin(base_score), in float32 like XGBoost; base_score is "0.5" or, since 3.1, "[5E-1]" or one per class."""
    values = str(text).strip().strip("[]").split(",")
    try:
        score = np.array([float(v) for v in values], dtype=np.float32)
    except ValueError:
        raise ValueError(f"XGBoost model: base_score {text!r} is not a number or list of numbers") from None
    if score.shape[0] == 1:
        score = np.repeat(score, n_outputs)  # LearnerModelParam::HandleOldFormat
    if score.shape[0] != n_outputs or not np.isfinite(score).all():
        raise ValueError(f"XGBoost model: base_score {text!r} does not give {n_outputs} finite values")
    if kind == "logit":
        if ((score <= 0) | (score >= 1)).any():
            raise ValueError(f"XGBoost model: base_score {text!r} must be in (0, 1) for {objective}")
        p = np.clip(score, K_RT_EPS, np.float32(1) - K_RT_EPS)
        score = np.log(p / (np.float32(1) - p))  # common::Logit
    elif kind == "log":
        if (score <= 0).any():
            raise ValueError(f"XGBoost model: base_score {text!r} must be positive for {objective}")
        score = np.log(score)
    return score.astype(np.float64)


def _apply_head(ensemble: TreeEnsemble, objective: _Objective, name: str, n_classes: int, classes: list[Any] | None) -> None:
    ensemble.task, ensemble.link = objective.task, objective.link
    if objective.task != "classification":
        if ensemble.n_raw != 1:
            raise ValueError(f"XGBoost {name} model with {ensemble.n_raw} outputs: not supported")
        return
    expected = 2 if objective.link == "logistic" else n_classes
    if objective.link == "logistic" and ensemble.n_raw != 1:
        raise ValueError(f"XGBoost {name} model with {ensemble.n_raw} outputs: expected one")
    labels = list(classes) if classes is not None else list(range(expected))
    if len(labels) != expected:
        raise ValueError(f"XGBoost {name} model has {expected} classes, {len(labels)} labels given")
    ensemble.classes = labels
    ensemble.has_decision = True


def _notes(model: dict[str, Any], learner: dict[str, Any], objective: str, iteration_range: tuple[int, int], first: int, last: int) -> dict[str, Any]:
    notes: dict[str, Any] = {"library": "xgboost", "objective": objective, "trees_used": [first, last],
                             "iteration_range": list(iteration_range)}
    version = model.get("version")
    if version is not None:
        notes["xgboost_version"] = ".".join(str(int(v)) for v in np.asarray(version).tolist())
    best = (learner.get("attributes") or {}).get("best_iteration")
    if best is not None:
        notes["best_iteration"] = int(best)
    names, types = learner.get("feature_names") or [], learner.get("feature_types") or []
    if len(names):
        notes["feature_names"] = [str(n) for n in names]
    if "c" in list(types):
        notes["categorical_features"] = [i for i, kind in enumerate(types) if kind == "c"]
        # Decision() treats any value < 0 as invalid (left); TreeEnsemble truncates first, so (-1, 0) acts as category 0
        notes["categorical_caveat"] = ("inputs are category codes (no pandas re-coding); values in (-1, 0) route as "
                                       "category 0 here but as invalid (left) in XGBoost")
    if objective == "binary:logitraw":
        notes["logitraw"] = ("decision_function is XGBoost's margin; predict_proba = sigmoid(margin) and predict = margin > 0, "
                             "where XGBClassifier gives [1 - margin, margin] and margin > 0.5")
    return notes
