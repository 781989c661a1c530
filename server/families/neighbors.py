"""Nearest neighbours, exact brute force: kind "neighbors" (KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors)
and kind "radius_neighbors" (RadiusNeighborsClassifier, RadiusNeighborsRegressor).

Arrays (float64; n = the kernel's input width), besides the input side's (modeling/scorer_support.py, `Inputs`):
    train [n_train, n]      the fitted training set (_fit_X), stored once
    y [n_train, n_out]      regressor targets, or class codes (column 0) for a classifier; absent for NearestNeighbors
Params (JSON): stages, task ("classifier" | "regressor" | "neighbors"), metric, p, weights ("uniform" | "distance"),
classes and label_datatype (classifiers); k, argkmin_threads and argkmin_chunk ("neighbors": the OpenMP threads and
chunk rows of the exporting scikit-learn's ArgKmin, which decide the order of exact ties, see kernels/neighbors.py),
vote_one_heap (classifiers whose predict_proba scikit-learn computes with ArgKminClassMode, always one heap per row); radius and outlier_label ("radius_neighbors" classifiers:
the label of a row with no training row within the radius, or null: such a row is refused, as scikit-learn refuses it).
Outputs, "neighbors": distances [-1, k] and indices INT64 [-1, k] (all tasks); predict and predict_proba (classifier);
predict (regressor). "radius_neighbors": predict and predict_proba (classifier); predict (regressor: NaN for a row
with no training row within the radius, as scikit-learn predicts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tensorwire.kernels import neighbors, neighbors_blocked
from tensorwire.server.errors import InvalidRequestError
from tensorwire.server.modeling.export_support import class_labels
from tensorwire.server.modeling.pipelines import Preprocessing, exported, planned
from tensorwire.server.modeling.registry import Exported, describe, exports, register
from tensorwire.server.modeling.scorer_support import (
    FLOAT_DTYPES,
    Inputs,
    check_outputs,
    check_request,
    compiles_parallel,
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


def train_norms(train: np.ndarray, metric: int) -> np.ndarray:
    """The training rows' l2 norms for the cosine metric (an empty array for the others)."""
    norms = np.empty(train.shape[0] if metric == neighbors.COSINE else 0)
    neighbors.row_norms(train[: norms.shape[0]], norms)
    norms.setflags(write=False)
    return norms


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
        self.norms = train_norms(self.train, self.metric)
        # euclidean batches screen the training rows with BLAS and a proven bound (kernels/neighbors_blocked.py): same answers
        self.sq_norms = neighbors_blocked.train_squared_norms(self.train) if self.metric == neighbors.METRICS["euclidean"] else None
        if not isinstance(k, int) or not 1 <= k <= self.train.shape[0]:
            raise invalid(manifest, f"k {k!r} is not between 1 and the {self.train.shape[0]} stored rows")
        self.k: int = k
        # Models exported before these were recorded tie as a one-thread scikit-learn with its default chunks.
        self.argkmin_threads = int(params.get("argkmin_threads", 1))
        self.argkmin_chunk = int(params.get("argkmin_chunk", neighbors.ARGKMIN_CHUNK))
        if self.argkmin_threads < 1 or self.argkmin_chunk < 1:
            raise invalid(manifest, f"argkmin_threads {self.argkmin_threads} and argkmin_chunk {self.argkmin_chunk} must be >= 1")
        self.vote_one_heap = bool(params.get("vote_one_heap", False))
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
        for parallel in (False, True) if compiles_parallel() else (False,):  # compile at load, where a batch can take them
            self._score(one_row(manifest), ("distances",), parallel)
            if self.sq_norms is not None:  # whichever size of batch takes it
                row = self.inputs(one_row(manifest), parallel)
                pre = (self.inputs.shift, self.inputs.scale, self.inputs.offset)
                neighbors_blocked.kneighbors_blocked(row, *pre, self.train, self.sq_norms, np.empty((1, k)), np.empty((1, k), dtype=np.int64), parallel)

    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        check_request(self.manifest, self.output_names, outputs, X)
        return self._score(X, outputs, is_parallel(X))

    def _kneighbors(self, Xk: np.ndarray, ranges: np.ndarray, parallel: bool) -> tuple[np.ndarray, np.ndarray]:
        """(distances, indices) of the k nearest training rows of the preprocessed rows Xk, ties as ArgKmin over `ranges`."""
        distances = np.empty((Xk.shape[0], self.k))
        indices = np.empty((Xk.shape[0], self.k), dtype=np.int64)
        pre = (self.inputs.shift, self.inputs.scale, self.inputs.offset)
        if self.metric == neighbors.COSINE:
            neighbors.cosine_kneighbors(Xk, *pre, self.train, self.norms, distances, indices, parallel)
        elif self.sq_norms is not None and neighbors_blocked.prefers_blocked(Xk.shape[0], *self.train.shape):
            neighbors_blocked.kneighbors_blocked(Xk, *pre, self.train, self.sq_norms, distances, indices, parallel, ranges)
        else:
            kernel = neighbors.argkmin_parallel if parallel else neighbors.argkmin
            kernel(Xk, *pre, self.train, self.metric, self.p, ranges, distances, indices)
        return distances, indices

    def _score(self, X: np.ndarray, outputs: Sequence[str], parallel: bool) -> list[np.ndarray]:
        Xk = self.inputs(X, parallel)
        ranges = neighbors.argkmin_ranges(X.shape[0], self.train.shape[0], self.argkmin_threads, self.argkmin_chunk)
        distances, indices = self._kneighbors(Xk, ranges, parallel)
        results: dict[str, np.ndarray] = {"distances": distances.astype(self.dtype, copy=False), "indices": indices}
        if "predict" in outputs or "predict_proba" in outputs:
            if self.vote_one_heap and ranges.shape[0] > 0:
                # scikit-learn votes through ArgKminClassMode with parallel_on_X: one heap per row, whose members can
                # differ from kneighbors' at a tie on the k-th distance.
                distances, indices = self._kneighbors(Xk, ranges[:0], parallel)
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


