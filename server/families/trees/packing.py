"""A TreeEnsemble packed into the arrays kernels/trees.py reads (its docstring draws the layout).

Every node's comparison becomes "go to child + 1 iff sign * x > threshold" in the
comparison dtype, with thresholds moved to the float below or at the library's so that
values at and next to a threshold go the way the library sends them:
    x <= t  (scikit-learn, LightGBM, HistGradientBoosting)  iff  x <= T, T = the largest C value <= t
    x < t   (XGBoost)                                        iff  x <= T, T = the largest C value < t
Where NaN goes right, the children are swapped and the comparison negated
(x <= T iff -x > -next_up(T)), so that NaN, false in every comparison, takes the first child.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tensorwire.kernels.trees import CATEGORICAL, CATEGORICAL_EXACT, CATEGORICAL_NONNEGATIVE, NAN_ONLY, NODE_FP32, NODE_FP64, NUMERIC, ZERO_MISSING, ZERO_NAN_ONLY
from tensorwire.server.families.trees.ensemble import TreeEnsemble


def comparison_dtype(ensemble: TreeEnsemble, input_dtype: Any) -> np.dtype:  # type: ignore[type-arg]
    """float32 where the library rounds inputs to float32 or the model's input is float32 (exact either way), else float64."""
    if ensemble.precision == "float32" or np.dtype(input_dtype) == np.float32:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _at_or_below(t: np.ndarray, dtype: np.dtype, strict: bool) -> np.ndarray:  # type: ignore[type-arg]
    """The largest dtype value <= t (strict: < t), elementwise."""
    rounded = t.astype(dtype)
    too_high = rounded >= t if strict else rounded > t
    return np.where(too_high, np.nextafter(rounded, dtype.type(-np.inf)), rounded).astype(dtype)


