"""Exporters for kernel SVMs, k-means, PCA and TruncatedSVD, and the pipeline steps they fuse or stage.

A pipeline's steps become maps: scalers a `Diagonal` (x' = (x - shift) scale +
offset, the form the kernels fuse, which keeps StandardScaler exact for features
whose mean dwarfs their spread), PCA and TruncatedSVD a `Projection`, Normalizer a
`Normalize`. `plan` turns the maps into what the scorers run:

- runs of scalers compose into one Diagonal, fused into the next kernel's pass;
- projections (with the scalers between them) compose into one `project` stage,
  the Diagonal before them fused into it; a Normalizer is a stage of its own;
- the Diagonal after the last stage is fused into the final kernel.

So a chain of scalers before an SVM, k-means or PCA costs no extra pass; a PCA or
TruncatedSVD before an SVM or k-means costs one projection pass (fusing it would
need distances in the reduced space, which an rbf kernel or k-means cannot get
from the input's); a linear-kernel SVM folds everything after the last Normalizer
into its weights, as linear models do (export.Preprocessing.fold, which the
`LINEAR_STEPS` below extend to PCA and TruncatedSVD).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, Normalizer, StandardScaler
from sklearn.svm import SVC, SVR, NuSVC, NuSVR, OneClassSVM

from tensorwire.kernels import decomposition, kmeans, svm
from tensorwire.server.export import (
    LINEAR_STEPS,
    TRANSFORMS,
    Exported,
    Preprocessing,
    _describe,
    _labels,
    exports,
)
from tensorwire.server.scorers_cluster import kmeans_outputs
from tensorwire.server.scorers_decomposition import NORMS, projection_outputs
from tensorwire.server.scorers_svm import n_pairs, one_class_outputs, svc_outputs, svr_outputs

# --- step maps ---------------------------------------------------------------------


@dataclass(frozen=True)
class Diagonal:
    """x' = (x - shift) * scale + offset, feature by feature: the pre-scaling every kernel fuses into its pass."""

    shift: np.ndarray
    scale: np.ndarray
    offset: np.ndarray

    @staticmethod
    def identity(width: int) -> Diagonal:
        return Diagonal(*decomposition.identity_affine(width))

    def then(self, after: Diagonal) -> Diagonal:
        """This map followed by `after`: ((x - s1) k1 + o1 - s2) k2 + o2, with the subtraction moved into x's units."""
        # (x - s1) k1 + o1 - s2 = (x - (s1 + (s2 - o1) / k1)) k1: subtracting before any scaling is what keeps a
        # standardisation after another scaler as exact as a lone one; a zero k1 (no scikit-learn scaler makes one)
        # keeps the constant in the offset instead.
        k1 = self.scale
        movable = k1 != 0.0
        safe_k1 = np.where(movable, k1, 1.0)
        shift = np.where(movable, self.shift + (after.shift - self.offset) / safe_k1, self.shift)
        offset = np.where(movable, after.offset, (self.offset - after.shift) * after.scale + after.offset)
        return Diagonal(shift, k1 * after.scale, offset)

    def as_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}shift": self.shift, f"{prefix}scale": self.scale, f"{prefix}offset": self.offset}


@dataclass(frozen=True)
class Projection:
    """x' = (x @ components_t - bias) / divisor: scikit-learn's PCA.transform order (TruncatedSVD: bias 0, divisor 1)."""

    components_t: np.ndarray  # [n_in, n_out]
    bias: np.ndarray
    divisor: np.ndarray

    def then_diagonal(self, after: Diagonal) -> Projection:
        """This projection followed by a Diagonal, as one projection: ((p - b) / d - s) k + o = (p - (b + (s - o / k) d)) / (d / k)."""
        if np.any(after.scale == 0.0):
            raise ValueError("a scaler with a zero scale after a projection cannot compose with it")
        return Projection(self.components_t, self.bias + (after.shift - after.offset / after.scale) * self.divisor, self.divisor / after.scale)

    def then(self, after: Projection) -> Projection:
        """This projection followed by another, as one: components (C1 / d1) C2, bias (b1 / d1) C2 + b2, divisor d2."""
        return Projection(
            np.ascontiguousarray((self.components_t / self.divisor) @ after.components_t),
            (self.bias / self.divisor) @ after.components_t + after.bias,
            after.divisor,
        )

    def as_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}components_t": self.components_t, f"{prefix}bias": self.bias, f"{prefix}divisor": self.divisor}


@dataclass(frozen=True)
class Normalize:
    """Normalizer: each row divided by its own l1, l2 or max norm (not a per-feature map: always a stage)."""

    norm: str