def radius_outputs(datatype: str, task: str, label_datatype: str | None, n_classes: int, n_out: int) -> list[TensorSpec]:
    """The outputs a radius neighbours model declares."""
    if task == "classifier":
        return [TensorSpec("predict", str(label_datatype), [-1]), TensorSpec("predict_proba", datatype, [-1, n_classes])]
    return [TensorSpec("predict", datatype, [-1] if n_out == 1 else [-1, n_out])]


MAX_ROWS_NAMED = 10  # rows without neighbours an error lists


class RadiusNeighborsScorer:
    """The vote or average over every stored row within the radius (<=, as scikit-learn), by exact brute force."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray]) -> None:
        self.manifest = manifest
        self.dtype = FLOAT_DTYPES[manifest.input_datatype]
        self.inputs = Inputs(manifest, arrays)
        params = manifest.params
        self.task, radius, weights = params.get("task"), params.get("radius"), params.get("weights")
        metric, self.p = params.get("metric"), float(params.get("p", 2.0))
        if self.task not in ("classifier", "regressor"):
            raise invalid(manifest, f"task {self.task!r} is not classifier or regressor")
        if metric not in neighbors.METRICS:
            raise invalid(manifest, f"metric {metric!r} is not one of {sorted(neighbors.METRICS)}")
        if weights not in ("uniform", "distance"):
            raise invalid(manifest, f"weights {weights!r} is not uniform or distance")
        if not isinstance(radius, (int, float)) or not radius >= 0:
            raise invalid(manifest, f"radius {radius!r} is not a number >= 0")
        self.radius = float(radius)
        self.by_distance = weights == "distance"
        self.metric = neighbors.METRICS[metric]
        self.reduced_radius = neighbors.reduced_radius(self.metric, self.p, self.radius)
        self.train = float_array(manifest, arrays, "train", (-1, self.inputs.width))
        self.norms = train_norms(self.train, self.metric)
        self.y = float_array(manifest, arrays, "y", (self.train.shape[0], -1))
        label_datatype, n_classes = None, 0
        self.codes = np.empty(0, dtype=np.int64)  # empty: the kernel sums targets (a regressor)
        self.outlier_label: Any = None
        self.outlier_class = -1  # the outlier label's class index, or -1 when it is not a class
        if self.task == "classifier":
            classes, label_datatype = params.get("classes"), params.get("label_datatype")
            if not isinstance(classes, list) or not classes:
                raise invalid(manifest, f"classes must list the labels, not {classes!r}")
            n_classes = len(classes)
            self.codes = self.y[:, 0].astype(np.int64)
            if self.codes.size and (self.codes.min() < 0 or self.codes.max() >= n_classes or (self.codes != self.y[:, 0]).any()):
                raise invalid(manifest, f"array 'y' must hold class codes 0..{n_classes - 1}")
            self.outlier_label = params.get("outlier_label")
            # The outlier label last, so that it may be a label the model was not trained on (scikit-learn allows that).
            extra = [] if self.outlier_label is None else [self.outlier_label]
            self.labels = label_array(manifest, [*classes, *extra], str(label_datatype))
            self.outlier_class = classes.index(self.outlier_label) if self.outlier_label in classes else -1
        check_outputs(manifest, radius_outputs(manifest.input_datatype, str(self.task), label_datatype, n_classes, self.y.shape[1]))
        self.output_names = frozenset(o.name for o in manifest.outputs)
        self.targets = self.y if self.task == "regressor" else np.empty((0, n_classes))
        self.width = n_classes if self.task == "classifier" else self.y.shape[1]
        for parallel in (False, True) if compiles_parallel() else (False,):  # compile at load, where a batch can take them
            self._sums(one_row(manifest), parallel)

    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        check_request(self.manifest, self.output_names, outputs, X)
        counts, sums, totals = self._sums(X, is_parallel(X))
        results: dict[str, np.ndarray] = {}
        if self.task == "regressor":
            with np.errstate(invalid="ignore", divide="ignore"):
                pred = sums / totals[:, None]
            pred[counts == 0] = np.nan  # scikit-learn's prediction for a row without neighbours
            results["predict"] = (pred[:, 0] if pred.shape[1] == 1 else pred).astype(self.dtype, copy=False)
        else:
            outliers = np.flatnonzero(counts == 0)
            if outliers.size and self.outlier_label is None:
                raise self._no_neighbors(outliers)
            if self.outlier_class >= 0:
                sums[outliers, self.outlier_class] = 1.0
            normalizer = sums.sum(axis=1)
            normalizer[normalizer == 0.0] = 1.0
            proba = sums / normalizer[:, None]
            best = np.argmax(proba, axis=1)
            best[(proba == 0.0).all(axis=1)] = self.labels.shape[0] - 1  # the outlier label, as scikit-learn's predict
            results["predict"] = self.labels[best]
            results["predict_proba"] = proba.astype(self.dtype, copy=False)
        return [results[name] for name in outputs]

    def _sums(self, X: np.ndarray, parallel: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        Xk = self.inputs(X, parallel)
        counts = np.empty(X.shape[0], dtype=np.int64)
        sums = np.empty((X.shape[0], self.width))
        totals = np.empty(X.shape[0])
        kernel = neighbors.radius_sums_parallel if parallel else neighbors.radius_sums
        kernel(
            Xk, self.inputs.shift, self.inputs.scale, self.inputs.offset, self.train, self.norms, self.metric, self.p,
            self.reduced_radius, self.by_distance, self.codes, self.targets, counts, sums, totals,
        )
        return counts, sums, totals

    def _no_neighbors(self, rows: np.ndarray) -> InvalidRequestError:
        named = ", ".join(str(r) for r in rows[:MAX_ROWS_NAMED]) + (f" and {rows.size - MAX_ROWS_NAMED} more" if rows.size > MAX_ROWS_NAMED else "")
        return InvalidRequestError(
            f"model ({self.manifest.estimator}): input row(s) {named} have no training row within radius {self.radius} "
            "(scikit-learn refuses them too; export a model fitted with outlier_label, or a larger radius)"
        )


@register("radius_neighbors")
def radius_neighbors_scorer(manifest: Manifest, arrays: dict[str, np.ndarray]) -> RadiusNeighborsScorer:
    return RadiusNeighborsScorer(manifest, arrays)


def _metric(estimator: Any, where: str) -> tuple[str, float]:
    """(metric name, p) for the kernels, or ValueError for metrics tensorwire does not serve."""
    metric = estimator.effective_metric_
    params = dict(estimator.effective_metric_params_ or {})
    p = float(params.pop("p", estimator.p if estimator.p is not None else 2))
    if params.get("w", 0) is None:
        del params["w"]  # scikit-learn's unweighted minkowski
    return neighbors.served_metric_or_refusal(metric, params, p, where)


def _votes_one_heap(estimator: Any) -> bool:
    """Whether the classifier's predict_proba runs ArgKminClassMode (strategy parallel_on_X), as scikit-learn decides it."""
    from sklearn.metrics._pairwise_distances_reduction import ArgKminClassMode
    from sklearn.neighbors._classification import _adjusted_metric

    if estimator.weights != "uniform" or estimator._fit_method != "brute" or estimator.metric == "precomputed":
        return False
    metric, _ = _adjusted_metric(metric=estimator.metric, metric_kwargs=dict(estimator.metric_params or {}), p=estimator.p)
    X = np.asarray(estimator._fit_X)
    return bool(ArgKminClassMode.is_usable_for(X[:1], X, metric))


