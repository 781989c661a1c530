"""Nearest neighbours (kind "neighbors": KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors), exact brute force.

Arrays (float64; n = the kernel's input width), besides the input side's (modeling/scorer_support.py, `Inputs`):
    train [n_train, n]      the fitted training set (_fit_X), stored once
    y [n_train, n_out]      regressor targets, or class codes (column 0) for a classifier; absent for NearestNeighbors
Params (JSON): stages, task ("classifier" | "regressor" | "neighbors"), k, metric, p, weights ("uniform" | "distance"),
classes and label_datatype (classifiers).
Outputs: distances [-1, k] and indices INT64 [-1, k] (all tasks); predict and predict_proba (classifier); predict (regressor).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors

from tensorwire.kernels import neighbors
from tensorwire.server.modeling.export_support import class_labels
from tensorwire.server.modeling.pipelines import Preprocessing, exported, planned
from tensorwire.server.modeling.registry import Exported, describe, exports, register
from tensorwire.server.modeling.scorer_support import (
    FLOAT_DTYPES,
    Inputs,
    check_outputs,
    check_request,
    float_array,
    invalid,
    is_parallel,
    label_array,
    one_row,
)
from tensorwire.server.repository.model_format import Manifest, TensorSpec


def neighbors_outputs(datatype: str, task: str, k: int, label_datatype: str | None, n_classes: int, n_out: int) -> list[TensorSpec]:
    """The outputs a neighbours model declares."""
    outputs = [TensorSpec("distances", datatype, [-1, k]), TensorSpec("indices", "INT64", [-1, k])]
    if task == "classifier":
        outputs += [TensorSpec("predict", str(label_datatype), [-1]), TensorSpec("predict_proba", datatype, [-1, n_classes])]
    elif task == "regressor":
        outputs.append(TensorSpec("predict", datatype, [-1] if n_out == 1 else [-1, n_out]))
    return outputs


def neighbor_weights(distances: np.ndarray, weights: str) -> np.ndarray:
    """scikit-learn's weights per neighbour: 1 (uniform), or 1 / d, with rows holding a zero distance weighting those alone."""
    if weights == "uniform":
        return np.ones_like(distances)
    with np.errstate(divide="ignore"):
        w = 1.0 / distances
    zero = np.isinf(w).any(axis=1)
    w[zero] = np.isinf(w[zero])
    return w