StepMap = Diagonal | Projection | Normalize
STEP_MAPS: dict[type, Callable[[Any], StepMap]] = {}


def maps(cls: type) -> Callable[[Callable[[Any], StepMap]], Callable[[Any], StepMap]]:
    """Register the map of a pipeline step type for the kernel families (and accept the type in pipelines)."""

    def decorator(fn: Callable[[Any], StepMap]) -> Callable[[Any], StepMap]:
        STEP_MAPS[cls] = fn
        if cls not in (StandardScaler, MinMaxScaler, MaxAbsScaler):  # export.PREPROCESSORS accepts those already
            TRANSFORMS.add(cls)
        return fn

    return decorator


def _f64(values: Any) -> np.ndarray:
    return np.array(values, dtype=np.float64, copy=True).reshape(-1)


@maps(StandardScaler)
def _standard_scaler(scaler: StandardScaler) -> Diagonal:
    n = scaler.n_features_in_
    shift = _f64(scaler.mean_) if scaler.with_mean else np.zeros(n)  # mean_ is fitted even with with_mean=False
    scale = 1.0 / _f64(scaler.scale_) if scaler.with_std else np.ones(n)
    return Diagonal(shift, scale, np.zeros(n))


@maps(MinMaxScaler)
def _min_max_scaler(scaler: MinMaxScaler) -> Diagonal:
    # clip=True is refused before this runs (export.PREPROCESSORS); x * scale_ + min_ is scikit-learn's own order.
    return Diagonal(np.zeros(scaler.n_features_in_), _f64(scaler.scale_), _f64(scaler.min_))


@maps(MaxAbsScaler)
def _max_abs_scaler(scaler: MaxAbsScaler) -> Diagonal:
    n = scaler.n_features_in_
    return Diagonal(np.zeros(n), 1.0 / _f64(scaler.scale_), np.zeros(n))


@maps(PCA)
def _pca(pca: PCA) -> Projection:
    return Projection(*decomposition.pca_params(pca.components_, pca.mean_, pca.explained_variance_, bool(pca.whiten)))


@maps(TruncatedSVD)
def _truncated_svd(svd: TruncatedSVD) -> Projection:
    return Projection(*decomposition.truncated_svd_params(svd.components_))


@maps(Normalizer)
def _normalizer(normalizer: Normalizer) -> Normalize:
    if normalizer.norm not in NORMS:
        raise ValueError(f"norm {normalizer.norm!r} is not one of {NORMS}")
    return Normalize(normalizer.norm)


