"""LightGBM models read as data: the model text format (`save_model` / `model_to_string`) into a TreeEnsemble.

Nothing here imports lightgbm: a model file is parsed line by line, and an in-memory Booster,
LGBMClassifier or LGBMRegressor is asked only for its `model_to_string()` (and its classes).
Each routing rule below is LightGBM's own (include/LightGBM/tree.h, src/c_api.cpp), recorded node by node.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from tensorwire.server.families.trees.ensemble import TreeEnsemble

# LightGBM's kZeroThreshold is the float literal 1e-35f, compared as a double (include/LightGBM/meta.h).
K_ZERO = float(np.float32(1e-35))

_HEADER_KEYS = frozenset({
    "version", "num_class", "num_tree_per_iteration", "label_index", "max_feature_idx", "objective",
    "average_output", "feature_names", "monotone_constraints", "feature_infos", "tree_sizes",
})
_VERSIONS = frozenset({"v2", "v3", "v4"})
_TREE_KEYS = frozenset({
    "num_leaves", "num_cat", "split_feature", "split_gain", "threshold", "decision_type", "left_child",
    "right_child", "leaf_value", "leaf_weight", "leaf_count", "internal_value", "internal_weight",
    "internal_count", "cat_boundaries", "cat_threshold", "is_linear", "shrinkage",
})
_LINEAR_TREE_KEYS = frozenset({"leaf_const", "num_features", "leaf_features", "leaf_coeff"})

# Whole-string aliases, as LightGBM's ParseObjectiveAlias applies them to the `objective=` line (config.h).
_OBJECTIVE_ALIASES = {
    "regression_l2": "regression", "mean_squared_error": "regression", "mse": "regression", "l2": "regression",
    "l2_root": "regression", "root_mean_squared_error": "regression", "rmse": "regression",
    "mean_absolute_error": "regression_l1", "l1": "regression_l1", "mae": "regression_l1",
    "softmax": "multiclass", "multiclass_ova": "multiclassova", "ova": "multiclassova", "ovr": "multiclassova",
    "xentropy": "cross_entropy", "xentlambda": "cross_entropy_lambda", "mean_absolute_percentage_error": "mape",
}
_IDENTITY_OBJECTIVES = frozenset({"regression", "regression_l1", "huber", "fair", "quantile", "mape"})
_EXP_OBJECTIVES = frozenset({"poisson", "gamma", "tweedie"})

# decision_type bits (tree.h): kCategoricalMask, kDefaultLeftMask, then the missing type in bits 2-3
_CATEGORICAL, _DEFAULT_LEFT = 1, 2
_MISSING_NONE, _MISSING_ZERO, _MISSING_NAN = 0, 1, 2


@dataclass
class _Head:
    """What the objective makes of the raw scores."""

    task: str
    link: str
    link_scale: float
    n_raw: int


@dataclass
class _Tree:
    """One `Tree=` block, as written (children: >= 0 an internal node, < 0 the leaf ~child)."""

    split_feature: np.ndarray
    threshold: np.ndarray
    decision_type: np.ndarray
    left_child: np.ndarray
    right_child: np.ndarray
    leaf_value: np.ndarray
    cat_boundaries: np.ndarray
    cat_threshold: np.ndarray
    cover: np.ndarray | None  # internal_count then leaf_count (what pred_contrib weighs branches by); None where absent

    @property
    def n_internal(self) -> int:
        return int(self.split_feature.shape[0])


class _Nodes:
    """The TreeEnsemble arrays, grown one tree at a time."""

    def __init__(self) -> None:
        self.feature: list[np.ndarray] = []
        self.threshold: list[np.ndarray] = []
        self.left: list[np.ndarray] = []
        self.right: list[np.ndarray] = []
        self.missing_left: list[np.ndarray] = []
        self.zero_missing: list[np.ndarray] = []
        self.categorical: list[np.ndarray] = []
        self.cat_start: list[np.ndarray] = []
        self.cat_nbits: list[np.ndarray] = []
        self.cat_words: list[np.ndarray] = []
        self.value: list[np.ndarray] = []
        self.roots: list[int] = []
        self.n_nodes = 0
        self.n_words = 0

    def concat(self, name: str, dtype: Any) -> np.ndarray:
        parts = getattr(self, name)
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


def looks_like_lightgbm(head: bytes) -> bool:
    """Whether the first bytes of a file are LightGBM's model text ("tree" then "version=...")."""
    lines = head.lstrip(b"\xef\xbb\xbf").lstrip().splitlines()
    return len(lines) >= 2 and lines[0].strip() == b"tree" and lines[1].startswith(b"version=")


