"""The tree kernels against the plain-numpy reference (TreeEnsemble.raw_reference) on random ensembles.

Random trees of random shapes (lone leaves, stumps, deep chains), with every kind of split the
kernels know (numeric with NaN either way, thresholds at ±inf, LightGBM's zero-as-missing,
categorical splits under each library's rule), vector leaves adding to several outputs, on
random rows salted with NaN, ±inf, zeros and values at the thresholds: every batch-size path
(one row through groups of trees, row blocks with a remainder, the parallel variant) must give
the reference's raw scores exactly, since both add the same leaves in the same order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tensorwire.kernels import config
from tensorwire.server.families.trees.ensemble import ZERO_THRESHOLD, TreeEnsemble

from .tree_parity import served_outputs

N_FEATURES = 5


def random_ensemble(seed: int, *, special: bool, precision: str, comparison: str, cat_rule: str = "truncate", width: int = 1) -> TreeEnsemble:
    rng = np.random.default_rng(seed)
    n_raw = 3
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    missing_left: list[bool] = []
    zero_missing: list[bool] = []
    categorical: list[bool] = []
    cat_words: list[np.ndarray] = []
    cat_start: list[int] = []
    cat_nbits: list[int] = []
    cat_other: list[bool] = []
    roots = []

    def grow(depth: int) -> int:
        node = len(feature)
        feature.append(0), threshold.append(0.0), left.append(-1), right.append(-1), missing_left.append(False)
        zero_missing.append(False), categorical.append(False), cat_start.append(0), cat_nbits.append(0), cat_other.append(False)
        if depth <= 0 or rng.random() < 0.15:
            return node
        feature[node] = int(rng.integers(N_FEATURES))
        missing_left[node] = bool(rng.random() < 0.5)
        kind = rng.random()
        if special and kind < 0.2:
            categorical[node] = True
            words = rng.integers(0, 2**32, size=int(rng.integers(1, 3)), dtype=np.uint64).astype(np.uint32)
            cat_start[node] = sum(w.shape[0] for w in cat_words)
            cat_nbits[node] = 32 * words.shape[0] - int(rng.integers(0, 5))
            cat_words.append(words)
            cat_other[node] = bool(rng.random() < 0.5)
        else:
            threshold[node] = float(rng.choice([rng.normal(), 0.0, np.inf, -np.inf, ZERO_THRESHOLD], p=[0.8, 0.05, 0.05, 0.05, 0.05]))
            zero_missing[node] = special and bool(rng.random() < 0.2)
        # lopsided trees: one side often deeper than the other, as leaf-wise growth makes them
        left[node] = grow(depth - 1 - int(rng.integers(0, 3)))
        right[node] = grow(depth - 1)
        return node

    for _ in range(int(rng.integers(1, 40))):
        roots.append(grow(int(rng.integers(0, 12))))
    n = len(feature)
    return TreeEnsemble(
        estimator="random",
        n_features=N_FEATURES,
        feature=np.array(feature, dtype=np.int64),
        threshold=np.array(threshold),
        left=np.array(left, dtype=np.int64),
        right=np.array(right, dtype=np.int64),
        missing_left=np.array(missing_left),
        value=rng.normal(size=(n, width)),
        roots=np.array(roots, dtype=np.int64),
        tree_output=rng.integers(0, n_raw - width + 1, size=len(roots)),
        base=rng.normal(size=n_raw),
        divisor=float(rng.choice([1.0, 3.0])),
        comparison=comparison,
        precision=precision,
        zero_missing=np.array(zero_missing) if special else None,
        categorical=np.array(categorical) if special else None,
        cat_start=np.array(cat_start, dtype=np.int64) if special else None,
        cat_nbits=np.array(cat_nbits, dtype=np.int64) if special else None,
        cat_words=(np.concatenate(cat_words) if cat_words else np.zeros(0, dtype=np.uint32)) if special else None,
        cat_other_left=np.array(cat_other) if special else None,
        cat_rule=cat_rule,
    )


def random_rows(ensemble: TreeEnsemble, n_rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, N_FEATURES)) * rng.choice([1.0, 40.0], size=(n_rows, N_FEATURES))
    finite = np.isfinite(ensemble.threshold) & (ensemble.left >= 0)
    if finite.any():
        picks = rng.integers(0, int(finite.sum()), size=X.shape)
        at = ensemble.threshold[finite][picks]
        step = rng.integers(-1, 2, size=X.shape)
        near = np.where(step > 0, np.nextafter(at, np.inf), np.where(step < 0, np.nextafter(at, -np.inf), at))
        X = np.where(rng.random(X.shape) < 0.3, near, X)
    special = rng.random(X.shape)
    X[special < 0.06] = np.nan
    X[(special >= 0.06) & (special < 0.08)] = np.inf
    X[(special >= 0.08) & (special < 0.10)] = -np.inf
    X[(special >= 0.10) & (special < 0.12)] = rng.choice([0.0, -0.0, 1e-36, -1e-36, 2.5, -0.5, 3.0, 1e9])
    return X


def as_raw_model(ensemble: TreeEnsemble) -> TreeEnsemble:
    """The ensemble as a regressor with the identity link: its predict output is the raw score."""
    ensemble.task, ensemble.link, ensemble.accepts_nan, ensemble.accepts_inf = "regression", "identity", True, True
    return ensemble


CASES: list[dict[str, Any]] = [
    {"special": False, "precision": "float32", "comparison": "le"},
    {"special": False, "precision": "float32", "comparison": "lt"},
    {"special": False, "precision": "float64", "comparison": "le"},
    {"special": False, "precision": "float64", "comparison": "le", "width": 3},
    {"special": True, "precision": "float64", "comparison": "le", "cat_rule": "truncate"},
    {"special": True, "precision": "float64", "comparison": "le", "cat_rule": "exact"},
    {"special": True, "precision": "float32", "comparison": "lt", "cat_rule": "nonnegative", "width": 2},
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(5))
def test_kernels_add_the_reference_leaves(case: dict[str, Any], dtype: Any, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    ensemble = as_raw_model(random_ensemble(seed, **case))
    ensemble.validate()
    X = random_rows(ensemble, 150, seed).astype(dtype)
    expected = ensemble.raw_reference(X)
    for rows in (1, 7, 16, 17, 64, 150):  # one row at a time, blocks of whole lanes, blocks with a remainder
        np.testing.assert_array_equal(served_outputs(ensemble, X[:rows], dtype)["predict"], expected[:rows].astype(dtype))
    monkeypatch.setattr(config, "PARALLEL_MIN_ROWS", 1)
    monkeypatch.setattr(config, "THREAD_BUDGET", 2)
    np.testing.assert_array_equal(served_outputs(ensemble, X, dtype)["predict"], expected.astype(dtype))