class NeighborsScorer:
    """The k nearest stored rows by exact brute force, and the vote or average over them."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray]) -> None:
        self.manifest = manifest
        self.dtype = FLOAT_DTYPES[manifest.input_datatype]
        self.inputs = Inputs(manifest, arrays)
        params = manifest.params
        self.task, k, self.weights = params.get("task"), params.get("k"), params.get("weights")
        metric, self.p = params.get("metric"), float(params.get("p", 2.0))
        if self.task not in ("classifier", "regressor", "neighbors"):
            raise invalid(manifest, f"task {self.task!r} is not classifier, regressor or neighbors")
        if metric not in neighbors.METRICS:
            raise invalid(manifest, f"metric {metric!r} is not one of {sorted(neighbors.METRICS)}")
        if self.weights not in ("uniform", "distance"):
            raise invalid(manifest, f"weights {self.weights!r} is not uniform or distance")
        self.metric = neighbors.METRICS[metric]
        self.train = float_array(manifest, arrays, "train", (-1, self.inputs.width))
        if not isinstance(k, int) or not 1 <= k <= self.train.shape[0]:
            raise invalid(manifest, f"k {k!r} is not between 1 and the {self.train.shape[0]} stored rows")
        self.k: int = k
        label_datatype, n_classes, n_out = None, 0, 1
        if self.task != "neighbors":
            self.y = float_array(manifest, arrays, "y", (self.train.shape[0], -1))
            n_out = self.y.shape[1]
        if self.task == "classifier":
            classes, label_datatype = params.get("classes"), params.get("label_datatype")
            if not isinstance(classes, list) or not classes:
                raise invalid(manifest, f"classes must list the labels, not {classes!r}")
            self.labels = label_array(manifest, classes, str(label_datatype))
            n_classes = len(classes)
            self.codes = self.y[:, 0].astype(np.int64)
            if self.codes.size and (self.codes.min() < 0 or self.codes.max() >= n_classes or (self.codes != self.y[:, 0]).any()):
                raise invalid(manifest, f"array 'y' must hold class codes 0..{n_classes - 1}")
        check_outputs(manifest, neighbors_outputs(manifest.input_datatype, str(self.task), self.k, label_datatype, n_classes, n_out))
        self.output_names = frozenset(o.name for o in manifest.outputs)
        self._score(one_row(manifest), ("distances",), parallel=True)  # compile the parallel variant at load too

    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        check_request(self.manifest, self.output_names, outputs, X)
        return self._score(X, outputs, is_parallel(X))

    def _score(self, X: np.ndarray, outputs: Sequence[str], parallel: bool) -> list[np.ndarray]:
        Xk = self.inputs(X, parallel)
        distances = np.empty((X.shape[0], self.k))
        indices = np.empty((X.shape[0], self.k), dtype=np.int64)
        kernel = neighbors.kneighbors_parallel if parallel else neighbors.kneighbors
        kernel(Xk, self.inputs.shift, self.inputs.scale, self.inputs.offset, self.train, self.metric, self.p, distances, indices)
        results: dict[str, np.ndarray] = {"distances": distances.astype(self.dtype, copy=False), "indices": indices}
        if "predict" in outputs or "predict_proba" in outputs:
            w = neighbor_weights(distances, str(self.weights))
            if self.task == "classifier":
                proba = np.zeros((X.shape[0], self.labels.shape[0]))
                rows = np.repeat(np.arange(X.shape[0]), self.k)
                np.add.at(proba, (rows, self.codes[indices].ravel()), w.ravel())
                proba /= proba.sum(axis=1, keepdims=True)
                results["predict"] = self.labels[np.argmax(proba, axis=1)]
                results["predict_proba"] = proba.astype(self.dtype, copy=False)
            else:
                y = self.y[indices]  # [rows, k, n_out]
                pred = np.einsum("rk,rko->ro", w, y) / w.sum(axis=1)[:, None]
                results["predict"] = (pred[:, 0] if pred.shape[1] == 1 else pred).astype(self.dtype, copy=False)
        return [results[name] for name in outputs]


@register("neighbors")
def neighbors_scorer(manifest: Manifest, arrays: dict[str, np.ndarray]) -> NeighborsScorer:
    return NeighborsScorer(manifest, arrays)


def _metric(estimator: Any, where: str) -> tuple[str, float]:
    """(metric name, p) for the kernels, or ValueError for metrics tensorwire does not serve."""
    metric = estimator.effective_metric_
    params = dict(estimator.effective_metric_params_ or {})
    p = float(params.pop("p", estimator.p if estimator.p is not None else 2))
    if params.get("w", 0) is None:
        del params["w"]  # scikit-learn's unweighted minkowski
    if params or not isinstance(metric, str):
        raise ValueError(f"tensorwire cannot export {where}: metric {metric!r} with parameters {params} (serves {sorted(neighbors.METRICS)})")
    if metric == "minkowski":
        metric = {1.0: "manhattan", 2.0: "euclidean"}.get(p, "minkowski")
    aliases = {"l2": "euclidean", "l1": "manhattan", "cityblock": "manhattan", "infinity": "chebyshev", "p": "minkowski"}
    metric = aliases.get(metric, metric)
    if metric not in neighbors.METRICS:
        raise ValueError(f"tensorwire cannot export {where}: metric {metric!r} (serves {sorted(neighbors.METRICS)})")
    if metric == "minkowski" and not (p >= 1 and np.isfinite(p)):
        raise ValueError(f"tensorwire cannot export {where}: minkowski p={p}")
    return metric, p


@exports(KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors, kind="neighbors")
def _neighbors(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    where = describe(estimator)
    weights = getattr(estimator, "weights", "uniform")
    if weights not in ("uniform", "distance"):
        raise ValueError(f"tensorwire cannot export {where}: weights {weights!r} (serves uniform and distance)")
    metric, p = _metric(estimator, where)
    train = np.asarray(estimator._fit_X, dtype=np.float64)
    result = planned(estimator, prep, train.shape[1])
    k = int(estimator.n_neighbors)
    arrays: dict[str, np.ndarray] = {"train": train}
    params: dict[str, Any] = {"k": k, "metric": metric, "p": p, "weights": weights}
    label_datatype, n_classes, n_out = None, 0, 1
    if isinstance(estimator, KNeighborsClassifier):
        if getattr(estimator, "outputs_2d_", False):
            raise ValueError(f"tensorwire cannot export {where}: multi-output classification")
        label_datatype, labels = class_labels(estimator.classes_, where)
        n_classes = len(labels)
        arrays["y"] = np.asarray(estimator._y, dtype=np.float64).reshape(-1, 1)
        params.update(task="classifier", classes=labels, label_datatype=label_datatype)
    elif isinstance(estimator, KNeighborsRegressor):
        y = np.asarray(estimator._y, dtype=np.float64)
        n_out = 1 if y.ndim == 1 else y.shape[1]
        arrays["y"] = y.reshape(y.shape[0], -1)
        params["task"] = "regressor"
    else:
        params["task"] = "neighbors"
    outputs = neighbors_outputs(datatype, params["task"], k, label_datatype, n_classes, n_out)
    return exported("neighbors", result, outputs, arrays, params)
