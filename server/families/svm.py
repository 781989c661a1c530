"""Kernel SVMs: kinds "svc" (SVC, NuSVC), "svr" (SVR, NuSVR) and "one_class_svm" (OneClassSVM), their exporters and scorers.

All three compute libsvm's decision values with `kernels.svm.svm_decision` and
finish them per kind. Arrays (float64 unless said; n = the kernel's input width),
besides the input side's (modeling/scorer_support.py, `Inputs`: shift, scale, offset, stages):
    sv [n_sv, n], sv_sq_norms [n_sv], centre [n]        support_vector_params (a linear kernel: one weight row per output)
    coef_t [n_sv, n_coef], block_bounds int64 [n_blocks + 1], block_outputs int64 [n_blocks, n_coef]
    intercept [n_out]                                   n_out = 1, or k (k - 1) / 2 one-vs-one pairs for k > 2 classes
    prob_a, prob_b [n_out]                              svc with probability only: libsvm's Platt parameters
Params (JSON):
    all       kernel ("linear" | "poly" | "rbf" | "sigmoid"), gamma (resolved), coef0, degree, stages
    svc       classes, label_datatype (as linear_classifier), decision_function_shape ("ovr" | "ovo"),
              break_ties (true only where scikit-learn's predict uses it: ovr and k > 2), probability
Outputs: svc predict (labels) [-1], decision_function [-1] (binary), [-1, k] (ovr) or [-1, k (k - 1) / 2] (ovo),
predict_proba [-1, k] (probability only); svr predict [-1]; one_class_svm predict INT64 (+1 / -1) [-1],
decision_function [-1]. Float outputs are in the input's datatype.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from tensorwire.kernels import svm
from tensorwire.server.modeling.export_support import class_labels, dense
from tensorwire.server.modeling.pipelines import Plan, Preprocessing, ProjectStage, exported, fold_into_weights, planned
from tensorwire.server.modeling.registry import Exported, describe, exports, register
from tensorwire.server.modeling.scorer_support import (
    FLOAT_DTYPES,
    LABEL_DTYPES,
    Inputs,
    check_outputs,
    check_request,
    compiles_parallel,
    float_array,
    int_array,
    invalid,
    is_parallel,
    label_array,
    one_row,
)
from tensorwire.server.repository.model_format import Manifest, TensorSpec

SHAPES = ("ovr", "ovo")


def n_pairs(n_classes: int) -> int:
    """Decision values an SVC computes: one per one-vs-one pair, one in all for two classes."""
    return 1 if n_classes == 2 else n_classes * (n_classes - 1) // 2


def svc_outputs(datatype: str, label_datatype: str, n_classes: int, shape: str, probability: bool) -> list[TensorSpec]:
    """The outputs an SVC declares, shaped as scikit-learn returns them."""
    if n_classes == 2:
        decision = [-1]
    else:
        decision = [-1, n_classes if shape == "ovr" else n_pairs(n_classes)]
    outputs = [TensorSpec("predict", label_datatype, [-1]), TensorSpec("decision_function", datatype, decision)]
    if probability:
        outputs.append(TensorSpec("predict_proba", datatype, [-1, n_classes]))
    return outputs


def svr_outputs(datatype: str) -> list[TensorSpec]:
    """The outputs an SVR declares."""
    return [TensorSpec("predict", datatype, [-1])]


def one_class_outputs(datatype: str) -> list[TensorSpec]:
    """The outputs a OneClassSVM declares."""
    return [TensorSpec("predict", "INT64", [-1]), TensorSpec("decision_function", datatype, [-1])]


class SVMDecision:
    """libsvm's decision values [n, n_out] for the (staged and) pre-scaled rows: the part every kernel SVM kind shares."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray], n_out: int) -> None:
        params = manifest.params
        self.inputs = Inputs(manifest, arrays)
        width = self.inputs.width
        kernel = params.get("kernel")
        if kernel not in svm.KERNEL_CODES:
            raise invalid(manifest, f"params.kernel {kernel!r} is not one of {sorted(svm.KERNEL_CODES)}")
        self.kernel_code = svm.KERNEL_CODES[kernel]
        self.gamma, self.coef0 = (self._finite(manifest, name) for name in ("gamma", "coef0"))
        degree = params.get("degree")
        if not isinstance(degree, int) or isinstance(degree, bool) or degree < 0:
            raise invalid(manifest, f"params.degree must be an integer >= 0, not {degree!r}")
        self.degree = degree
        self.sv = float_array(manifest, arrays, "sv", (-1, width))
        n_sv = self.sv.shape[0]
        self.sv_sq_norms = float_array(manifest, arrays, "sv_sq_norms", (n_sv,))
        self.centre = float_array(manifest, arrays, "centre", (width,))
        self.coef_t = float_array(manifest, arrays, "coef_t", (n_sv, -1))
        self.block_bounds = int_array(manifest, arrays, "block_bounds", (-1,))
        self.block_outputs = int_array(manifest, arrays, "block_outputs", (self.block_bounds.shape[0] - 1, self.coef_t.shape[1]))
        self.intercept = float_array(manifest, arrays, "intercept", (n_out,))
        # The kernel indexes with these without bounds checks: a bad file must fail here, not read out of bounds.
        bounds = self.block_bounds
        if bounds.shape[0] < 2 or bounds[0] != 0 or bounds[-1] != n_sv or np.any(np.diff(bounds) < 0):
            raise invalid(manifest, f"block_bounds {bounds.tolist()} do not split {n_sv} support vectors into blocks")
        if np.any(self.block_outputs < -1) or np.any(self.block_outputs >= n_out):
            raise invalid(manifest, f"block_outputs name outputs outside [-1, {n_out})")

    @staticmethod
    def _finite(manifest: Manifest, name: str) -> float:
        value = manifest.params.get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise invalid(manifest, f"params.{name} must be a finite number, not {value!r}")
        return float(value)

    def __call__(self, X: np.ndarray, parallel: bool) -> np.ndarray:
        Xk = self.inputs(X, parallel)
        out = np.empty((X.shape[0], self.intercept.shape[0]))
        kernel = svm.svm_decision_parallel if parallel else svm.svm_decision
        kernel(Xk, self.inputs.shift, self.inputs.scale, self.inputs.offset, self.sv, self.sv_sq_norms, self.centre, self.coef_t,
               self.block_bounds, self.block_outputs, self.intercept, self.kernel_code, self.gamma, self.coef0, self.degree, out)
        return out