def read_lightgbm_file(path: str | os.PathLike[str], classes: list[Any] | None = None) -> TreeEnsemble:
    """The TreeEnsemble of a model file written by LightGBM's save_model."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"LightGBM model file {os.fspath(path)!r} is not utf-8 text: {error}") from None
    return ensemble_from_lightgbm_text(text, classes)


def ensemble_from_lightgbm_object(obj: Any) -> TreeEnsemble:
    """The TreeEnsemble of an in-memory lightgbm Booster, LGBMClassifier or LGBMRegressor.

    model_to_string() without arguments writes the iterations their predict uses by default
    (best_iteration when early stopping set one, else all), so the two agree.
    """
    kinds = {klass.__name__ for klass in type(obj).__mro__ if klass.__module__.startswith("lightgbm")}
    if "LGBMClassifier" in kinds:
        ensemble = ensemble_from_lightgbm_text(obj.booster_.model_to_string(), list(np.asarray(obj.classes_).tolist()))
        _expect_task(ensemble, "classification", "LGBMClassifier")
    elif "LGBMRegressor" in kinds:
        ensemble = ensemble_from_lightgbm_text(obj.booster_.model_to_string())
        _expect_task(ensemble, "regression", "LGBMRegressor")
    elif "Booster" in kinds:
        ensemble = ensemble_from_lightgbm_text(obj.model_to_string())
    elif "LGBMModel" in kinds:  # LGBMRanker: its objective is refused by name
        ensemble = ensemble_from_lightgbm_text(obj.booster_.model_to_string())
        raise ValueError(f"lightgbm.{type(obj).__name__} ({ensemble.notes['objective']}) is not served")
    else:
        raise ValueError(f"{type(obj).__module__}.{type(obj).__name__} is not a lightgbm Booster, LGBMClassifier or LGBMRegressor")
    ensemble.estimator = f"lightgbm.{type(obj).__name__} ({ensemble.notes['objective']})"
    return ensemble


def _expect_task(ensemble: TreeEnsemble, task: str, kind: str) -> None:
    if ensemble.task != task:
        raise ValueError(f"{kind} with objective {ensemble.notes['objective']!r} is not served: its predict is not a {task} head")


def ensemble_from_lightgbm_text(text: str, classes: list[Any] | None = None) -> TreeEnsemble:
    """The TreeEnsemble of LightGBM's model text; `classes` names a classifier's outputs (default 0..k-1)."""
    lines = text.splitlines()
    header, first_tree = _parse_header(lines)
    if not any(line.strip() == "end of trees" for line in lines[first_tree:]):
        raise ValueError("LightGBM model text is truncated: no 'end of trees' line")
    n_features = _int(header, "max_feature_idx", "header") + 1
    num_class = _int(header, "num_class", "header")
    per_iteration = _int(header, "num_tree_per_iteration", "header") if "num_tree_per_iteration" in header else num_class
    _check_header(header, n_features, num_class, per_iteration)
    objective = header.get("objective")
    if objective is None:
        raise ValueError("LightGBM model has no objective (a custom objective): what its raw scores mean is unknown")
    head = _objective_head(objective, num_class, per_iteration)
    trees = _parse_trees(lines, first_tree, n_features)
    if "tree_sizes" in header and len(header["tree_sizes"].split()) != len(trees):
        raise ValueError(f"LightGBM model: tree_sizes lists {len(header['tree_sizes'].split())} trees but {len(trees)} are written (truncated?)")
    if not trees or len(trees) % per_iteration:
        raise ValueError(f"LightGBM model: {len(trees)} trees is not a positive multiple of num_tree_per_iteration={per_iteration}")
    average = "average_output" in header
    ensemble = _assemble(trees, n_features, per_iteration, head)
    ensemble.divisor = float(len(trees) // per_iteration) if average else 1.0
    if head.task == "classification":
        ensemble.classes = list(classes) if classes is not None else list(range(max(num_class, 2)))
        # raw_score is the undivided sum for average_output (rf): GBDT::PredictRaw skips the division
        ensemble.has_decision = not average
    elif classes is not None:
        raise ValueError(f"LightGBM objective {objective!r} is not a classifier, yet classes were given")
    ensemble.estimator = f"lightgbm ({objective})"
    ensemble.notes = {
        "objective": objective, "boosting": "rf" if average else "gbdt", "version": header.get("version"),
        "n_iterations": len(trees) // per_iteration, "feature_names": header.get("feature_names", "").split(),
    }
    ensemble.validate()
    return ensemble


def _parse_header(lines: list[str]) -> tuple[dict[str, str], int]:
    """The header's keys, and the index of the first `Tree=` line."""
    index = 0
    while index < len(lines) and not lines[index].strip():
        index += 1
    if index == len(lines) or lines[index].strip().lstrip("\ufeff") != "tree":
        raise ValueError("not a LightGBM model text: it does not start with the line 'tree'")
    header: dict[str, str] = {}
    for index in range(index + 1, len(lines)):
        line = lines[index].strip()
        if line.startswith("Tree="):
            return header, index
        if line == "end of trees":
            break
        if not line:
            continue
        key, _, value = line.partition("=")
        if key not in _HEADER_KEYS:
            raise ValueError(f"LightGBM model: unknown header line {line[:80]!r}")
        header[key] = value
    raise ValueError("LightGBM model has no trees (the text ends before the first 'Tree=')")


