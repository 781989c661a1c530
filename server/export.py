"""Export fitted scikit-learn estimators as tensorwire models (model.npz).

`EXPORTERS` maps an estimator type to the function that turns it into arrays,
outputs and params; the steps before it in a Pipeline reach it as a
`Preprocessing`: scalers (`PREPROCESSORS`) and linear maps (`LINEAR_STEPS`: PCA,
TruncatedSVD) fold into a linear model's weights, and the kernel families
(export_nonlinear) fuse or stage every step in `TRANSFORMS`. Parameters are
stored as float64 whatever the input dtype.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import (
    ARDRegression,
    BayesianRidge,
    ElasticNet,
    ElasticNetCV,
    HuberRegressor,
    Lars,
    Lasso,
    LassoCV,
    LassoLars,
    LinearRegression,
    LogisticRegression,
    LogisticRegressionCV,
    MultiTaskElasticNet,
    MultiTaskLasso,
    OrthogonalMatchingPursuit,
    Perceptron,
    Ridge,
    RidgeClassifier,
    RidgeClassifierCV,
    RidgeCV,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler
from sklearn.svm import LinearSVC, LinearSVR
from sklearn.utils.validation import check_is_fitted

from tensorwire.server.model_format import INPUT_NAME, Manifest, TensorSpec, array_spec, save_model
from tensorwire.server.scorers_linear import classifier_outputs, regressor_outputs

INPUT_DATATYPES = {"float32": "FP32", "float64": "FP64"}


class PickleNotTrustedError(ValueError):
    """A pickle (joblib) file was to be loaded without the caller's explicit trust."""