class _SVMScorer:
    """Output-name checks and load-time compilation shared by the three kinds."""

    manifest: Manifest
    output_names: frozenset[str]

    def _ready(self, manifest: Manifest, expected: list[TensorSpec]) -> None:
        check_outputs(manifest, expected)
        self.output_names = frozenset(o.name for o in manifest.outputs)
        if compiles_parallel():  # the parallel variants too, where a batch can take them
            self._score(one_row(manifest), [o.name for o in manifest.outputs], parallel=True)

    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        check_request(self.manifest, self.output_names, outputs, X)
        return self._score(X, outputs, is_parallel(X))

    def _score(self, X: np.ndarray, outputs: Sequence[str], parallel: bool) -> list[np.ndarray]:
        raise NotImplementedError


class SVCScorer(_SVMScorer):
    """decision_function from the one-vs-one values (ovr: votes plus scaled confidences); predict by votes or break_ties; Platt probabilities."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray]) -> None:
        self.manifest = manifest
        self.dtype = FLOAT_DTYPES[manifest.input_datatype]
        params = manifest.params
        classes, label_datatype = params.get("classes"), params.get("label_datatype")
        if label_datatype not in LABEL_DTYPES:
            raise invalid(manifest, f"label_datatype {label_datatype!r} is not one of {sorted(LABEL_DTYPES)}")
        if not isinstance(classes, list) or len(classes) < 2:
            raise invalid(manifest, f"classes must list two or more labels, not {classes!r}")
        self.n_classes = len(classes)
        self.labels = label_array(manifest, classes, label_datatype)
        self.shape = params.get("decision_function_shape")
        if self.shape not in SHAPES:
            raise invalid(manifest, f"decision_function_shape {self.shape!r} is not one of {SHAPES}")
        self.break_ties, self.probability = params.get("break_ties"), params.get("probability")
        if not isinstance(self.break_ties, bool) or not isinstance(self.probability, bool):
            raise invalid(manifest, "params.break_ties and params.probability must be true or false")
        if self.break_ties and (self.shape != "ovr" or self.n_classes == 2):
            raise invalid(manifest, "break_ties applies to the ovr shape with more than two classes only")
        n_out = n_pairs(self.n_classes)
        self.decision = SVMDecision(manifest, arrays, n_out)
        if self.probability:
            self.prob_a = float_array(manifest, arrays, "prob_a", (n_out,))
            self.prob_b = float_array(manifest, arrays, "prob_b", (n_out,))
        self._ready(manifest, svc_outputs(manifest.input_datatype, label_datatype, self.n_classes, self.shape, self.probability))

    def _score(self, X: np.ndarray, outputs: Sequence[str], parallel: bool) -> list[np.ndarray]:
        n, k = X.shape[0], self.n_classes
        ovo = self.decision(X, parallel)
        results: dict[str, Any] = {}
        if "predict" in outputs:
            index = np.empty(n, dtype=np.int64)
            if self.break_ties:
                svm.svc_predict_break_ties(ovo, k, index)
            else:
                svm.svc_predict(ovo, k, index)
            results["predict"] = self.labels[index]
        if "decision_function" in outputs:
            if k == 2:
                decision = ovo.reshape(n)
            elif self.shape == "ovr":
                decision = np.empty((n, k))
                svm.svc_ovr_decision(ovo, k, decision)
            else:
                decision = ovo
            results["decision_function"] = decision.astype(self.dtype, copy=False)
        if "predict_proba" in outputs:
            proba = np.empty((n, k))
            svm.svc_predict_proba(ovo, self.prob_a, self.prob_b, k, proba)
            results["predict_proba"] = proba.astype(self.dtype, copy=False)
        return [results[name] for name in outputs]


class SVRScorer(_SVMScorer):
    """predict = the single decision value."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray]) -> None:
        self.manifest = manifest
        self.dtype = FLOAT_DTYPES[manifest.input_datatype]
        self.decision = SVMDecision(manifest, arrays, 1)
        self._ready(manifest, svr_outputs(manifest.input_datatype))

    def _score(self, X: np.ndarray, outputs: Sequence[str], parallel: bool) -> list[np.ndarray]:
        predict = self.decision(X, parallel).reshape(X.shape[0]).astype(self.dtype, copy=False)
        return [predict for _ in outputs]