def pack(ensemble: TreeEnsemble, input_dtype: Any) -> dict[str, np.ndarray]:
    """The kernel arrays of an ensemble for a model whose input has dtype input_dtype."""
    dtype = comparison_dtype(ensemble, input_dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        T = _at_or_below(ensemble.threshold, dtype, strict=ensemble.comparison == "lt")
        flipped = np.nextafter(-T, dtype.type(-np.inf))  # -next_up(T)
    if ensemble.comparison == "lt":  # "x < -inf" holds for no number: flipped, every number goes to the first child
        flipped = np.where(ensemble.threshold == -np.inf, dtype.type(np.inf), flipped)
    order, first_child = _layout(ensemble)
    n = order.shape[0]
    old = order  # old[new] = the ensemble's node at packed position new
    internal = ensemble.left[old] >= 0
    right_first = internal & ~ensemble.missing_left[old]
    nodes = np.zeros(n, dtype=NODE_FP32 if dtype == np.float32 else NODE_FP64)
    nodes["feature"] = np.where(internal, ensemble.feature[old], 0)
    nodes["threshold"] = np.where(internal, np.where(right_first, flipped[old], T[old]), dtype.type(np.inf))
    nodes["sign"] = np.where(right_first, -1.0, 1.0)
    nodes["child"] = np.where(internal, first_child, np.arange(n))
    leaf_slot = np.full(n, -1, dtype=np.int32)
    leaf_slot[~internal] = np.arange(int((~internal).sum()), dtype=np.int32)
    arrays: dict[str, np.ndarray] = {
        "nodes": nodes.view(np.int32).reshape(n, -1),  # the model file holds plain arrays; the scorer views them as records again
        "leaf_slot": leaf_slot,
        "leaf_value": np.ascontiguousarray(ensemble.value[old[~internal]], dtype=np.float64),
        "tree_root": _new_roots(ensemble, old),
        "tree_min_depth": _min_depths(ensemble).astype(np.int32),
        "tree_output": ensemble.tree_output.astype(np.int32),
        "base": ensemble.base.astype(np.float64),
    }
    if _has_special_nodes(ensemble):
        arrays.update(_special_arrays(ensemble, old, internal))
    if ensemble.cover is not None and ensemble.explainable() is None:
        arrays["cover"] = np.ascontiguousarray(ensemble.cover[old], dtype=np.float64)  # read by kernels/tree_shap.py
    return arrays


def _layout(ensemble: TreeEnsemble) -> tuple[np.ndarray, np.ndarray]:
    """(old index of each packed node, packed index of each packed node's first child): tree by tree, breadth first,
    each node's children side by side, NaN's child first."""
    order: list[int] = []
    first_child: list[int] = []
    left, right, missing_left = ensemble.left, ensemble.right, ensemble.missing_left
    for root in ensemble.roots:
        order.append(int(root))
        first_child.append(-1)
        i = len(order) - 1
        while i < len(order):
            node = order[i]
            if left[node] >= 0:
                first_child[i] = len(order)
                pair = (left[node], right[node]) if missing_left[node] else (right[node], left[node])
                order += [int(pair[0]), int(pair[1])]
                first_child += [-1, -1]
            i += 1
    return np.array(order, dtype=np.int64), np.array(first_child, dtype=np.int64)


def _min_depths(ensemble: TreeEnsemble) -> np.ndarray:
    """The depth of each tree's shallowest leaf: every row takes at least that many steps."""
    result = np.zeros(ensemble.n_trees, dtype=np.int64)
    for t, root in enumerate(ensemble.roots):
        level, depth = [int(root)], 0
        while all(ensemble.left[node] >= 0 for node in level):
            level = [int(c) for node in level for c in (ensemble.left[node], ensemble.right[node])]
            depth += 1
        result[t] = depth
    return result


def _new_roots(ensemble: TreeEnsemble, old: np.ndarray) -> np.ndarray:
    position = np.empty(ensemble.n_nodes, dtype=np.int64)
    position[old] = np.arange(old.shape[0])
    return position[ensemble.roots].astype(np.int32)


def _nan_only(ensemble: TreeEnsemble) -> np.ndarray:
    """Numeric splits that send every number, ±inf included, the other way from NaN, which no "sign * x > T" says:
    "x <= +inf" with NaN going right, "x < -inf" (never) with NaN going left."""
    numeric = ensemble.left >= 0
    if ensemble.categorical is not None:
        numeric &= ~ensemble.categorical
    if ensemble.comparison == "le":
        return numeric & ~ensemble.missing_left & (ensemble.threshold == np.inf)
    return numeric & ensemble.missing_left & (ensemble.threshold == -np.inf)


def _has_special_nodes(ensemble: TreeEnsemble) -> bool:
    internal = ensemble.left >= 0
    if _nan_only(ensemble).any():
        return True
    zero = ensemble.zero_missing is not None and bool((ensemble.zero_missing & internal).any())
    cat = ensemble.categorical is not None and bool((ensemble.categorical & internal).any())
    return zero or cat


def _special_arrays(ensemble: TreeEnsemble, old: np.ndarray, internal: np.ndarray) -> dict[str, np.ndarray]:
    n = old.shape[0]
    kind = np.full(n, NUMERIC, dtype=np.int8)
    if ensemble.zero_missing is not None:
        kind[internal & ensemble.zero_missing[old]] = ZERO_MISSING
    nan_only = _nan_only(ensemble)[old]
    kind[nan_only] = np.where(kind[nan_only] == ZERO_MISSING, ZERO_NAN_ONLY, NAN_ONLY)
    cat_start = np.zeros(n, dtype=np.int32)
    cat_nbits = np.zeros(n, dtype=np.int32)
    cat_other = np.zeros(n, dtype=np.uint8)
    cat_words = np.zeros(1, dtype=np.uint32)
    if ensemble.categorical is not None:
        assert ensemble.cat_start is not None and ensemble.cat_nbits is not None and ensemble.cat_words is not None and ensemble.cat_other_left is not None
        cats = internal & ensemble.categorical[old]
        kind[cats] = {"truncate": CATEGORICAL, "exact": CATEGORICAL_EXACT, "nonnegative": CATEGORICAL_NONNEGATIVE}[ensemble.cat_rule]
        cat_start[cats] = ensemble.cat_start[old[cats]]
        cat_nbits[cats] = ensemble.cat_nbits[old[cats]]
        cat_other[cats] = ensemble.cat_other_left[old[cats]]
        if ensemble.cat_words.size:
            cat_words = ensemble.cat_words.astype(np.uint32)
    return {"kind": kind, "cat_start": cat_start, "cat_nbits": cat_nbits, "cat_other": cat_other, "cat_words": cat_words}