def _check_header(header: dict[str, str], n_features: int, num_class: int, per_iteration: int) -> None:
    version = header.get("version")
    if version not in _VERSIONS:
        raise ValueError(f"LightGBM model version {version!r} is not one this reader knows ({', '.join(sorted(_VERSIONS))})")
    if n_features < 1 or num_class < 1 or per_iteration < 1:
        raise ValueError("LightGBM model: max_feature_idx, num_class and num_tree_per_iteration must be positive")
    for key in ("feature_names", "feature_infos"):
        if key in header and len(header[key].split()) != n_features:
            raise ValueError(f"LightGBM model: {key} lists {len(header[key].split())} features, max_feature_idx says {n_features}")


def _objective_head(objective: str, num_class: int, per_iteration: int) -> _Head:
    """How LightGBM's ConvertOutput (src/objective/*.hpp) turns raw scores into predictions, as a TreeEnsemble head."""
    canonical = _OBJECTIVE_ALIASES.get(objective, objective)
    name, *tokens = canonical.split(" ")
    params = _objective_params(objective, tokens)
    if name in ("multiclass", "multiclassova"):
        if params.get("num_class") != str(num_class) or per_iteration != num_class:
            raise ValueError(f"LightGBM objective {objective!r} disagrees with num_class={num_class}, num_tree_per_iteration={per_iteration}")
    elif per_iteration != 1 or num_class != 1:
        raise ValueError(f"LightGBM objective {objective!r} with num_class={num_class}: one tree per iteration expected")
    allowed = {"binary": {"sigmoid"}, "multiclass": {"num_class"}, "multiclassova": {"num_class", "sigmoid"}}.get(name, set())
    if set(params) - allowed:
        raise ValueError(f"LightGBM objective {objective!r}: parameters {sorted(set(params) - allowed)} are not understood")
    if name in _IDENTITY_OBJECTIVES:
        return _Head("regression", "identity", 1.0, 1)
    if name in _EXP_OBJECTIVES:
        return _Head("regression", "exp", 1.0, 1)
    if name == "cross_entropy":
        return _Head("regression", "logistic", 1.0, 1)
    if name == "binary":
        return _Head("classification", "logistic", _sigmoid(objective, params), 1)
    if name == "multiclass":
        return _Head("classification", "softmax", 1.0, num_class)
    if name == "multiclassova":
        if num_class < 3:
            # TreeEnsemble.validate reads a logistic head with two classes as binary (one raw column)
            raise ValueError(f"LightGBM objective {objective!r}: one-vs-all with {num_class} classes is not served")
        return _Head("classification", "logistic", _sigmoid(objective, params), num_class)
    if name == "cross_entropy_lambda":
        raise ValueError(f"LightGBM objective {objective!r} is not served: its output log1p(exp(raw)) is not a TreeEnsemble link")
    raise ValueError(f"LightGBM objective {objective!r} is not served (ranking, custom and unknown objectives are refused)")