def _weights(estimator: Any, where: str) -> str:
    weights = getattr(estimator, "weights", "uniform")
    if not isinstance(weights, str) or weights not in ("uniform", "distance"):
        raise ValueError(f"tensorwire cannot export {where}: weights {weights!r} (serves uniform and distance; not a callable)")
    return weights


def _classifier_targets(estimator: Any, where: str) -> tuple[str, list[Any], np.ndarray]:
    """(label datatype, labels, class codes as a y column) of a fitted single-output classifier."""
    if getattr(estimator, "outputs_2d_", False):
        raise ValueError(f"tensorwire cannot export {where}: multi-output classification")
    label_datatype, labels = class_labels(estimator.classes_, where)
    return label_datatype, labels, np.asarray(estimator._y, dtype=np.float64).reshape(-1, 1)


def _regressor_targets(estimator: Any) -> np.ndarray:
    y = np.asarray(estimator._y, dtype=np.float64)
    return y.reshape(y.shape[0], -1)


@exports("sklearn.neighbors.KNeighborsClassifier", "sklearn.neighbors.KNeighborsRegressor", "sklearn.neighbors.NearestNeighbors", kind="neighbors")
def _neighbors(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    from sklearn import get_config  # exporting only: a server never imports scikit-learn
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    where = describe(estimator)
    weights = _weights(estimator, where)
    metric, p = _metric(estimator, where)
    train = np.asarray(estimator._fit_X, dtype=np.float64)
    result = planned(estimator, prep, train.shape[1])
    k = int(estimator.n_neighbors)
    arrays: dict[str, np.ndarray] = {"train": train}
    params: dict[str, Any] = {"k": k, "metric": metric, "p": p, "weights": weights}
    # scikit-learn's own threads and chunk size decide how its heaps are merged, and so the order of exact ties.
    params["argkmin_threads"] = int(_openmp_effective_n_threads())
    params["argkmin_chunk"] = int(get_config().get("pairwise_dist_chunk_size", neighbors.ARGKMIN_CHUNK))
    label_datatype, n_classes, n_out = None, 0, 1
    if isinstance(estimator, KNeighborsClassifier):
        label_datatype, labels, arrays["y"] = _classifier_targets(estimator, where)
        n_classes = len(labels)
        params.update(task="classifier", classes=labels, label_datatype=label_datatype, vote_one_heap=_votes_one_heap(estimator))
    elif isinstance(estimator, KNeighborsRegressor):
        arrays["y"] = _regressor_targets(estimator)
        n_out = arrays["y"].shape[1]
        params["task"] = "regressor"
    else:
        params["task"] = "neighbors"
    outputs = neighbors_outputs(datatype, params["task"], k, label_datatype, n_classes, n_out)
    return exported("neighbors", result, outputs, arrays, params)


@exports("sklearn.neighbors.RadiusNeighborsClassifier", "sklearn.neighbors.RadiusNeighborsRegressor", kind="radius_neighbors")
def _radius_neighbors(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    from sklearn.neighbors import RadiusNeighborsClassifier  # exporting only: a server never imports scikit-learn

    where = describe(estimator)
    weights = _weights(estimator, where)
    metric, p = _metric(estimator, where)
    radius = float(estimator.radius)
    if not radius >= 0 or not np.isfinite(radius):
        raise ValueError(f"tensorwire cannot export {where}: radius {radius} (a finite radius >= 0)")
    train = np.asarray(estimator._fit_X, dtype=np.float64)
    result = planned(estimator, prep, train.shape[1])
    params: dict[str, Any] = {"radius": radius, "metric": metric, "p": p, "weights": weights}
    label_datatype, n_classes = None, 0
    if isinstance(estimator, RadiusNeighborsClassifier):
        label_datatype, labels, y = _classifier_targets(estimator, where)
        n_classes = len(labels)
        outlier = estimator.outlier_label_[0] if estimator.outlier_label_ is not None else None
        if outlier is not None:
            outlier_datatype, (*_, outlier) = class_labels(np.append(estimator.classes_, outlier), where)
            if outlier_datatype != label_datatype:
                raise ValueError(f"tensorwire cannot export {where}: outlier_label {outlier!r} is not of the classes' type")
        params.update(task="classifier", classes=labels, label_datatype=label_datatype, outlier_label=outlier)
    else:
        y = _regressor_targets(estimator)
        params["task"] = "regressor"
    outputs = radius_outputs(datatype, params["task"], label_datatype, n_classes, y.shape[1])
    return exported("radius_neighbors", result, outputs, {"train": train, "y": y}, params)
