r"""Exact path-dependent TreeSHAP (Lundberg et al., 2020) over the packed trees of kernels/trees.py.

Besides kernels/trees.py's arrays (always the general form: `kind` all NUMERIC for plain models),
    cover float64 [N]   how much training data reached each node, as the library counts it
                        (sample weight, count or hessian sum); every internal node's is > 0.
A row's contributions, out[row] float64 [n_raw, F + 1]: out[row, k, f] is feature f's share of raw
column k, out[row, k, F] the expected value of raw column k (the cover-weighted mean of the
leaves, plus base, over divisor); each out[row, k] sums to the row's raw score k.

The values are the Shapley values of the path-dependent game, computed leaf by leaf: for a leaf of
value v whose path holds the unique features D (m of them; a feature split on twice counts once,
its zero fraction z the product of its branches' cover ratios) and A, the features at which the row
follows the path at every split,
    feature i not in A gets  -v * Z(D \ A) * K(A),        feature i in A gets  v * (1 - z_i) * Z(D \ A) * K(A \ {i}),
with Z(S) the product of z over S and K(B) = sum over S in B of |S|! (m - |S| - 1)! / m! * Z(B \ S)
= sum_s w(s) e_(|B| - s), e the coefficients of prod over B of (1 + z t). Two ways to get K:
    - Fast TreeSHAP v2 (Yang, 2021): tables of K for every subset of each leaf's path, made at load,
      for trees whose paths hold at most MAX_FAST_PATH features (within FAST_TABLE_BUDGET entries);
      a row then costs one pass over the tree's nodes plus O(m) per leaf;
    - elsewhere (deep trees), depth-first per row, each level keeping the polynomial of A and Z(D \ A),
      and each leaf dividing out one factor per feature in A: O(m * |A|) per leaf (shap's algorithm,
      which unwinds a path of permutation weights, costs O(m^2) per leaf and more per node).
Rows go in blocks of ROW_BLOCK, tree by tree, so that a tree's nodes and tables are read from cache by
every row of the block (a model's tables are megabytes: row by row, each row would fetch them all again).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from tensorwire.kernels.config import inlined, kernel, parallel_kernel
from tensorwire.kernels.trees import NUMERIC, step_general

ROW_CHUNK = 16  # rows a parallel task explains with one set of work buffers
ROW_BLOCK = 64  # rows explained tree by tree together (their contributions, 64 x (F + 1) x n_raw doubles, stay in cache)


@kernel
def shapley_weights(size):  # type: ignore[no-untyped-def]
    """w [size, size]: w[m, s] = s! (m - s - 1)! / m!, the share of a coalition of s among m players (s < m)."""
    w = np.zeros((size, size))
    for m in range(1, size):
        for s in range(m):
            w[m, s] = math.exp(math.lgamma(s + 1) + math.lgamma(m - s) - math.lgamma(m + 1))
    return w


@kernel
def _hot_child(nodes, kind, cat_start, cat_nbits, cat_other, cat_words, X, row, n):  # type: ignore[no-untyped-def]
    """The child of split n that X[row] takes, for the splits that are not plain numeric ones (missing values, categories).
    Called, not inlined: the walks inline their numeric splits, and this one copy of step_general keeps them quick to compile."""
    return np.int64(step_general(nodes, kind, cat_start, cat_nbits, cat_other, cat_words, X, row, np.uint32(n)))


@inlined
def _multiply(poly, base, degree, z):  # type: ignore[no-untyped-def]
    """poly[base : base + degree + 2] = poly[base : base + degree + 1] * (1 + z t)."""
    poly[base + degree + 1] = z * poly[base + degree]
    for k in range(degree, 0, -1):
        poly[base + k] += z * poly[base + k - 1]


@inlined
def _divide(poly, base, degree, z):  # type: ignore[no-untyped-def]
    """poly[base : base + degree] = poly[base : base + degree + 1] / (1 + z t) (it divides exactly; z <= 1 keeps this stable)."""
    for k in range(1, degree):
        poly[base + k] -= z * poly[base + k - 1]


@inlined
def _explain_tree(X, row, root, column, nodes, kind, cat_start, cat_nbits, cat_other, cat_words, leaf_slot, leaf_value, cover, phi,
                  path_feature, path_zero, path_follows, where, poly, level_inside, level_outside, undo_position, undo_zero, undo_follows,
                  stack, weights):  # type: ignore[no-untyped-def]
    """Add one tree's contributions for X[row] to phi [n_raw, F + 1] (its leaves add to columns column, column + 1, ...).

    Depth-first with one path, changed in place on the way down and undone on the way back (no copy per node):
    the unique features on it (path_feature, their zero fraction path_zero, path_follows: whether the row
    follows every split on it; where[f] is f's position or -1). Level r's change, the edge into its node, is
    recorded in undo_position[r] (-1: a new feature) and undo_zero, undo_follows (the entry's old values).
    Each level (stride S = max depth + 2 in poly) keeps the product level_outside of the zero fractions of the
    features the row leaves and the polynomial prod(1 + z t) over those it follows (poly, degree level_inside).
    stack int64 [4, S + 1] holds (node, level, parent, follows) still to visit; weights[m, s] = s! (m - s - 1)! / m!."""
    stride = stack.shape[1] - 1
    stack[0, 0], stack[1, 0], stack[2, 0], stack[3, 0] = root, 0, -1, 1
    top = 1
    count = 0
    applied = 0  # the path holds the changes of levels 1 .. applied
    while top > 0:
        top -= 1
        n, r, parent, follows = stack[0, top], stack[1, top], stack[2, top], stack[3, top]
        while applied >= r and applied > 0:
            position = undo_position[applied]
            if position < 0:
                count -= 1
                where[path_feature[count]] = -1
            else:
                path_zero[position] = undo_zero[applied]
                path_follows[position] = undo_follows[applied]
            applied -= 1
        seg = r * stride
        if r == 0:
            inside, outside = 0, 1.0
            poly[seg] = 1.0
        else:
            up = seg - stride
            inside, outside = level_inside[r - 1], level_outside[r - 1]
            for k in range(inside + 1):
                poly[seg + k] = poly[up + k]
            split = np.int64(nodes[parent].feature)
            ratio = cover[n] / cover[parent]
            position = where[split]
            undo_position[r] = position
            if position < 0:
                path_feature[count] = split
                path_zero[count] = ratio
                path_follows[count] = follows
                where[split] = count
                count += 1
                if follows:
                    _multiply(poly, seg, inside, ratio)
                    inside += 1
                else:
                    outside *= ratio
            else:
                old = path_zero[position]
                undo_zero[r], undo_follows[r] = old, path_follows[position]
                path_zero[position] = old * ratio
                if path_follows[position]:
                    _divide(poly, seg, inside, old)
                    inside -= 1
                    if follows:
                        _multiply(poly, seg, inside, old * ratio)
                        inside += 1
                    else:
                        path_follows[position] = 0
                        outside *= old * ratio
                else:
                    outside *= ratio
            applied = r
        level_inside[r], level_outside[r] = inside, outside
        slot = leaf_slot[n]
        if slot >= 0:
            _leaf_shares(phi, column, leaf_value, slot, path_feature, path_zero, path_follows, poly, seg, count, inside, outside, weights)
            continue
        node = nodes[n]
        first = np.int64(node.child)
        if kind[n] == NUMERIC:  # inlined here: through step_general a numeric split costs ten times as much
            hot = first + np.int64(node.sign * X[row, node.feature] > node.threshold)
        else:
            hot = _hot_child(nodes, kind, cat_start, cat_nbits, cat_other, cat_words, X, row, n)
        cold = first + 1 if hot == first else first
        stack[0, top], stack[1, top], stack[2, top], stack[3, top] = cold, r + 1, n, 0
        stack[0, top + 1], stack[1, top + 1], stack[2, top + 1], stack[3, top + 1] = hot, r + 1, n, 1
        top += 2
    for i in range(count):  # where[] back to all -1 for the next tree
        where[path_feature[i]] = -1


@inlined
def _leaf_shares(phi, column, leaf_value, slot, path_feature, path_zero, path_follows, poly, seg, m, inside, outside, weights):  # type: ignore[no-untyped-def]
    """A leaf's share for each feature on its path (path_* [0, m), poly [seg, seg + inside]): with A the features the row follows and e_k the coefficients
    of prod over A of (1 + z t), a feature outside A gets -v * outside * sum_s w(s) e_(|A| - s), one inside A
    gets v * (1 - z_i) * outside * the same sum over A without i (e divided by 1 + z_i t)."""
    if m == 0:
        return
    away = 0.0
    if inside < m:
        total = 0.0
        for s in range(inside + 1):
            total += weights[m, s] * poly[seg + inside - s]
        away = -outside * total
    for i in range(m):
        if path_follows[i]:
            z = path_zero[i]
            q = 1.0
            total = weights[m, inside - 1]
            for k in range(1, inside):
                q = poly[seg + k] - z * q
                total += weights[m, inside - 1 - k] * q
            share = (1.0 - z) * outside * total
        else:
            share = away
        f = path_feature[i]
        for k in range(leaf_value.shape[1]):
            phi[column + k, f] += share * leaf_value[slot, k]


# --- Fast TreeSHAP v2 (Yang, 2021): K tabled per leaf at load (2 ** m entries); a row's A is a bit mask ---

MAX_FAST_PATH = 12
FAST_TABLE_BUDGET = 1 << 23  # float64 table entries a model may hold (64 MiB)


@inlined
def _walk_paths(t, nodes, leaf_slot, cover, tree_root, tree_end, max_depth, node_pos, leaf_m, fill, leaf_path, leaf_table,
                path_feature, path_zero, table, weights, poly):  # type: ignore[no-untyped-def]
    """Depth-first through tree t keeping the unique features of the path to each node; records each split's
    position in its path (node_pos) and each leaf's path length (leaf_m); with fill, each leaf's path and table.
    Returns (longest leaf path, the sum of 2 ** path length over leaves, whether the tree's nodes lie in its range)."""
    levels = max_depth + 2
    level_feature = np.empty((levels, levels), dtype=np.int64)
    level_zero = np.empty((levels, levels))
    level_count = np.zeros(levels, dtype=np.int64)
    stack = np.empty((3, levels + 1), dtype=np.int64)  # node, level, parent
    start, stop = np.int64(tree_root[t]), tree_end[t]
    stack[0, 0], stack[1, 0], stack[2, 0] = start, 0, -1
    top = 1
    longest, entries, visited, contained = 0, 0, 0, True
    while top > 0:
        top -= 1
        n, r, parent = stack[0, top], stack[1, top], stack[2, top]
        visited += 1
        if n < start or n >= stop:
            contained = False
            continue
        count = 0
        if r > 0:
            count = level_count[r - 1]
            for i in range(count):
                level_feature[r, i] = level_feature[r - 1, i]
                level_zero[r, i] = level_zero[r - 1, i]
            split = np.int64(nodes[parent].feature)
            ratio = cover[n] / cover[parent]
            position = count
            for i in range(count):
                if level_feature[r, i] == split:
                    position = i
            if position == count:
                level_feature[r, count] = split
                level_zero[r, count] = ratio
                count += 1
            else:
                level_zero[r, position] *= ratio
            node_pos[parent] = position
        level_count[r] = count
        if leaf_slot[n] >= 0:
            leaf_m[n] = count
            longest = max(longest, count)
            entries += 1 << min(count, 62)
            if fill and count > 0 and count <= MAX_FAST_PATH:
                for i in range(count):
                    path_feature[leaf_path[n] + i] = level_feature[r, i]
                    path_zero[leaf_path[n] + i] = level_zero[r, i]
                _fill_table(level_zero[r], count, table, leaf_table[n], weights, poly)
            continue
        first = np.int64(nodes[n].child)
        stack[0, top], stack[1, top], stack[2, top] = first + 1, r + 1, n
        stack[0, top + 1], stack[1, top + 1], stack[2, top + 1] = first, r + 1, n
        top += 2
    return longest, entries, contained and visited == stop - start


@inlined
def _fill_table(zero, m, table, offset, weights, poly):  # type: ignore[no-untyped-def]
    """table[offset + B] = K(B) for every subset B of the m path features (K of the full set is never read: 0)."""
    for w in range(m):
        weights[w] = math.exp(math.lgamma(w + 1) + math.lgamma(m - w) - math.lgamma(m + 1))
    poly[0, 0] = 1.0
    for k in range(1, m + 1):
        poly[0, k] = 0.0
    full = (1 << m) - 1
    table[offset] = weights[0]
    for B in range(1, full + 1):
        low = 0
        while not (B >> low) & 1:
            low += 1
        rest = B ^ (1 << low)
        z = zero[low]
        size = 0
        poly[B, 0] = poly[rest, 0]
        for k in range(1, m + 1):
            poly[B, k] = poly[rest, k] + z * poly[rest, k - 1]
        b = B
        while b:
            size += b & 1
            b >>= 1
        if B == full:
            table[offset + B] = 0.0
            continue
        total = 0.0
        for s in range(size + 1):
            total += weights[s] * poly[B, size - s]
        table[offset + B] = total


@kernel
def plan_fast_trees(nodes, leaf_slot, cover, tree_root, tree_end, max_depth, budget, tree_fast, node_pos, leaf_m, leaf_path, leaf_table):  # type: ignore[no-untyped-def]
    """Choose the trees that take the fast algorithm (tree_fast) and lay out their leaves' paths and tables
    (leaf_path, leaf_table offsets); returns (path entries, table entries, the most nodes in a fast tree)."""
    dummy_int = np.zeros(1, dtype=np.int64)
    dummy = np.zeros(1)
    scratch = np.zeros((1, 1))
    paths, tables, widest = 0, 0, 0
    for t in range(tree_root.shape[0]):
        longest, entries, contained = _walk_paths(t, nodes, leaf_slot, cover, tree_root, tree_end, max_depth, node_pos, leaf_m, False,
                                                  leaf_path, leaf_table, dummy_int, dummy, dummy, dummy, scratch)
        tree_fast[t] = contained and longest <= MAX_FAST_PATH and tables + entries <= budget
        if not tree_fast[t]:
            continue
        for n in range(tree_root[t], tree_end[t]):
            if leaf_slot[n] >= 0:
                leaf_path[n] = paths
                leaf_table[n] = tables
                paths += leaf_m[n]
                tables += 1 << leaf_m[n]
        widest = max(widest, tree_end[t] - tree_root[t])
    return paths, tables, widest


@kernel
def fill_fast_trees(nodes, leaf_slot, cover, tree_root, tree_end, max_depth, tree_fast, node_pos, leaf_m, leaf_path, leaf_table,
                    path_feature, path_zero, table):  # type: ignore[no-untyped-def]
    """Write the paths (feature, zero fraction) and K tables of the fast trees' leaves, as plan_fast_trees laid them out."""
    weights = np.empty(MAX_FAST_PATH + 1)
    poly = np.empty((1 << MAX_FAST_PATH, MAX_FAST_PATH + 1))
    for t in range(tree_root.shape[0]):
        if tree_fast[t]:
            _walk_paths(t, nodes, leaf_slot, cover, tree_root, tree_end, max_depth, node_pos, leaf_m, True, leaf_path, leaf_table,
                        path_feature, path_zero, table, weights, poly)


@inlined
def _explain_fast_tree(X, row, start, stop, column, nodes, kind, cat_start, cat_nbits, cat_other, cat_words, leaf_slot, leaf_value, phi,
                       node_pos, leaf_m, leaf_path, leaf_table, path_feature, path_zero, table, mask):  # type: ignore[no-untyped-def]
    """Add one fast tree's contributions for X[row] to phi: one pass over its nodes (parents first) sets each
    node's mask of path features the row follows, each leaf adds its share from its table."""
    mask[0] = -1
    for n in range(start, stop):
        a = mask[n - start]
        slot = leaf_slot[n]
        if slot < 0:
            node = nodes[n]
            first = np.int64(node.child)
            if kind[n] == NUMERIC:  # inlined here: through step_general a numeric split costs ten times as much
                hot = first + np.int64(node.sign * X[row, node.feature] > node.threshold)
            else:
                hot = _hot_child(nodes, kind, cat_start, cat_nbits, cat_other, cat_words, X, row, n)
            cleared = a & ~(np.int64(1) << node_pos[n])
            mask[first - start] = a if hot == first else cleared
            mask[first + 1 - start] = cleared if hot == first else a
            continue
        m = leaf_m[n]
        if m == 0:
            continue
        full = (np.int64(1) << m) - 1
        A = a & full
        p0 = leaf_path[n]
        t0 = leaf_table[n]
        # branch-free (selects, not jumps): whether the row follows a path feature is a coin flip to the branch predictor
        outside = 1.0
        for p in range(m):
            z = path_zero[p0 + p]
            outside *= z if ((A >> p) & 1) == 0 else 1.0
        for p in range(m):
            bit = (A >> p) & 1
            z = path_zero[p0 + p]
            share = outside * ((1.0 - z) if bit else -1.0) * table[t0 + (A ^ (bit << p))]
            f = path_feature[p0 + p]
            for k in range(leaf_value.shape[1]):
                phi[column + k, f] += share * leaf_value[slot, k]


@inlined
def _explain_rows(X, start, stop, nodes, kind, cat_start, cat_nbits, cat_other, cat_words, leaf_slot, leaf_value, cover,
                  tree_root, tree_end, tree_output, expected, divisor, max_depth, fast, out):  # type: ignore[no-untyped-def]
    tree_fast, node_pos, leaf_m, leaf_path, leaf_table, path_feature, path_zero, table, widest, weights = fast
    stride = max_depth + 2
    walk_feature = np.empty(stride, dtype=np.int64)  # the plain algorithm's path (fast trees read path_feature)
    walk_zero = np.empty(stride)
    walk_follows = np.empty(stride, dtype=np.int64)
    where = np.empty(X.shape[1], dtype=np.int64)
    for f in range(X.shape[1]):
        where[f] = -1
    poly = np.empty(stride * stride)
    level_inside = np.empty(stride, dtype=np.int64)
    level_outside = np.empty(stride)
    undo_position = np.empty(stride, dtype=np.int64)
    undo_zero = np.empty(stride)
    undo_follows = np.empty(stride, dtype=np.int64)
    stack = np.empty((4, stride + 1), dtype=np.int64)
    mask = np.empty(max(widest, 1), dtype=np.int64)
    n_features = out.shape[2] - 1
    for row in range(start, stop):
        for k in range(out.shape[1]):
            for f in range(n_features + 1):
                out[row, k, f] = 0.0
    # trees outer, rows inner: a tree's nodes and tables stay in cache while every row of the block reads them
    for t in range(tree_root.shape[0]):
        root, end, column = np.int64(tree_root[t]), tree_end[t], tree_output[t]
        for row in range(start, stop):
            phi = out[row]
            if tree_fast[t]:
                _explain_fast_tree(X, row, root, end, column, nodes, kind, cat_start, cat_nbits, cat_other,
                                   cat_words, leaf_slot, leaf_value, phi, node_pos, leaf_m, leaf_path, leaf_table, path_feature, path_zero, table, mask)
            else:
                _explain_tree(X, row, root, column, nodes, kind, cat_start, cat_nbits, cat_other, cat_words,
                              leaf_slot, leaf_value, cover, phi, walk_feature, walk_zero, walk_follows, where, poly, level_inside,
                              level_outside, undo_position, undo_zero, undo_follows, stack, weights)
    for row in range(start, stop):
        for k in range(out.shape[1]):
            for f in range(n_features):
                out[row, k, f] = out[row, k, f] / divisor
            out[row, k, n_features] = expected[k]


@kernel
def explain_trees(X, nodes, kind, cat_start, cat_nbits, cat_other, cat_words, leaf_slot, leaf_value, cover,
                  tree_root, tree_end, tree_output, expected, divisor, max_depth, fast, out):  # type: ignore[no-untyped-def]
    """out [n, n_raw, F + 1] = every row's TreeSHAP contributions, the expected value (`expected` [n_raw]) last.
    fast: (tree_fast, node_pos, leaf_m, leaf_path, leaf_table, path_feature, path_zero, table, widest, weights): the first
    nine as plan_fast_trees and fill_fast_trees made them, weights = shapley_weights(max_depth + 2) (made at load, not per call)."""
    n = X.shape[0]
    for first in range(0, n, ROW_BLOCK):
        _explain_rows(X, first, min(n, first + ROW_BLOCK), nodes, kind, cat_start, cat_nbits, cat_other, cat_words, leaf_slot, leaf_value, cover,
                      tree_root, tree_end, tree_output, expected, divisor, max_depth, fast, out)


@parallel_kernel
def explain_trees_parallel(X, nodes, kind, cat_start, cat_nbits, cat_other, cat_words, leaf_slot, leaf_value, cover,
                           tree_root, tree_end, tree_output, expected, divisor, max_depth, fast, out):  # type: ignore[no-untyped-def]
    """explain_trees with chunks of ROW_CHUNK rows spread over threads."""
    n = X.shape[0]
    for c in prange((n + ROW_CHUNK - 1) // ROW_CHUNK):
        first = c * ROW_CHUNK
        _explain_rows(X, first, min(n, first + ROW_CHUNK), nodes, kind, cat_start, cat_nbits, cat_other, cat_words, leaf_slot,
                      leaf_value, cover, tree_root, tree_end, tree_output, expected, divisor, max_depth, fast, out)


@kernel
def tree_expectations(nodes, leaf_slot, leaf_value, cover, tree_root, tree_output, base, divisor, expected):  # type: ignore[no-untyped-def]
    """expected [n_raw] = base + (the sum over trees of the cover-weighted mean of their leaves) / divisor;
    returns the deepest leaf's depth. Nodes of a tree follow its root, parents before children (packing.py's layout)."""
    n_nodes = nodes.shape[0]
    reach = np.zeros(n_nodes)
    depth = np.zeros(n_nodes, dtype=np.int64)
    owner = np.zeros(n_nodes, dtype=np.int64)
    for k in range(expected.shape[0]):  # a loop, not `expected[:] = 0.0`: slice assignment compiles numba's error formatting
        expected[k] = 0.0
    for t in range(tree_root.shape[0]):
        reach[tree_root[t]] = 1.0
        owner[tree_root[t]] = t
    deepest = 0
    for n in range(n_nodes):
        slot = leaf_slot[n]
        if slot >= 0:
            column = tree_output[owner[n]]
            for k in range(leaf_value.shape[1]):
                expected[column + k] += reach[n] * leaf_value[slot, k]
            deepest = max(deepest, depth[n])
            continue
        first = np.int64(nodes[n].child)
        for c in range(first, first + 2):
            reach[c] = reach[n] * (cover[c] / cover[n])
            depth[c] = depth[n] + 1
            owner[c] = owner[n]
    for k in range(expected.shape[0]):
        expected[k] = base[k] + expected[k] / divisor
    return deepest