def _objective_params(objective: str, tokens: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for token in tokens:
        if token == "sqrt":
            raise ValueError(f"LightGBM objective {objective!r} is not served: reg_sqrt's output sign(raw) * raw**2 is not a TreeEnsemble link")
        key, sep, value = token.partition(":")
        if not sep or key in params:
            raise ValueError(f"LightGBM objective {objective!r}: cannot read {token!r}")
        params[key] = value
    return params


def _sigmoid(objective: str, params: dict[str, str]) -> float:
    try:
        value = float(params["sigmoid"])
    except (KeyError, ValueError):
        raise ValueError(f"LightGBM objective {objective!r} needs a numeric sigmoid parameter") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"LightGBM objective {objective!r}: sigmoid must be positive")
    return value


def _parse_trees(lines: list[str], start: int, n_features: int) -> list[_Tree]:
    """Every `Tree=` block up to `end of trees` (what follows, importances and parameters, is not read)."""
    trees: list[_Tree] = []
    index = start
    while index < len(lines):
        line = lines[index].strip()
        index += 1
        if not line:
            continue
        if line == "end of trees":
            return trees
        if line != f"Tree={len(trees)}":
            raise ValueError(f"LightGBM model: expected 'Tree={len(trees)}' or 'end of trees', found {line[:80]!r}")
        block: dict[str, str] = {}
        while index < len(lines) and lines[index].strip():
            key, sep, value = lines[index].strip().partition("=")
            if not sep or key in block:
                raise ValueError(f"LightGBM model tree {len(trees)}: cannot read line {lines[index][:80]!r}")
            block[key] = value
            index += 1
        trees.append(_parse_tree(block, len(trees), n_features))
    raise ValueError("LightGBM model text is truncated: no 'end of trees' line")


def _parse_tree(block: dict[str, str], number: int, n_features: int) -> _Tree:
    where = f"LightGBM model tree {number}"
    if block.get("is_linear", "0") != "0" or _LINEAR_TREE_KEYS & block.keys():
        raise ValueError(f"{where}: linear trees (linear_tree=True) are not served: their leaves are linear models")
    unknown = block.keys() - _TREE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
    n_leaves = _int(block, "num_leaves", where)
    num_cat = _int(block, "num_cat", where)
    if n_leaves < 1 or num_cat < 0:
        raise ValueError(f"{where}: num_leaves={n_leaves}, num_cat={num_cat}")
    n_internal = n_leaves - 1
    tree = _Tree(
        split_feature=_array(block, "split_feature", np.int64, n_internal, where),
        threshold=_array(block, "threshold", np.float64, n_internal, where),
        decision_type=_array(block, "decision_type", np.int64, n_internal, where, optional=True),
        left_child=_array(block, "left_child", np.int64, n_internal, where),
        right_child=_array(block, "right_child", np.int64, n_internal, where),
        leaf_value=_array(block, "leaf_value", np.float64, n_leaves, where),
        cat_boundaries=_array(block, "cat_boundaries", np.int64, num_cat + 1, where, optional=num_cat == 0),
        cat_threshold=np.zeros(0, dtype=np.uint32),
        cover=_counts(block, n_internal, n_leaves, where),
    )
    if num_cat:
        bounds = tree.cat_boundaries
        if bounds[0] != 0 or (np.diff(bounds) < 1).any():
            raise ValueError(f"{where}: cat_boundaries {bounds.tolist()} are not increasing from 0")
        words = _array(block, "cat_threshold", np.int64, int(bounds[-1]), where)
        if words.size and (words.min() < 0 or words.max() > 0xFFFFFFFF):
            raise ValueError(f"{where}: cat_threshold words must be uint32")
        tree.cat_threshold = words.astype(np.uint32)
    _check_tree(tree, n_leaves, num_cat, n_features, where)
    return tree


