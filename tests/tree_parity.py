"""What the tree tests share: a TreeEnsemble's outputs as tensorwire serves them, and the comparison with a library.

`served_outputs` runs an ensemble through the same path a server does (packed for the
kernels, scored by the family's scorer); the converter tests (test_trees_*.py) compare
it with each library's own predict.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tensorwire.server.families.trees.ensemble import TreeEnsemble
from tensorwire.server.families.trees.scorer import TreeEnsembleScorer, exported_ensemble
from tensorwire.server.repository.model_format import INPUT_NAME, ON_REQUEST_OUTPUTS, Manifest, TensorSpec, array_spec

# DESIGN.md's tolerances, by the model's input dtype
TOLERANCES = {np.dtype(np.float32): (1e-5, 1e-6), np.dtype(np.float64): (1e-9, 1e-12)}


def served_outputs(ensemble: TreeEnsemble, X: np.ndarray, dtype: Any = np.float64) -> dict[str, np.ndarray]:
    """Every output of `ensemble` for rows X (cast to dtype), scored as the server scores them."""
    datatype = "FP32" if np.dtype(dtype) == np.float32 else "FP64"
    exported = exported_ensemble(ensemble, ensemble, None, datatype, "test")
    manifest = Manifest(
        kind=exported.kind,
        estimator=ensemble.estimator,
        inputs=[TensorSpec(INPUT_NAME, datatype, [-1, exported.n_features])],
        outputs=exported.outputs,
        arrays={name: array_spec(a) for name, a in exported.arrays.items()},
        params=exported.params,
    )
    arrays = {name: _read_only(a) for name, a in exported.arrays.items()}
    scorer = TreeEnsembleScorer(manifest, arrays)
    rows = _read_only(np.ascontiguousarray(X, dtype=dtype))
    names = [o.name for o in manifest.outputs if o.name not in ON_REQUEST_OUTPUTS]
    return dict(zip(names, scorer.score(rows, names), strict=True))


def _read_only(a: np.ndarray) -> np.ndarray:
    a = np.array(a)
    a.setflags(write=False)
    return a


def assert_scores_close(actual: np.ndarray, expected: Any, dtype: Any, scale: float = 1.0) -> None:
    """Scores within the dtype's tolerance; `scale` widens it where the library itself computes in float32 (XGBoost)."""
    rtol, atol = TOLERANCES[np.dtype(dtype)]
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64), rtol=rtol * scale, atol=atol * scale)


def assert_labels_equal(actual: np.ndarray, expected: Any) -> None:
    """Labels identical (served string labels are utf-8 bytes; they are compared as text)."""
    as_text = [v.decode() if isinstance(v, bytes) else v for v in np.asarray(actual).tolist()]
    assert as_text == np.asarray(expected).tolist()


def adversarial_rows(ensemble: TreeEnsemble, n_rows: int, seed: int, nan: bool = True, inf: bool = False) -> np.ndarray:
    """Rows whose values sit at, and one float step either side of, the ensemble's thresholds (float64 and float32 steps),
    with NaN (and ±inf) sprinkled in when asked."""
    rng = np.random.default_rng(seed)
    internal = ensemble.left >= 0
    if ensemble.categorical is not None:
        internal &= ~ensemble.categorical
    internal &= np.isfinite(ensemble.threshold)  # a split that sends only NaN one way may sit at ±inf
    features, thresholds = ensemble.feature[internal], ensemble.threshold[internal]
    X = rng.normal(size=(n_rows, ensemble.n_features))
    if thresholds.size:
        for row in range(n_rows):
            picks = rng.integers(0, thresholds.size, size=ensemble.n_features)
            t = thresholds[picks]
            t32 = t.astype(np.float32).astype(np.float64)
            variants = np.stack([t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf), t32,
                                 np.nextafter(t.astype(np.float32), np.float32(np.inf)).astype(np.float64),
                                 np.nextafter(t.astype(np.float32), np.float32(-np.inf)).astype(np.float64)])
            chosen = variants[rng.integers(0, variants.shape[0], size=ensemble.n_features), np.arange(ensemble.n_features)]
            cols = features[picks]
            X[row, cols] = chosen
    special = rng.random(X.shape)
    if nan:
        X[special < 0.05] = np.nan
    if inf:
        X[(special >= 0.05) & (special < 0.08)] = np.inf
        X[(special >= 0.08) & (special < 0.10)] = -np.inf
    return X
