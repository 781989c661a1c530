"""DBSCAN assignment (kind "dbscan"): a new row takes the label of its nearest core sample if that is within eps, else -1.

scikit-learn's DBSCAN has no predict; this is the rule users apply to it: the nearest
core sample (exact brute force in the model's metric, ties resolved as scikit-learn's
NearestNeighbors(n_neighbors=1) resolves them) and its distance <= eps.

Arrays (float64; n = the kernel's input width), besides the input side's (modeling/scorer_support.py, `Inputs`):
    core [n_core, n]        the core samples (components_), possibly none
    core_labels [n_core]    INT64, their cluster labels (labels_[core_sample_indices_])
Params (JSON): stages, eps, metric, p.
Outputs: predict INT64 [-1] (a cluster label, or -1 for noise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tensorwire.kernels import neighbors
from tensorwire.server.modeling.export_support import dense
from tensorwire.server.modeling.pipelines import Preprocessing, exported, planned
from tensorwire.server.modeling.registry import Exported, describe, exports, register
from tensorwire.server.modeling.scorer_support import Inputs, check_outputs, check_request, compiles_parallel, float_array, int_array, invalid, is_parallel, one_row
from tensorwire.server.repository.model_format import Manifest, TensorSpec

NOISE = -1


def dbscan_outputs() -> list[TensorSpec]:
    """The outputs a DBSCAN model declares."""
    return [TensorSpec("predict", "INT64", [-1])]


class DBSCANScorer:
    """predict = the label of the nearest core sample when it lies within eps (<=), else -1."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray]) -> None:
        self.manifest = manifest
        self.inputs = Inputs(manifest, arrays)
        params = manifest.params
        eps, metric, self.p = params.get("eps"), params.get("metric"), float(params.get("p", 2.0))
        if metric not in neighbors.METRICS:
            raise invalid(manifest, f"metric {metric!r} is not one of {sorted(neighbors.METRICS)}")
        if not isinstance(eps, (int, float)) or not eps > 0:
            raise invalid(manifest, f"eps {eps!r} is not a number > 0")
        self.eps = float(eps)
        self.metric = neighbors.METRICS[metric]
        self.core = float_array(manifest, arrays, "core", (-1, self.inputs.width))
        self.core_labels = int_array(manifest, arrays, "core_labels", (self.core.shape[0],))
        self.norms = np.empty(self.core.shape[0] if self.metric == neighbors.COSINE else 0)
        neighbors.row_norms(self.core[: self.norms.shape[0]], self.norms)
        check_outputs(manifest, dbscan_outputs())
        self.output_names = frozenset(o.name for o in manifest.outputs)
        for parallel in (False, True) if compiles_parallel() else (False,):  # compile at load, where a batch can take them
            self._predict(one_row(manifest), parallel)

    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        check_request(self.manifest, self.output_names, outputs, X)
        return [self._predict(X, is_parallel(X)) for _ in outputs]

    def _predict(self, X: np.ndarray, parallel: bool) -> np.ndarray:
        if self.core.shape[0] == 0:  # no core sample: every row is noise
            return np.full(X.shape[0], NOISE, dtype=np.int64)
        Xk = self.inputs(X, parallel)
        distances = np.empty((X.shape[0], 1))
        indices = np.empty((X.shape[0], 1), dtype=np.int64)
        pre = (self.inputs.shift, self.inputs.scale, self.inputs.offset)
        if self.metric == neighbors.COSINE:
            neighbors.cosine_kneighbors(Xk, *pre, self.core, self.norms, distances, indices, parallel)
        else:
            kernel = neighbors.kneighbors_parallel if parallel else neighbors.kneighbors
            kernel(Xk, *pre, self.core, self.metric, self.p, distances, indices)
        return np.where(distances[:, 0] <= self.eps, self.core_labels[indices[:, 0]], NOISE)


@register("dbscan")
def dbscan_scorer(manifest: Manifest, arrays: dict[str, np.ndarray]) -> DBSCANScorer:
    return DBSCANScorer(manifest, arrays)


def _metric(estimator: Any, where: str) -> tuple[str, float]:
    """(metric name, p) for the kernels, or ValueError for metrics tensorwire does not serve."""
    metric, params = estimator.metric, dict(estimator.metric_params or {})
    p = float(params.pop("p", estimator.p if estimator.p is not None else 2))
    return neighbors.served_metric_or_refusal(metric, params, p, where)


@exports("sklearn.cluster.DBSCAN", kind="dbscan")
def _dbscan(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    where = describe(estimator)
    metric, p = _metric(estimator, where)
    core = dense(estimator.components_)
    n_features = core.shape[1] if core.ndim == 2 and core.shape[0] else int(estimator.n_features_in_)
    core = core.reshape(-1, n_features)
    core_labels = np.asarray(estimator.labels_, dtype=np.int64)[np.asarray(estimator.core_sample_indices_, dtype=np.intp)]
    result = planned(estimator, prep, n_features)
    params = {"eps": float(estimator.eps), "metric": metric, "p": p}
    return exported("dbscan", result, dbscan_outputs(), {"core": core, "core_labels": core_labels}, params)