class OneClassSVMScorer(_SVMScorer):
    """decision_function = the single decision value; predict = +1 where it is > 0, else -1."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray]) -> None:
        self.manifest = manifest
        self.dtype = FLOAT_DTYPES[manifest.input_datatype]
        self.decision = SVMDecision(manifest, arrays, 1)
        self._ready(manifest, one_class_outputs(manifest.input_datatype))

    def _score(self, X: np.ndarray, outputs: Sequence[str], parallel: bool) -> list[np.ndarray]:
        decision = self.decision(X, parallel)
        results: dict[str, np.ndarray] = {}
        if "predict" in outputs:
            labels = np.empty(X.shape[0], dtype=np.int64)
            svm.one_class_predict(decision, labels)
            results["predict"] = labels
        results["decision_function"] = decision.reshape(X.shape[0]).astype(self.dtype, copy=False)
        return [results[name] for name in outputs]


@register("svc")
def svc(manifest: Manifest, arrays: dict[str, np.ndarray]) -> SVCScorer:
    return SVCScorer(manifest, arrays)


@register("svr")
def svr(manifest: Manifest, arrays: dict[str, np.ndarray]) -> SVRScorer:
    return SVRScorer(manifest, arrays)


@register("one_class_svm")
def one_class_svm(manifest: Manifest, arrays: dict[str, np.ndarray]) -> OneClassSVMScorer:
    return OneClassSVMScorer(manifest, arrays)


# --- exporters ------------------------------------------------------------------


def _svm_arrays(
    estimator: Any, prep: Preprocessing | None, coefficients: tuple[np.ndarray, np.ndarray, np.ndarray], n_out: int
) -> tuple[Plan, dict[str, np.ndarray], dict[str, Any]]:
    """(plan, arrays, params) for svm_decision: support vectors, coefficients, intercept and kernel parameters."""
    name = describe(estimator)
    kernel = estimator.kernel
    if not isinstance(kernel, str) or kernel not in svm.KERNEL_CODES:
        raise ValueError(
            f"tensorwire cannot export {name}: kernel {kernel!r} is not one of {sorted(svm.KERNEL_CODES)} "
            "(a precomputed or callable kernel needs the training rows or Python code at scoring time)"
        )
    support_vectors = dense(estimator.support_vectors_)
    n_features = support_vectors.shape[1]
    result = planned(estimator, prep, n_features)
    coef_t, bounds, outputs = coefficients
    intercept = np.asarray(estimator.intercept_, dtype=np.float64).reshape(n_out)
    if kernel == "linear":
        # sum_s a_s (x . sv_s) = x . w: one weight row per output; then every linear step after the last stage folds in.
        sv, sq, centre, coef_t, bounds, outputs = svm.linear_kernel_weights(support_vectors, coef_t, bounds, outputs, n_out)
        if result.stages and isinstance(result.stages[-1], ProjectStage):
            last = result.stages[-1]
            a = result.affine
            weights, intercept = sv * a.scale, intercept + sv @ (a.offset - a.shift * a.scale)
            sv, intercept = fold_into_weights(last.projection, weights, intercept)
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


@exports("sklearn.svm.SVC", "sklearn.svm.NuSVC", kind="svc")
def _svc(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    name = describe(estimator)
    label_datatype, labels = class_labels(estimator.classes_, name)
    k = len(labels)
    shape = estimator.decision_function_shape
    if estimator.break_ties and shape == "ovo":
        raise ValueError(f"tensorwire cannot export {name}: break_ties=True with decision_function_shape='ovo' (scikit-learn's predict refuses it too)")
    n_out = n_pairs(k)
    coefficients = svm.svc_coefficients(dense(estimator.dual_coef_), estimator.n_support_)
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
    return exported("svc", result, svc_outputs(datatype, label_datatype, k, shape, probability), arrays, params)


@exports("sklearn.svm.SVR", "sklearn.svm.NuSVR", kind="svr")
def _svr(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    coefficients = svm.single_output_coefficients(dense(estimator.dual_coef_))
    result, arrays, params = _svm_arrays(estimator, prep, coefficients, 1)
    return exported("svr", result, svr_outputs(datatype), arrays, params)


@exports("sklearn.svm.OneClassSVM", kind="one_class_svm")
def _one_class_svm(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    coefficients = svm.single_output_coefficients(dense(estimator.dual_coef_))
    result, arrays, params = _svm_arrays(estimator, prep, coefficients, 1)
    return exported("one_class_svm", result, one_class_outputs(datatype), arrays, params)