def _fold_projection(step: Any, coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W ((x C - b) / d) + c = ((W / d) C^T) x + (c - (W / d) b): a PCA or TruncatedSVD folded into a linear model."""
    proj = STEP_MAPS[type(step)](step)
    assert isinstance(proj, Projection)
    return _fold_into_weights(proj, coef, intercept)


def _fold_into_weights(proj: Projection, coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scaled = coef / proj.divisor
    return np.ascontiguousarray(scaled @ proj.components_t.T), intercept - scaled @ proj.bias


LINEAR_STEPS[PCA] = _fold_projection
LINEAR_STEPS[TruncatedSVD] = _fold_projection


# --- plans ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectStage:
    prefix: Diagonal  # fused into the projection's pass
    projection: Projection


@dataclass(frozen=True)
class NormalizeStage:
    prefix: Diagonal  # applied to the row before its norm is taken
    norm: str


@dataclass(frozen=True)
class Plan:
    """What a scorer runs: stages in order, then the final kernel with `affine` fused in."""

    stages: tuple[ProjectStage | NormalizeStage, ...]
    affine: Diagonal
    n_features: int  # the model's input width

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = self.affine.as_arrays("")
        for i, stage in enumerate(self.stages):
            arrays.update(stage.prefix.as_arrays(f"stage{i}_"))
            if isinstance(stage, ProjectStage):
                arrays.update(stage.projection.as_arrays(f"stage{i}_"))
        return arrays

    def params(self) -> list[dict[str, str]]:
        return [{"op": "project"} if isinstance(s, ProjectStage) else {"op": "normalize", "norm": s.norm} for s in self.stages]


def _step_maps(prep: Preprocessing | None, final: str) -> list[tuple[str, StepMap]]:
    named: list[tuple[str, StepMap]] = []
    for name, step in () if prep is None else prep.steps:
        try:
            named.append((name, STEP_MAPS[type(step)](step)))
        except (KeyError, ValueError) as exc:
            reason = f"{type(step).__name__} has no map" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(f"tensorwire cannot export step '{name}' ({type(step).__name__}) of Pipeline before {final}: {reason}") from None
    return named


def plan(step_maps: Sequence[tuple[str, StepMap]], n_features: int) -> Plan:
    """Compose the maps into stages and the final kernel's fused pre-scaling (see the module docstring)."""
    width = _width_in(step_maps, n_features)
    stages: list[ProjectStage | NormalizeStage] = []
    lead: Diagonal | None = None  # the pending projection's prefix
    proj: Projection | None = None  # projections (and the scalers between them) not yet made a stage
    tail: Diagonal | None = None  # scalers after the pending projection (or since the last stage)
    current = width
    for name, m in step_maps:
        if isinstance(m, Diagonal):
            if m.shift.shape[0] != current:
                raise ValueError(f"step '{name}' expects {m.shift.shape[0]} features, the step before it gives {current}")
            tail = m if tail is None else tail.then(m)
        elif isinstance(m, Projection):
            if m.components_t.shape[0] != current:
                raise ValueError(f"step '{name}' expects {m.components_t.shape[0]} features, the step before it gives {current}")
            if proj is None:
                lead, proj = (tail or Diagonal.identity(current)), m
            else:
                proj = (proj if tail is None else proj.then_diagonal(tail)).then(m)
            tail = None
            current = m.components_t.shape[1]
        else:
            if proj is not None:
                assert lead is not None
                stages.append(ProjectStage(lead, proj))
                proj = None
            stages.append(NormalizeStage(tail or Diagonal.identity(current), m.norm))
            tail = None
    if proj is not None:
        assert lead is not None
        stages.append(ProjectStage(lead, proj))
    return Plan(tuple(stages), tail or Diagonal.identity(current), width)


def _width_in(step_maps: Sequence[tuple[str, StepMap]], n_features: int) -> int:
    """The raw input width: the first per-feature step's, else the final estimator's."""
    for _, m in step_maps:
        if isinstance(m, Diagonal):
            return int(m.shift.shape[0])
        if isinstance(m, Projection):
            return int(m.components_t.shape[0])
    return n_features


def _planned(estimator: Any, prep: Preprocessing | None, n_features: int) -> Plan:
    """The plan for a final kernel fitted on n_features: its steps' maps composed, the width they hand it checked."""
    where = _describe(estimator) if prep is None else f"Pipeline ending in {_describe(estimator)}"
    step_maps = _step_maps(prep, _describe(estimator))
    try:
        result = plan(step_maps, n_features)
    except ValueError as exc:
        raise ValueError(f"tensorwire cannot export {where}: {exc}") from None
    if result.affine.shift.shape[0] != n_features:
        raise ValueError(
            f"tensorwire cannot export {where}: the steps before it give {result.affine.shift.shape[0]} features, "
            f"it was fitted on {n_features}"
        )
    return result


def _exported(kind: str, plan_: Plan, outputs: Any, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> Exported:
    return Exported(
        kind=kind,
        n_features=plan_.n_features,
        outputs=outputs,
        arrays={**plan_.arrays(), **{name: np.ascontiguousarray(a) for name, a in arrays.items()}},
        params={**params, "stages": plan_.params()},
    )


# --- kernel SVMs -----------------------------------------------------------------------


def _dense(values: Any) -> np.ndarray:
    """A fitted attribute as a float64 array (a model fitted on sparse data stores sparse ones)."""
    return np.asarray(values.toarray() if sparse.issparse(values) else values, dtype=np.float64)


def _svm_arrays(
    estimator: Any, prep: Preprocessing | None, coefficients: tuple[np.ndarray, np.ndarray, np.ndarray], n_out: int
) -> tuple[Plan, dict[str, np.ndarray], dict[str, Any]]:
    """(plan, arrays, params) for svm_decision: support vectors, coefficients, intercept and kernel parameters."""
    name = _describe(estimator)
    kernel = estimator.kernel
    if not isinstance(kernel, str) or kernel not in svm.KERNEL_CODES:
        raise ValueError(
            f"tensorwire cannot export {name}: kernel {kernel!r} is not one of {sorted(svm.KERNEL_CODES)} "
            "(a precomputed or callable kernel needs the training rows or Python code at scoring time)"
        )
    support_vectors = _dense(estimator.support_vectors_)
    n_features = support_vectors.shape[1]
    result = _planned(estimator, prep, n_features)
    coef_t, bounds, outputs = coefficients
    intercept = np.asarray(estimator.intercept_, dtype=np.float64).reshape(n_out)
    if kernel == "linear":
        # sum_s a_s (x . sv_s) = x . w: one weight row per output; then every linear step after the last stage folds in.
        sv, sq, centre, coef_t, bounds, outputs = svm.linear_kernel_weights(support_vectors, coef_t, bounds, outputs, n_out)
        if result.stages and isinstance(result.stages[-1], ProjectStage):
            last = result.stages[-1]
            a = result.affine
            weights, intercept = sv * a.scale, intercept + sv @ (a.offset - a.shift * a.scale)
            sv, intercept = _fold_into_weights(last.projection, weights, intercept)
            result = Plan(result.stages[:-1], last.prefix, result.n_features)
            centre = np.zeros(sv.shape[1])
    else:
        sv, sq, centre = svm.support_vector_params(support_vectors, kernel)
    arrays = {
        "sv": sv, "sv_sq_norms": sq, "centre": centre, "coef_t": coef_t,
        "block_bounds": np.asarray(bounds, dtype=np.int64), "block_outputs": np.asarray(outputs, dtype=np.int64), "intercept": intercept,
    }
    params = {"kernel": kernel, "gamma": float(estimator._gamma), "coef0": float(estimator.coef0), "degree": int(estimator.degree)}
    return result, arrays, params


@exports(SVC, NuSVC)
def _svc(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    name = _describe(estimator)
    label_datatype, labels = _labels(estimator.classes_, name)
    k = len(labels)
    shape = estimator.decision_function_shape
    if estimator.break_ties and shape == "ovo":
        raise ValueError(f"tensorwire cannot export {name}: break_ties=True with decision_function_shape='ovo' (scikit-learn's predict refuses it too)")
    n_out = n_pairs(k)
    coefficients = svm.svc_coefficients(_dense(estimator.dual_coef_), estimator.n_support_)
    result, arrays, params = _svm_arrays(estimator, prep, coefficients, n_out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn 1.9 deprecates probability=True; a model fitted with it still has it
        # predict_proba exists when probability is True (not False, nor 1.9's "deprecated" default) and Platt was fitted.
        probability = hasattr(estimator, "predict_proba") and np.size(estimator.probA_) == n_out
        if probability:
            arrays["prob_a"] = np.asarray(estimator.probA_, dtype=np.float64).reshape(n_out)
            arrays["prob_b"] = np.asarray(estimator.probB_, dtype=np.float64).reshape(n_out)
    params.update(
        classes=labels, label_datatype=label_datatype, decision_function_shape=shape,
        break_ties=bool(estimator.break_ties and shape == "ovr" and k > 2), probability=probability,
    )
    return _exported("svc", result, svc_outputs(datatype, label_datatype, k, shape, probability), arrays, params)


@exports(SVR, NuSVR)
def _svr(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    coefficients = svm.single_output_coefficients(_dense(estimator.dual_coef_))
    result, arrays, params = _svm_arrays(estimator, prep, coefficients, 1)
    return _exported("svr", result, svr_outputs(datatype), arrays, params)


@exports(OneClassSVM)
def _one_class_svm(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    coefficients = svm.single_output_coefficients(_dense(estimator.dual_coef_))
    result, arrays, params = _svm_arrays(estimator, prep, coefficients, 1)
    return _exported("one_class_svm", result, one_class_outputs(datatype), arrays, params)


# --- k-means and projections -------------------------------------------------------------


@exports(KMeans, MiniBatchKMeans)
def _kmeans(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    centers_t, sq_norms = kmeans.kmeans_params(estimator.cluster_centers_)
    result = _planned(estimator, prep, centers_t.shape[0])
    outputs = kmeans_outputs(datatype, centers_t.shape[1])
    return _exported("kmeans", result, outputs, {"centers_t": centers_t, "center_sq_norms": sq_norms}, {})


@exports(PCA, TruncatedSVD)
def _projection(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    final = STEP_MAPS[type(estimator)](estimator)
    assert isinstance(final, Projection)
    name = _describe(estimator)
    step_maps = [*_step_maps(prep, name), (name, final)]
    try:
        result = plan(step_maps, final.components_t.shape[0])
    except ValueError as exc:
        raise ValueError(f"tensorwire cannot export Pipeline ending in {name}: {exc}") from None
    # The plan ends in a project stage holding the final projection (composed with any before it): that stage is the kernel.
    last = result.stages[-1]
    assert isinstance(last, ProjectStage)
    own = Plan(result.stages[:-1], last.prefix, result.n_features)
    return _exported("projection", own, projection_outputs(datatype, final.components_t.shape[1]), last.projection.as_arrays(""), {})
