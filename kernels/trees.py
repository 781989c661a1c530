"""Tree-ensemble kernels: rows routed through every tree, leaf values summed into raw scores.

The packed layout (server/families/trees/packing.py writes it; C is the comparison
dtype, float32 or float64):
    nodes [N], records of NODE_FP32 or NODE_FP64 (threshold C, sign C, feature uint32, child uint32)
        at node n a row moves to child + (sign * x > threshold), x = X[row, feature].
        child is the child NaN goes to: sign -1 swaps the children and negates the comparison,
        so NaN, false in every comparison, takes `child` either way. A leaf points at itself
        with threshold +inf, so a step at a leaf leaves the row there.
    leaf_slot int32 [N]      a leaf's row in leaf_value (-1 at internal nodes)
    leaf_value float64 [n_leaves, width]
    tree_root, tree_min_depth (the shallowest leaf's depth), tree_output int32 [T]
Models with categorical or zero-as-missing splits add `kind` int8 [N] (NUMERIC, CATEGORICAL,
CATEGORICAL_EXACT, ZERO_MISSING), cat_start, cat_nbits int32 [N], cat_other uint8 [N] and cat_words uint32 [M]:
    categorical node: c = trunc(x); for 0 <= c < cat_nbits the bitset says left, elsewhere
    cat_other says left (1) or right (0); NaN takes `child`. CATEGORICAL_EXACT: as CATEGORICAL,
    but a value that is not a whole number is one of the "elsewhere"; CATEGORICAL_NONNEGATIVE:
    so is any negative value (-0.5 too). NAN_ONLY: NaN takes `child`, every number (±inf too)
    `child + 1` (e.g. "x <= +inf" where NaN goes right: no "sign * x > T" says it); ZERO_NAN_ONLY:
    the same with |x| <= 1e-35 taking `child` as NaN does. ZERO_MISSING: |x| <= 1e-35 takes
    `child`, as NaN does. The *_general kernels read these; the others never pay for them.

Speed comes from overlapping independent descents: LANES of them advance one step at a
time in lockstep (8 rows through one tree for batches, 8 trees for one row otherwise), for
the tree's shallowest-leaf depth without looking, then until every lane sits at a leaf.
Batches go tree-major in blocks of ROW_BLOCK rows, so a block stays in cache while every
tree passes over it.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from tensorwire.kernels.config import inlined, kernel, parallel_kernel

NUMERIC, CATEGORICAL, ZERO_MISSING, CATEGORICAL_EXACT, CATEGORICAL_NONNEGATIVE, NAN_ONLY, ZERO_NAN_ONLY = 0, 1, 2, 3, 4, 5, 6
ZERO_THRESHOLD = float(np.float32(1e-35))  # LightGBM's kZeroThreshold, the float literal 1e-35f
ROW_BLOCK = 64
LANES = 8  # unrolled by hand below

NODE_FP32 = np.dtype([("threshold", "<f4"), ("sign", "<f4"), ("feature", "<u4"), ("child", "<u4")])
NODE_FP64 = np.dtype([("threshold", "<f8"), ("sign", "<f8"), ("feature", "<u4"), ("child", "<u4")])


@inlined
def _step(nodes, X, row, n):  # type: ignore[no-untyped-def]
    node = nodes[n]
    return node.child + np.uint32(node.sign * X[row, node.feature] > node.threshold)


@inlined
def _at_leaf(nodes, n):  # type: ignore[no-untyped-def]
    return nodes[n].child == n


@inlined
def _descend(nodes, X, row, n):  # type: ignore[no-untyped-def]
    while not _at_leaf(nodes, n):
        n = _step(nodes, X, row, n)
    return n


@inlined
def _add_leaf(out, row, column, leaf_slot, leaf_value, n):  # type: ignore[no-untyped-def]
    slot = leaf_slot[n]
    for k in range(leaf_value.shape[1]):
        out[row, column + k] += leaf_value[slot, k]


@kernel
def _block(X, start, stop, nodes, leaf_slot, leaf_value, tree_root, tree_min_depth, tree_output, out):  # type: ignore[no-untyped-def]
    """Rows start..stop through every tree, LANES rows at a time; leaf values added to out."""
    for t in range(tree_root.shape[0]):
        root = np.uint32(tree_root[t])
        o = tree_output[t]
        s = start
        while s + LANES <= stop:
            n0 = n1 = n2 = n3 = n4 = n5 = n6 = n7 = root
            for _ in range(tree_min_depth[t]):
                n0 = _step(nodes, X, s, n0)
                n1 = _step(nodes, X, s + 1, n1)
                n2 = _step(nodes, X, s + 2, n2)
                n3 = _step(nodes, X, s + 3, n3)
                n4 = _step(nodes, X, s + 4, n4)
                n5 = _step(nodes, X, s + 5, n5)
                n6 = _step(nodes, X, s + 6, n6)
                n7 = _step(nodes, X, s + 7, n7)
            while not (
                _at_leaf(nodes, n0) and _at_leaf(nodes, n1) and _at_leaf(nodes, n2) and _at_leaf(nodes, n3)
                and _at_leaf(nodes, n4) and _at_leaf(nodes, n5) and _at_leaf(nodes, n6) and _at_leaf(nodes, n7)
            ):
                n0 = _step(nodes, X, s, n0)
                n1 = _step(nodes, X, s + 1, n1)
                n2 = _step(nodes, X, s + 2, n2)
                n3 = _step(nodes, X, s + 3, n3)
                n4 = _step(nodes, X, s + 4, n4)
                n5 = _step(nodes, X, s + 5, n5)
                n6 = _step(nodes, X, s + 6, n6)
                n7 = _step(nodes, X, s + 7, n7)
            _add_leaf(out, s, o, leaf_slot, leaf_value, n0)
            _add_leaf(out, s + 1, o, leaf_slot, leaf_value, n1)
            _add_leaf(out, s + 2, o, leaf_slot, leaf_value, n2)
            _add_leaf(out, s + 3, o, leaf_slot, leaf_value, n3)
            _add_leaf(out, s + 4, o, leaf_slot, leaf_value, n4)
            _add_leaf(out, s + 5, o, leaf_slot, leaf_value, n5)
            _add_leaf(out, s + 6, o, leaf_slot, leaf_value, n6)
            _add_leaf(out, s + 7, o, leaf_slot, leaf_value, n7)
            s += LANES
        while s < stop:
            _add_leaf(out, s, o, leaf_slot, leaf_value, _descend(nodes, X, s, root))
            s += 1


@kernel
def _one_row(X, row, nodes, leaf_slot, leaf_value, tree_root, tree_min_depth, tree_output, out):  # type: ignore[no-untyped-def]
    """One row through every tree, LANES trees at a time; leaf values added to out[row]."""
    n_trees = tree_root.shape[0]
    t = 0
    while t + LANES <= n_trees:
        n0, n1, n2, n3 = np.uint32(tree_root[t]), np.uint32(tree_root[t + 1]), np.uint32(tree_root[t + 2]), np.uint32(tree_root[t + 3])
        n4, n5, n6, n7 = np.uint32(tree_root[t + 4]), np.uint32(tree_root[t + 5]), np.uint32(tree_root[t + 6]), np.uint32(tree_root[t + 7])
        depth = tree_min_depth[t]
        for j in range(1, LANES):
            depth = min(depth, tree_min_depth[t + j])
        for _ in range(depth):
            n0 = _step(nodes, X, row, n0)
            n1 = _step(nodes, X, row, n1)
            n2 = _step(nodes, X, row, n2)
            n3 = _step(nodes, X, row, n3)
            n4 = _step(nodes, X, row, n4)
            n5 = _step(nodes, X, row, n5)
            n6 = _step(nodes, X, row, n6)
            n7 = _step(nodes, X, row, n7)
        while not (
            _at_leaf(nodes, n0) and _at_leaf(nodes, n1) and _at_leaf(nodes, n2) and _at_leaf(nodes, n3)
            and _at_leaf(nodes, n4) and _at_leaf(nodes, n5) and _at_leaf(nodes, n6) and _at_leaf(nodes, n7)
        ):
            n0 = _step(nodes, X, row, n0)
            n1 = _step(nodes, X, row, n1)
            n2 = _step(nodes, X, row, n2)
            n3 = _step(nodes, X, row, n3)
            n4 = _step(nodes, X, row, n4)
            n5 = _step(nodes, X, row, n5)
            n6 = _step(nodes, X, row, n6)
            n7 = _step(nodes, X, row, n7)
        _add_leaf(out, row, tree_output[t], leaf_slot, leaf_value, n0)
        _add_leaf(out, row, tree_output[t + 1], leaf_slot, leaf_value, n1)
        _add_leaf(out, row, tree_output[t + 2], leaf_slot, leaf_value, n2)
        _add_leaf(out, row, tree_output[t + 3], leaf_slot, leaf_value, n3)
        _add_leaf(out, row, tree_output[t + 4], leaf_slot, leaf_value, n4)
        _add_leaf(out, row, tree_output[t + 5], leaf_slot, leaf_value, n5)
        _add_leaf(out, row, tree_output[t + 6], leaf_slot, leaf_value, n6)
        _add_leaf(out, row, tree_output[t + 7], leaf_slot, leaf_value, n7)
        t += LANES
    while t < n_trees:
        _add_leaf(out, row, tree_output[t], leaf_slot, leaf_value, _descend(nodes, X, row, np.uint32(tree_root[t])))
        t += 1


@kernel
def _finish(out, base, divisor):  # type: ignore[no-untyped-def]
    for i in range(out.shape[0]):
        for k in range(out.shape[1]):
            out[i, k] = base[k] + out[i, k] / divisor


@kernel
def score_trees(X, nodes, leaf_slot, leaf_value, tree_root, tree_min_depth, tree_output, base, divisor, out):  # type: ignore[no-untyped-def]
    """out [n, K] = base + (the sum over trees of the leaf values each row of X reaches) / divisor."""
    n = X.shape[0]
    out[:] = 0.0
    if n < 2 * LANES:
        for row in range(n):
            _one_row(X, row, nodes, leaf_slot, leaf_value, tree_root, tree_min_depth, tree_output, out)
    else:
        for start in range(0, n, ROW_BLOCK):
            _block(X, start, min(n, start + ROW_BLOCK), nodes, leaf_slot, leaf_value, tree_root, tree_min_depth, tree_output, out)
    _finish(out, base, divisor)


@parallel_kernel
def score_trees_parallel(X, nodes, leaf_slot, leaf_value, tree_root, tree_min_depth, tree_output, base, divisor, out):  # type: ignore[no-untyped-def]
    """score_trees with blocks of rows spread over threads."""
    n = X.shape[0]
    out[:] = 0.0
    for b in prange((n + ROW_BLOCK - 1) // ROW_BLOCK):
        start = b * ROW_BLOCK
        _block(X, start, min(n, start + ROW_BLOCK), nodes, leaf_slot, leaf_value, tree_root, tree_min_depth, tree_output, out)
    _finish(out, base, divisor)


# --- models with categorical or zero-as-missing splits ---------------------------------


@inlined
def step_general(nodes, kind, cat_start, cat_nbits, cat_other, cat_words, X, row, n):  # type: ignore[no-untyped-def]
    node = nodes[n]
    x = X[row, node.feature]
    k = kind[n]
    if k == NUMERIC:
        return node.child + np.uint32(node.sign * x > node.threshold)
    if np.isnan(x):
        return node.child
    if k == NAN_ONLY or k == ZERO_NAN_ONLY:
        if k == ZERO_NAN_ONLY and abs(np.float64(x)) <= ZERO_THRESHOLD:
            return node.child
        return node.child + np.uint32(1)
    if k == ZERO_MISSING:
        if abs(np.float64(x)) <= ZERO_THRESHOLD:
            return node.child
        return node.child + np.uint32(node.sign * x > node.threshold)
    c = np.trunc(np.float64(x))
    if c >= 0.0 and c < cat_nbits[n] and (k == CATEGORICAL or (k == CATEGORICAL_EXACT and c == x) or (k == CATEGORICAL_NONNEGATIVE and x >= 0)):
        ci = np.int64(c)
        left = (cat_words[cat_start[n] + ci // 32] >> np.uint32(ci % 32)) & np.uint32(1) == np.uint32(1)
    else:
        left = cat_other[n] == 1
    # the left child is `child` where NaN goes left (sign +1), `child + 1` where it goes right
    return node.child + np.uint32(left != (node.sign > 0))


@inlined
def _row_general(X, row, nodes, kind, cat_start, cat_nbits, cat_other, cat_words, leaf_slot, leaf_value, tree_root, tree_output, out):  # type: ignore[no-untyped-def]
    for t in range(tree_root.shape[0]):
        n = np.uint32(tree_root[t])
        while not _at_leaf(nodes, n):
            n = step_general(nodes, kind, cat_start, cat_nbits, cat_other, cat_words, X, row, n)
        _add_leaf(out, row, tree_output[t], leaf_slot, leaf_value, n)


@kernel
def score_trees_general(X, nodes, kind, cat_start, cat_nbits, cat_other, cat_words, leaf_slot, leaf_value, tree_root, tree_output, base, divisor, out):  # type: ignore[no-untyped-def]
    """score_trees for models with categorical or zero-as-missing splits: one row, one tree at a time."""
    out[:] = 0.0
    for row in range(X.shape[0]):
        _row_general(X, row, nodes, kind, cat_start, cat_nbits, cat_other, cat_words, leaf_slot, leaf_value, tree_root, tree_output, out)
    _finish(out, base, divisor)


@parallel_kernel
def score_trees_general_parallel(X, nodes, kind, cat_start, cat_nbits, cat_other, cat_words, leaf_slot, leaf_value, tree_root, tree_output, base, divisor, out):  # type: ignore[no-untyped-def]
    """score_trees_general with rows spread over threads."""
    out[:] = 0.0
    for row in prange(X.shape[0]):
        _row_general(X, row, nodes, kind, cat_start, cat_nbits, cat_other, cat_words, leaf_slot, leaf_value, tree_root, tree_output, out)
    _finish(out, base, divisor)


# --- raw scores to outputs ------------------------------------------------------------

IDENTITY, EXP, LOGISTIC, SOFTMAX, PROBA = 0, 1, 2, 3, 4
BY_PROBA, RAW_POSITIVE, RAW_NONNEGATIVE = 0, 1, 2


@kernel
def apply_link(raw, link, scale, out):  # type: ignore[no-untyped-def]
    """out = link(raw): identity, exp, or the logistic 1 / (1 + exp(-scale * raw))."""
    for i in range(raw.shape[0]):
        for k in range(raw.shape[1]):
            r = raw[i, k]
            if link == EXP:
                out[i, k] = np.exp(r)
            elif link == LOGISTIC:
                out[i, k] = 1.0 / (1.0 + np.exp(-scale * r))
            else:
                out[i, k] = r


@kernel
def classify(raw, link, scale, rule, proba, index):  # type: ignore[no-untyped-def]
    """Class probabilities and the predicted class's index from raw scores.

    LOGISTIC with one raw column: p = 1 / (1 + exp(-scale * raw)), proba [1 - p, p], class 1 by `rule`
    (BY_PROBA: p > 0.5; RAW_POSITIVE: raw > 0; RAW_NONNEGATIVE: raw >= 0). LOGISTIC with several:
    a sigmoid per class (one-vs-all, not normalised). SOFTMAX: exp(raw - max) / sum, the class of the
    highest raw score. PROBA: raw already is the probabilities. Ties go to the first class."""
    n_raw = raw.shape[1]
    for i in range(raw.shape[0]):
        if link == LOGISTIC and n_raw == 1:
            r = raw[i, 0]
            p = 1.0 / (1.0 + np.exp(-scale * r))
            proba[i, 0] = 1.0 - p
            proba[i, 1] = p
            if rule == RAW_POSITIVE:
                index[i] = 1 if r > 0.0 else 0
            elif rule == RAW_NONNEGATIVE:
                index[i] = 1 if r >= 0.0 else 0
            else:
                index[i] = 1 if p > 0.5 else 0
            continue
        best = 0
        if link == SOFTMAX:
            top = raw[i, 0]
            for k in range(1, n_raw):
                if raw[i, k] > top:
                    top, best = raw[i, k], k
            total = 0.0
            for k in range(n_raw):
                total += np.exp(raw[i, k] - top)
            for k in range(n_raw):
                proba[i, k] = np.exp(raw[i, k] - top) / total
        else:
            top = -np.inf
            for k in range(n_raw):
                p = 1.0 / (1.0 + np.exp(-scale * raw[i, k])) if link == LOGISTIC else raw[i, k]
                proba[i, k] = p
                if p > top:
                    top, best = p, k
        index[i] = best