@dataclass(frozen=True)
class Affine:
    """x' = scale * x + shift, feature by feature: a pipeline's scalers folded into one map."""

    scale: np.ndarray  # float64 [n_features]
    shift: np.ndarray  # float64 [n_features]

    def then(self, after: Affine) -> Affine:
        """This map followed by `after`."""
        return Affine(after.scale * self.scale, after.scale * self.shift + after.shift)

    def fold(self, coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """W' = W * scale, b' = W @ shift + b, so that W' @ x + b' = W @ x' + b."""
        return coef * self.scale, coef @ self.shift + intercept


# A linear (not per-feature) step's fold into a linear model: (step, W, b) -> (W', b') with W' x + b' = W step(x) + b.
LinearFold = Callable[[Any, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
LINEAR_STEPS: dict[type, LinearFold] = {}
# Every step type other than the scalers that may precede a final estimator (export_nonlinear fills it).
TRANSFORMS: set[type] = set()


@dataclass(frozen=True)
class Preprocessing:
    """A Pipeline's fitted steps before its final estimator, in order; exporters fold them or fuse them into kernels."""

    steps: tuple[tuple[str, Any], ...]  # (name, fitted step), passthrough steps left out
    affines: tuple[Affine | None, ...]  # each scaler's map (PREPROCESSORS); None for the other steps
    final: str  # the final estimator, as messages name it

    def fold(self, coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """W' and b' with W' @ x + b' = W @ steps(x) + b: runs of scalers fold as one Affine, PCA and TruncatedSVD by LINEAR_STEPS."""
        segments: list[Affine | tuple[Any, LinearFold]] = []
        for (name, step), affine in zip(self.steps, self.affines, strict=True):
            if affine is not None:
                last = segments[-1] if segments else None
                if isinstance(last, Affine):
                    segments[-1] = last.then(affine)
                else:
                    segments.append(affine)
                continue
            linear_fold = LINEAR_STEPS.get(type(step))
            if linear_fold is None:
                raise ValueError(
                    f"tensorwire cannot export step '{name}' ({type(step).__name__}) of Pipeline before {self.final}: "
                    f"{type(step).__name__} is not a linear map, so it cannot fold into {self.final}'s weights "
                    "(it can precede kernel SVMs, k-means, PCA and TruncatedSVD)"
                )
            segments.append((step, linear_fold))
        for segment in reversed(segments):
            if isinstance(segment, Affine):
                coef, intercept = segment.fold(coef, intercept)
            else:
                coef, intercept = segment[1](segment[0], coef, intercept)
        return coef, intercept


@dataclass(frozen=True)
class Exported:
    """What an exporter makes of an estimator; `export` adds the input and writes the file."""

    kind: str
    n_features: int
    outputs: list[TensorSpec]
    arrays: dict[str, np.ndarray]
    params: dict[str, Any]


# An exporter gets the fitted estimator, the pipeline steps before it (None when there
# are none) and the input datatype ("FP32" or "FP64").
Exporter = Callable[[Any, Preprocessing | None, str], Exported]
EXPORTERS: dict[type, Exporter] = {}
PREPROCESSORS: dict[type, Callable[[Any], Affine]] = {}


def exports(*types: type) -> Callable[[Exporter], Exporter]:
    """Register an exporter for the given estimator types."""

    def decorator(exporter: Exporter) -> Exporter:
        for cls in types:
            if cls in EXPORTERS:
                raise RuntimeError(f"{cls.__name__} has two exporters")
            EXPORTERS[cls] = exporter
        return exporter

    return decorator


def folds(cls: type) -> Callable[[Callable[[Any], Affine]], Callable[[Any], Affine]]:
    """Register the affine map of a preprocessing step that can precede an estimator."""

    def decorator(fold: Callable[[Any], Affine]) -> Callable[[Any], Affine]:
        PREPROCESSORS[cls] = fold
        return fold

    return decorator


# --- entry points ---------------------------------------------------------------


def export(estimator: Any, version_dir: os.PathLike[str] | str, *, dtype: Any = "float32") -> pathlib.Path:
    """Write a fitted estimator (or Pipeline of scalers then estimator) as version_dir/model.npz."""
    datatype = _input_datatype(dtype)
    steps, (final_name, final) = _split_pipeline(estimator)
    in_pipeline = isinstance(estimator, Pipeline)
    where = f"step '{final_name}' ({type(final).__name__}) of Pipeline" if in_pipeline else type(final).__name__
    exporter = EXPORTERS.get(type(final))
    if exporter is None:
        supported = ", ".join(sorted(cls.__name__ for cls in EXPORTERS))
        raise TypeError(
            f"tensorwire cannot export {where}: no exporter for {type(final).__name__} (supported: {supported})"
        )
    _require_fitted(final, where)
    exported = exporter(final, _fold_steps(steps, _describe(final)), datatype)
    names = [type(step).__name__ for _, step in steps] + [_describe(final)]
    manifest = Manifest(
        kind=exported.kind,
        estimator=f"Pipeline({', '.join(names)})" if in_pipeline else names[-1],
        inputs=[TensorSpec(INPUT_NAME, datatype, [-1, exported.n_features])],
        outputs=exported.outputs,
        arrays={name: array_spec(a) for name, a in exported.arrays.items()},
        params=exported.params,
    )
    return save_model(version_dir, manifest, exported.arrays)


def export_pickle_file(
    model_path: os.PathLike[str] | str,
    version_dir: os.PathLike[str] | str,
    *,
    trust_pickle: bool,
    dtype: Any = "float32",
) -> pathlib.Path:
    """Unpickle an estimator saved with joblib (only with trust_pickle=True) and export it."""
    if not trust_pickle:
        raise PickleNotTrustedError(
            f"refusing to load {model_path}: unpickling a joblib/pickle file runs arbitrary code from it. "
            "Load only files you made or trust, and say so explicitly with --trust-pickle "
            "(trust_pickle=True); tensorwire's own model.npz never needs this."
        )
    import joblib  # only the trusted path needs it

    return export(joblib.load(model_path), version_dir, dtype=dtype)


# --- pipelines ------------------------------------------------------------------


def _input_datatype(dtype: Any) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in INPUT_DATATYPES:
        raise ValueError(f"dtype must be float32 or float64, not {dtype!r}")
    return INPUT_DATATYPES[name]


def _flatten(pipeline: Pipeline, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(name, step) pairs of a possibly nested Pipeline, named as set_params names them."""
    for name, step in pipeline.steps:
        if isinstance(step, Pipeline):
            yield from _flatten(step, f"{prefix}{name}__")
        else:
            yield f"{prefix}{name}", step


def _split_pipeline(estimator: Any) -> tuple[list[tuple[str, Any]], tuple[str, Any]]:
    """(preprocessing steps, (name, final estimator)); a bare estimator has no steps."""
    if not isinstance(estimator, Pipeline):
        return [], ("", estimator)
    steps = list(_flatten(estimator))
    final_name, final = steps[-1]
    if final is None or (isinstance(final, str) and final == "passthrough"):
        raise ValueError(
            f"tensorwire cannot export a Pipeline whose last step '{final_name}' is {final!r}: it needs an estimator"
        )
    kept = [
        (name, step)
        for name, step in steps[:-1]
        if step is not None and not (isinstance(step, str) and step == "passthrough")
    ]
    for name, step in kept:
        where = f"step '{name}' ({type(step).__name__}) of Pipeline"
        if type(step) not in PREPROCESSORS and type(step) not in TRANSFORMS:
            supported = ", ".join(sorted(cls.__name__ for cls in PREPROCESSORS))
            others = ", ".join(sorted(cls.__name__ for cls in TRANSFORMS))
            raise TypeError(
                f"tensorwire cannot export {where}: only {supported} (they fold into the final estimator's "
                f"parameters) and {others} can precede the final estimator"
            )
        _require_fitted(step, where)
    return kept, (final_name, final)


def _fold_steps(steps: list[tuple[str, Any]], final: str) -> Preprocessing | None:
    """The steps with each scaler's map computed (so a scaler that cannot fold is refused here, whatever follows it)."""
    affines: list[Affine | None] = []
    for name, step in steps:
        fold = PREPROCESSORS.get(type(step))
        try:
            affines.append(None if fold is None else fold(step))
        except ValueError as exc:
            raise ValueError(
                f"tensorwire cannot export step '{name}' ({type(step).__name__}) of Pipeline: {exc}"
            ) from None
    return Preprocessing(tuple(steps), tuple(affines), final) if steps else None


def _require_fitted(estimator: Any, where: str) -> None:
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise ValueError(f"tensorwire cannot export {where}: it is not fitted (call fit first)") from None


def _describe(estimator: Any) -> str:
    inner = getattr(estimator, "estimator", None)
    if isinstance(estimator, OneVsRestClassifier) and inner is not None:
        return f"OneVsRestClassifier({type(inner).__name__})"
    return type(estimator).__name__


def _f64(values: Any, n_features: int | None = None) -> np.ndarray:
    return np.array(values, dtype=np.float64, copy=True).reshape(-1 if n_features is None else n_features)


@folds(StandardScaler)
def _standard_scaler(scaler: StandardScaler) -> Affine:
    n = scaler.n_features_in_
    # mean_ is fitted even with with_mean=False; transform then ignores it.
    mean = _f64(scaler.mean_, n) if scaler.with_mean else np.zeros(n)
    scale = _f64(scaler.scale_, n) if scaler.with_std else np.ones(n)
    return Affine(1.0 / scale, -mean / scale)


@folds(MinMaxScaler)
def _min_max_scaler(scaler: MinMaxScaler) -> Affine:
    if scaler.clip:
        raise ValueError(
            "clip=True clamps features into feature_range, which is not an affine map; refit with clip=False"
        )
    n = scaler.n_features_in_
    return Affine(_f64(scaler.scale_, n), _f64(scaler.min_, n))


@folds(MaxAbsScaler)
def _max_abs_scaler(scaler: MaxAbsScaler) -> Affine:
    n = scaler.n_features_in_
    return Affine(1.0 / _f64(scaler.scale_, n), np.zeros(n))


# --- linear models --------------------------------------------------------------


def _linear_parameters(coef: Any, intercept: Any, prep: Preprocessing | None) -> tuple[np.ndarray, np.ndarray]:
    """coef as float64 [k, n_features] and intercept as float64 [k], preprocessing folded in."""
    coef2 = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    intercept1 = np.broadcast_to(np.asarray(intercept, dtype=np.float64).reshape(-1), (coef2.shape[0],))
    if prep is not None:
        coef2, intercept1 = prep.fold(coef2, intercept1)
    return np.ascontiguousarray(coef2), np.ascontiguousarray(intercept1)


@exports(
    LinearRegression,
    Ridge,
    RidgeCV,
    Lasso,
    LassoCV,
    ElasticNet,
    ElasticNetCV,
    MultiTaskLasso,
    MultiTaskElasticNet,
    Lars,
    LassoLars,
    OrthogonalMatchingPursuit,
    HuberRegressor,
    BayesianRidge,
    ARDRegression,
    SGDRegressor,
    LinearSVR,
)
def _linear_regressor(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    multi_target = np.ndim(estimator.coef_) == 2  # sklearn's predict is then [n, k], even for k = 1
    coef, intercept = _linear_parameters(estimator.coef_, estimator.intercept_, prep)
    return Exported(
        kind="linear_regressor",
        n_features=coef.shape[1],
        outputs=regressor_outputs(datatype, coef.shape[0], multi_target),
        arrays={"coef": coef, "intercept": intercept},
        params={"multi_target": multi_target},
    )


# type -> its predict_proba as (link when binary, link when multiclass); "none" when it has none.
_SGD_LINKS = {"log_loss": ("logistic", "ovr_logistic"), "modified_huber": ("modified_huber", "modified_huber")}
CLASSIFIER_LINKS: dict[type, Callable[[Any], tuple[str, str]]] = {
    LogisticRegression: lambda est: ("logistic", "softmax"),
    LogisticRegressionCV: lambda est: ("logistic", "softmax"),
    SGDClassifier: lambda est: _SGD_LINKS.get(est.loss, ("none", "none")),
    LinearSVC: lambda est: ("none", "none"),
    RidgeClassifier: lambda est: ("none", "none"),
    RidgeClassifierCV: lambda est: ("none", "none"),
    Perceptron: lambda est: ("none", "none"),
}
# OneVsRestClassifier normalises its estimators' probabilities itself, leaving zero-sum rows at zero.
_ONEVSREST_LINKS = {"none": "none", "logistic": "onevsrest_logistic", "modified_huber": "onevsrest_modified_huber"}


def _labels(classes: Any, where: str) -> tuple[str, list[Any]]:
    """(label_datatype, JSON labels) for estimator.classes_."""
    classes = np.asarray(classes)
    kind = classes.dtype.kind
    if classes.ndim != 1:
        raise ValueError(f"tensorwire cannot export {where}: classes_ is not one-dimensional (multilabel?)")
    if kind == "b":
        return "BOOL", [bool(c) for c in classes]
    if kind in "iu":
        if classes.size and (int(classes.max()) > np.iinfo(np.int64).max):
            raise ValueError(f"tensorwire cannot export {where}: class labels do not fit int64")
        return "INT64", [int(c) for c in classes]
    if kind == "f":
        if not np.isfinite(classes).all():
            raise ValueError(f"tensorwire cannot export {where}: class labels include NaN or infinity")
        return "FP64", [float(c) for c in classes]
    if kind == "U" or (kind == "O" and all(isinstance(c, str) for c in classes)):
        return "BYTES", [str(c) for c in classes]
    raise TypeError(
        f"tensorwire cannot export {where}: class labels of type {classes.dtype} (use int, float, bool or str labels)"
    )


def _classifier(
    coef: np.ndarray, intercept: np.ndarray, classes: Any, links: tuple[str, str], datatype: str, where: str
) -> Exported:
    label_datatype, labels = _labels(classes, where)
    n_classes = len(labels)
    if n_classes < 2 or coef.shape[0] != (1 if n_classes == 2 else n_classes):
        raise ValueError(f"tensorwire cannot export {where}: {coef.shape[0]} coefficient rows for {n_classes} classes")
    link = links[0] if n_classes == 2 else links[1]
    return Exported(
        kind="linear_classifier",
        n_features=coef.shape[1],
        outputs=classifier_outputs(datatype, label_datatype, n_classes, has_proba=link != "none"),
        arrays={"coef": coef, "intercept": intercept},
        params={"classes": labels, "label_datatype": label_datatype, "link": link},
    )


def _refuse_multilabel(y_type: str | None, where: str) -> None:
    if y_type is not None and y_type.startswith("multilabel"):
        raise ValueError(f"tensorwire cannot export {where}: it was fitted on multilabel targets")


@exports(*CLASSIFIER_LINKS)
def _linear_classifier(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    where = type(estimator).__name__
    _refuse_multilabel(getattr(getattr(estimator, "_label_binarizer", None), "y_type_", None), where)
    coef, intercept = _linear_parameters(estimator.coef_, estimator.intercept_, prep)
    return _classifier(
        coef, intercept, estimator.classes_, CLASSIFIER_LINKS[type(estimator)](estimator), datatype, where
    )


@exports(OneVsRestClassifier)
def _one_vs_rest(estimator: OneVsRestClassifier, prep: Preprocessing | None, datatype: str) -> Exported:
    where = _describe(estimator)
    _refuse_multilabel(estimator.label_binarizer_.y_type_, where)
    inner = estimator.estimators_
    for binary in inner:
        if type(binary) not in CLASSIFIER_LINKS or np.atleast_2d(binary.coef_).shape[0] != 1:
            supported = ", ".join(sorted(cls.__name__ for cls in CLASSIFIER_LINKS))
            raise TypeError(
                f"tensorwire cannot export {where}: its estimators must be binary linear classifiers "
                f"({supported}), not {type(binary).__name__}"
            )
    coef, intercept = _linear_parameters(
        np.vstack([np.atleast_2d(np.asarray(b.coef_, dtype=np.float64)) for b in inner]),
        np.concatenate([np.broadcast_to(np.asarray(b.intercept_, dtype=np.float64).reshape(-1), (1,)) for b in inner]),
        prep,
    )
    binary_link = CLASSIFIER_LINKS[type(inner[0])](inner[0])[0]
    return _classifier(
        coef, intercept, estimator.classes_, (binary_link, _ONEVSREST_LINKS[binary_link]), datatype, where
    )


# Kernel SVMs, k-means, PCA and TruncatedSVD register themselves (and PCA's, TruncatedSVD's and Normalizer's steps).
from tensorwire.server import export_nonlinear  # noqa: F401