def _counts(block: dict[str, str], n_internal: int, n_leaves: int, where: str) -> np.ndarray | None:
    """The rows that reached each node (internal nodes, then leaves); a one-leaf tree needs none."""
    if n_internal == 0:
        return np.zeros(1)
    if "internal_count" not in block or "leaf_count" not in block:
        return None
    return np.concatenate([_array(block, "internal_count", np.float64, n_internal, where), _array(block, "leaf_count", np.float64, n_leaves, where)])


def _check_tree(tree: _Tree, n_leaves: int, num_cat: int, n_features: int, where: str) -> None:
    """Indices in range and decision types LightGBM writes; that each node is reached once TreeEnsemble.validate checks."""
    if tree.n_internal == 0:
        return
    children = np.concatenate([tree.left_child, tree.right_child])
    if children.max() >= tree.n_internal or (~children).max() >= n_leaves:
        raise ValueError(f"{where}: a child index is out of range")
    if tree.split_feature.min() < 0 or tree.split_feature.max() >= n_features:
        raise ValueError(f"{where}: a split feature is out of range (the model has {n_features} features)")
    decision = tree.decision_type
    if decision.min() < 0 or decision.max() > 15 or ((decision >> 2) & 3 == 3).any():
        raise ValueError(f"{where}: decision_type values {sorted(set(decision.tolist()))} are not LightGBM's")
    categorical = (decision & _CATEGORICAL).astype(bool)
    if int(categorical.sum()) != num_cat:
        raise ValueError(f"{where}: num_cat={num_cat} but {int(categorical.sum())} categorical splits")
    cat_index = tree.threshold[categorical]
    if categorical.any() and ((cat_index != np.trunc(cat_index)).any() or cat_index.min() < 0 or cat_index.max() >= num_cat):
        raise ValueError(f"{where}: a categorical split's threshold is not a bitset index")
    if np.isnan(tree.threshold).any():
        raise ValueError(f"{where}: a threshold is NaN")


def _assemble(trees: list[_Tree], n_features: int, per_iteration: int, head: _Head) -> TreeEnsemble:
    nodes = _Nodes()
    for tree in trees:
        _add_tree(nodes, tree)
    categorical = nodes.concat("categorical", bool)
    zero_missing = nodes.concat("zero_missing", bool)
    has_cat = bool(categorical.any())
    return TreeEnsemble(
        estimator="lightgbm",
        n_features=n_features,
        feature=nodes.concat("feature", np.int64),
        threshold=nodes.concat("threshold", np.float64),
        left=nodes.concat("left", np.int64),
        right=nodes.concat("right", np.int64),
        missing_left=nodes.concat("missing_left", bool),
        value=nodes.concat("value", np.float64).reshape(-1, 1),
        roots=np.asarray(nodes.roots, dtype=np.int64),
        tree_output=np.arange(len(trees), dtype=np.int64) % per_iteration,
        base=np.zeros(head.n_raw),
        comparison="le",
        precision="float64",
        zero_missing=zero_missing if zero_missing.any() else None,
        categorical=categorical if has_cat else None,
        cat_start=nodes.concat("cat_start", np.int64) if has_cat else None,
        cat_nbits=nodes.concat("cat_nbits", np.int64) if has_cat else None,
        cat_words=nodes.concat("cat_words", np.uint32) if has_cat else None,
        # out-of-bitset, negative (static_cast<int> truncates), huge and NaN categories all go right
        cat_other_left=np.zeros(nodes.n_nodes, dtype=bool) if has_cat else None,
        task=head.task,
        link=head.link,
        link_scale=head.link_scale,
        accepts_nan=True,
        accepts_inf=True,
        cover=None if any(t.cover is None for t in trees) else np.concatenate([t.cover for t in trees if t.cover is not None]),
    )


