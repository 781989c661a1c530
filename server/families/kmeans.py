"""K-means (kind "kmeans": KMeans, MiniBatchKMeans), its exporter and its scorer: nearest-centre labels and distances to every centre.

Arrays (float64; n = the kernel's input width, k = n_clusters), besides the
input side's (modeling/scorer_support.py, `Inputs`: shift, scale, offset, stages):
    centers_t [n, k]        cluster_centers_.T
    center_sq_norms [k]     |c|^2 per centre
Params (JSON): stages (see modeling/scorer_support.py).
Outputs: predict INT64 [-1] (the nearest centre's index), transform [-1, k]
(Euclidean distances, in the input's float datatype). `predict` alone never
computes the distances.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tensorwire.kernels import kmeans
from tensorwire.server.modeling.pipelines import Preprocessing, exported, planned
from tensorwire.server.modeling.registry import Exported, exports, register
from tensorwire.server.modeling.scorer_support import FLOAT_DTYPES, Inputs, check_outputs, check_request, compiles_parallel, float_array, is_parallel, one_row
from tensorwire.server.repository.model_format import Manifest, TensorSpec


def kmeans_outputs(datatype: str, n_clusters: int) -> list[TensorSpec]:
    """The outputs a k-means model declares."""
    return [TensorSpec("predict", "INT64", [-1]), TensorSpec("transform", datatype, [-1, n_clusters])]


class KMeansScorer:
    """predict = argmin_c |x' - c|, transform = |x' - c| for every centre c."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray]) -> None:
        self.manifest = manifest
        self.dtype = FLOAT_DTYPES[manifest.input_datatype]
        self.inputs = Inputs(manifest, arrays)
        self.centers_t = float_array(manifest, arrays, "centers_t", (self.inputs.width, -1))
        self.n_clusters = self.centers_t.shape[1]
        self.center_sq_norms = float_array(manifest, arrays, "center_sq_norms", (self.n_clusters,))
        check_outputs(manifest, kmeans_outputs(manifest.input_datatype, self.n_clusters))
        self.output_names = frozenset(o.name for o in manifest.outputs)
        if compiles_parallel():  # the parallel variants too, where a batch can take them
            self._score(one_row(manifest), ("predict", "transform"), parallel=True)

    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        check_request(self.manifest, self.output_names, outputs, X)
        return self._score(X, outputs, is_parallel(X))

    def _score(self, X: np.ndarray, outputs: Sequence[str], parallel: bool) -> list[np.ndarray]:
        Xk = self.inputs(X, parallel)
        args = (Xk, self.inputs.shift, self.inputs.scale, self.inputs.offset, self.centers_t, self.center_sq_norms)
        results: dict[str, np.ndarray] = {}
        if "predict" in outputs:
            labels = np.empty(X.shape[0], dtype=np.int64)
            (kmeans.kmeans_predict_parallel if parallel else kmeans.kmeans_predict)(*args, labels)
            results["predict"] = labels
        if "transform" in outputs:
            distances = np.empty((X.shape[0], self.n_clusters))
            (kmeans.kmeans_transform_parallel if parallel else kmeans.kmeans_transform)(*args, distances)
            results["transform"] = distances.astype(self.dtype, copy=False)
        return [results[name] for name in outputs]


@register("kmeans")
def kmeans_scorer(manifest: Manifest, arrays: dict[str, np.ndarray]) -> KMeansScorer:
    return KMeansScorer(manifest, arrays)


@exports("sklearn.cluster.KMeans", "sklearn.cluster.MiniBatchKMeans", kind="kmeans")
def _kmeans(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    centers_t, sq_norms = kmeans.kmeans_params(estimator.cluster_centers_)
    result = planned(estimator, prep, centers_t.shape[0])
    outputs = kmeans_outputs(datatype, centers_t.shape[1])
    return exported("kmeans", result, outputs, {"centers_t": centers_t, "center_sq_norms": sq_norms}, {})
