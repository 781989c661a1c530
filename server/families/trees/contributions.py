"""The `contributions` output of a tree model: exact path-dependent TreeSHAP values (kernels/tree_shap.py) from the node covers stored at export.

Each row gets one value per input feature and, last, the expected value, in the model's raw
space (the margin of boosted models, the averaged tree output of forests: class probabilities
for forest classifiers); they sum to the row's raw score. Shape [-1, F + 1] where the raw score
has one column, [-1, n_raw, F + 1] where it has several (XGBoost's pred_contribs layout).
A model file without the `cover` array (exported before covers were stored, or a pipeline
whose steps mix features) has no such output.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tensorwire.kernels import tree_shap, trees
from tensorwire.server.modeling.scorer_support import float_array, invalid
from tensorwire.server.repository.model_format import Manifest, TensorSpec

CONTRIBUTIONS = "contributions"


def contributions_spec(datatype: str, n_raw: int, n_features: int) -> TensorSpec:
    """The `contributions` output a tree model with covers declares."""
    return TensorSpec(CONTRIBUTIONS, datatype, [-1, n_features + 1] if n_raw == 1 else [-1, n_raw, n_features + 1])


class TreeContributions:
    """TreeSHAP over a scorer's packed trees: the cover array checked, the expected values and the deepest leaf found once at load."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray], nodes: np.ndarray, leaf_slot: np.ndarray, leaf_value: np.ndarray,
                 tree_root: np.ndarray, tree_output: np.ndarray, base: np.ndarray, divisor: float, special: tuple[np.ndarray, ...] | None) -> None:
        n_nodes = nodes.shape[0]
        self.cover = float_array(manifest, arrays, "cover", (n_nodes,))
        internal = leaf_slot < 0
        if not np.isfinite(self.cover).all() or (self.cover < 0).any() or (self.cover[internal] <= 0).any():
            raise invalid(manifest, "array 'cover' must be finite, non-negative, and positive at every split")
        if special is None:  # one kernel serves every model: plain ones read as all-numeric general ones
            special = (np.full(n_nodes, trees.NUMERIC, dtype=np.int8), np.zeros(n_nodes, dtype=np.int32), np.zeros(n_nodes, dtype=np.int32),
                       np.zeros(n_nodes, dtype=np.uint8), np.zeros(1, dtype=np.uint32))
        self.kind, self.cat_start, self.cat_nbits, self.cat_other, self.cat_words = special
        self.nodes, self.leaf_slot, self.leaf_value = nodes, leaf_slot, leaf_value
        self.tree_root, self.tree_output, self.divisor = tree_root, tree_output, divisor
        self.expected = np.empty(base.shape[0])
        self.max_depth = int(tree_shap.tree_expectations(nodes, leaf_slot, leaf_value, self.cover, tree_root, tree_output, base, divisor, self.expected))
        self.tree_end = _tree_ends(tree_root, n_nodes)
        self.fast = self._fast_tables()

    def _fast_tables(self) -> tuple[Any, ...]:
        """Fast TreeSHAP v2's per-leaf tables for the trees whose paths are short enough, within tree_shap.FAST_TABLE_BUDGET,
        and the Shapley weights the other trees' walk reads."""
        n_nodes, n_trees = self.nodes.shape[0], self.tree_root.shape[0]
        tree_fast = np.zeros(n_trees, dtype=np.bool_)
        node_pos = np.zeros(n_nodes, dtype=np.int64)
        leaf_m = np.zeros(n_nodes, dtype=np.int64)
        leaf_path = np.zeros(n_nodes, dtype=np.int64)
        leaf_table = np.zeros(n_nodes, dtype=np.int64)
        layout = (self.nodes, self.leaf_slot, self.cover, self.tree_root, self.tree_end, self.max_depth)
        n_paths, n_tables, widest = tree_shap.plan_fast_trees(*layout, tree_shap.FAST_TABLE_BUDGET, tree_fast, node_pos, leaf_m, leaf_path, leaf_table)
        path_feature = np.zeros(max(int(n_paths), 1), dtype=np.int64)
        path_zero = np.zeros(max(int(n_paths), 1))
        table = np.zeros(max(int(n_tables), 1))
        tree_shap.fill_fast_trees(*layout, tree_fast, node_pos, leaf_m, leaf_path, leaf_table, path_feature, path_zero, table)
        self.fast_trees = int(tree_fast.sum())
        weights = tree_shap.shapley_weights(self.max_depth + 2)
        return (tree_fast, node_pos, leaf_m, leaf_path, leaf_table, path_feature, path_zero, table, int(widest), weights)

    def __call__(self, Xk: np.ndarray, parallel: bool) -> np.ndarray:
        """Contributions [n, n_raw, F + 1] (float64) of rows Xk, already in the nodes' comparison dtype."""
        out = np.empty((Xk.shape[0], self.expected.shape[0], Xk.shape[1] + 1))
        explain = tree_shap.explain_trees_parallel if parallel else tree_shap.explain_trees
        explain(Xk, self.nodes, self.kind, self.cat_start, self.cat_nbits, self.cat_other, self.cat_words, self.leaf_slot, self.leaf_value,
                self.cover, self.tree_root, self.tree_end, self.tree_output, self.expected, self.divisor, self.max_depth, self.fast, out)
        return out


def _tree_ends(tree_root: np.ndarray, n_nodes: int) -> np.ndarray:
    """Where each tree's nodes end: the next root up, or the last node (packing.py lays trees out one after another)."""
    roots = tree_root.astype(np.int64)
    ordered = np.sort(roots)
    following = np.append(ordered[1:], n_nodes)
    return following[np.searchsorted(ordered, roots)]