def _add_tree(nodes: _Nodes, tree: _Tree) -> None:
    """Append one tree: its internal nodes first, then its leaves (leaf j at offset + n_internal + j)."""
    offset, n_internal, n_leaves = nodes.n_nodes, tree.n_internal, tree.leaf_value.shape[0]
    n = n_internal + n_leaves
    decision = tree.decision_type
    categorical = (decision & _CATEGORICAL).astype(bool)
    missing_type = (decision >> 2) & 3
    default_left = (decision & _DEFAULT_LEFT).astype(bool)

    def child(index: np.ndarray) -> np.ndarray:
        return np.where(index >= 0, offset + index, offset + n_internal + ~index)

    threshold = np.array([_routed_threshold(t, m) for t, m in zip(tree.threshold, missing_type, strict=True)], dtype=np.float64)
    # NaN: LightGBM routes it as 0.0 unless the missing type is NaN, then Zero sends that 0.0 the default way
    missing_left = np.where(missing_type == _MISSING_NONE, tree.threshold >= 0.0, default_left) & ~categorical
    cat_start = np.zeros(n, dtype=np.int64)
    cat_nbits = np.zeros(n, dtype=np.int64)
    for node in np.flatnonzero(categorical):
        first, last = tree.cat_boundaries[int(tree.threshold[node])], tree.cat_boundaries[int(tree.threshold[node]) + 1]
        cat_start[node] = nodes.n_words + first
        cat_nbits[node] = 32 * (last - first)
    nodes.feature.append(np.concatenate([tree.split_feature, np.zeros(n_leaves, dtype=np.int64)]))
    nodes.threshold.append(np.concatenate([np.where(categorical, 0.0, threshold), np.zeros(n_leaves)]))
    nodes.left.append(np.concatenate([child(tree.left_child), np.full(n_leaves, -1, dtype=np.int64)]))
    nodes.right.append(np.concatenate([child(tree.right_child), np.full(n_leaves, -1, dtype=np.int64)]))
    nodes.missing_left.append(np.concatenate([missing_left, np.zeros(n_leaves, dtype=bool)]))
    nodes.zero_missing.append(np.concatenate([(missing_type == _MISSING_ZERO) & ~categorical, np.zeros(n_leaves, dtype=bool)]))
    nodes.categorical.append(np.concatenate([categorical, np.zeros(n_leaves, dtype=bool)]))
    nodes.cat_start.append(cat_start)
    nodes.cat_nbits.append(cat_nbits)
    nodes.cat_words.append(tree.cat_threshold)
    nodes.value.append(np.concatenate([np.zeros(n_internal), tree.leaf_value]))
    nodes.roots.append(offset)
    nodes.n_nodes += n
    nodes.n_words += int(tree.cat_threshold.shape[0])


def _routed_threshold(threshold: float, missing_type: int) -> float:
    """The threshold on the raw value that LightGBM's rule amounts to.

    LightGBM's predict turns every |x| <= kZeroThreshold into 0.0 before routing (c_api.cpp,
    RowPairFunctionFromDenseMatrix), so a threshold in [-kZero, kZero) splits those tiny values
    as it splits 0.0: the equivalent rule moves the threshold to the edge of that band.
    Zero-missing nodes send the band the default way through zero_missing instead.
    """
    if missing_type == _MISSING_ZERO:
        return threshold
    if 0.0 <= threshold < K_ZERO:
        return K_ZERO
    if -K_ZERO <= threshold < 0.0:
        return float(np.nextafter(-K_ZERO, -np.inf))
    return threshold


def _int(fields: dict[str, str], key: str, where: str) -> int:
    if key not in fields:
        raise ValueError(f"{where}: missing {key}")
    try:
        return int(fields[key])
    except ValueError:
        raise ValueError(f"{where}: {key}={fields[key][:40]!r} is not an integer") from None


def _array(fields: dict[str, str], key: str, dtype: Any, count: int, where: str, optional: bool = False) -> np.ndarray:
    """A space-separated field of exactly `count` numbers (an absent optional one: zeros, as LightGBM reads it)."""
    if key not in fields:
        if optional or count == 0:
            return np.zeros(count, dtype=dtype)
        raise ValueError(f"{where}: missing {key}")
    items = fields[key].split()
    if len(items) != count:
        raise ValueError(f"{where}: {key} has {len(items)} values, expected {count}")
    try:
        return np.array([int(v) for v in items] if np.dtype(dtype).kind == "i" else [float(v) for v in items], dtype=dtype)
    except (ValueError, OverflowError):
        raise ValueError(f"{where}: {key} holds a value that is not a number") from None
