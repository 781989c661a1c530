"""Calibrated classifiers: kind "calibrated_classifier" (scikit-learn's CalibratedClassifierCV), its exporter and scorer.

A CalibratedClassifierCV holds one or more calibrated classifiers (one per cv fold with ensemble=True, one with
ensemble=False): each a fitted classifier (any classifier tensorwire exports, or a Pipeline ending in one) and its
calibrators. Each classifier is exported through the registry (`modeling.export.export_nested`) as a model of its own
kind with a float64 input, and scored by that kind's scorer: scikit-learn computes the decision values it calibrates in
float64 whatever the input's dtype, so an fp32 model's rows are widened first. The calibration is numpy's arithmetic in
scikit-learn's own order (`_CalibratedClassifier.predict_proba`):

- each classifier's response: decision_function where it has one, else predict_proba; a binary classifier's is one
  column (its decision values, or the probability of its second class);
- calibrator j maps response column j to the probability of class `columns[j]` (scikit-learn pairs calibrators with
  response columns and the classifier's classes by position): "sigmoid" expit(-(a x + b)), "isotonic" linear
  interpolation between thresholds, x clipped to their range (np.interp for float64 thresholds, scipy's interp1d
  formula for float32 ones);
- two classes: p0 = 1 - p1; more: each row divided by its sum, or uniform where the sum is zero; then values in
  (1, 1 + 1e-5] become 1;
- predict_proba is the mean over the calibrated classifiers, predict the class of its row-wise argmax.

Arrays: member{i}_<name>: classifier i's own arrays; calibrator{i}_a, calibrator{i}_b float64 [n_calibrators_i]
(sigmoid), calibrator{i}_{j}_x, calibrator{i}_{j}_y float64 or float32 [n_thresholds] (isotonic: X_thresholds_,
y_thresholds_, in their fitted dtype).
Params (JSON): classes, label_datatype (as linear_classifier), method ("sigmoid" | "isotonic"), members: a list of
{kind, estimator, params, outputs (classifier i's manifest, input FP64), response ("decision_function" |
"predict_proba"), columns (the class index each calibrator writes)}.
Outputs: predict (labels) [-1], predict_proba [-1, n_classes] in the input's float datatype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from tensorwire.server.modeling.export_support import class_labels
from tensorwire.server.modeling.pipelines import Preprocessing
from tensorwire.server.modeling.registry import Exported, Scorer, build_scorer, describe, exports, register
from tensorwire.server.modeling.scorer_support import (
    FLOAT_DTYPES,
    LABEL_DTYPES,
    check_outputs,
    check_request,
    invalid,
    label_array,
    one_row,
)
from tensorwire.server.repository.model_format import (
    INPUT_NAME,
    MODEL_FILE,
    Manifest,
    ModelFormatError,
    TensorSpec,
    array_spec,
)

METHODS = ("sigmoid", "isotonic")
RESPONSES = ("decision_function", "predict_proba")
INNER_DATATYPE = "FP64"  # the classifiers' input and response datatype, whatever the model's
CLIP_ABOVE_ONE = 1e-5  # scikit-learn sets probabilities in (1, 1 + this] to 1


def calibrated_outputs(datatype: str, label_datatype: str, n_classes: int) -> list[TensorSpec]:
    """The outputs a calibrated classifier declares."""
    return [TensorSpec("predict", label_datatype, [-1]), TensorSpec("predict_proba", datatype, [-1, n_classes])]


def response_width(spec: TensorSpec) -> int:
    """The response columns scikit-learn calibrates from an output: one for a binary classifier's, else its width."""
    if spec.shape == [-1]:
        return 1
    width = spec.shape[1] if len(spec.shape) == 2 else 0
    return 1 if spec.name == "predict_proba" and width == 2 else width


# --- calibrators --------------------------------------------------------------------------


Calibrator = Callable[[np.ndarray], np.ndarray]


def sigmoid(a: float, b: float) -> Calibrator:
    """_SigmoidCalibration.predict: expit(-(a T + b)), as scipy's expit computes it (1 / (1 + exp(-x)): the same bits)."""

    def predict(T: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # exp(-x) = inf for x < -709 gives 0, as expit does, without a warning
            return 1.0 / (1.0 + np.exp(a * T + b))

    return predict


def isotonic(x: np.ndarray, y: np.ndarray) -> Calibrator:
    """IsotonicRegression(out_of_bounds="clip").predict: T in the thresholds' dtype, clipped to their range, interpolated."""

    def predict(T: np.ndarray) -> np.ndarray:
        T = T.astype(x.dtype, copy=False)
        T = np.clip(T, x[0], x[-1])
        if y.shape[0] == 1:
            return y.repeat(T.shape[0]).astype(T.dtype, copy=False)
        if x.dtype == np.float64:
            return np.interp(T, x, y)  # interp1d delegates float64 data to np.interp
        hi = np.searchsorted(x, T).clip(1, x.shape[0] - 1)  # interp1d._call_linear, in the thresholds' dtype
        lo = hi - 1
        slope = (y[hi] - y[lo]) / (x[hi] - x[lo])
        return (slope * (T - x[lo]) + y[lo]).astype(T.dtype, copy=False)

    return predict


# --- scorer ---------------------------------------------------------------------------------


class CalibratedMember:
    """One calibrated classifier: its own scorer (built through the registry), the response it gives, its calibrators."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray], i: int, spec: Any, method: str, n_classes: int) -> None:
        if not isinstance(spec, dict):
            raise invalid(manifest, f"members[{i}] must be an object, not {spec!r}")
        self.n_classes = n_classes
        inner = self._manifest(manifest, arrays, i, spec)
        prefix = f"member{i}_"
        inner_arrays = {name[len(prefix):]: a for name, a in arrays.items() if name.startswith(prefix)}
        try:
            inner.check(MODEL_FILE)
            self.scorer: Scorer = build_scorer(inner, inner_arrays, MODEL_FILE)
        except ModelFormatError as exc:
            raise invalid(manifest, f"members[{i}] ({inner.estimator}): {exc.problem}") from None
        response = spec.get("response")
        if not isinstance(response, str) or response not in RESPONSES:
            raise invalid(manifest, f"members[{i}].response {response!r} is not one of {RESPONSES}")
        self.response = response
        declared = {o.name: o for o in inner.outputs}
        if self.response not in declared or declared[self.response].datatype != INNER_DATATYPE:
            raise invalid(manifest, f"members[{i}] ({inner.estimator}) has no {INNER_DATATYPE} output '{self.response}'")
        self.width = response_width(declared[self.response])
        self.binary_proba = self.response == "predict_proba" and declared[self.response].shape == [-1, 2]
        columns = spec.get("columns")
        if (
            not isinstance(columns, list) or not 1 <= len(columns) <= self.width
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < n_classes for c in columns)
            or len(set(columns)) != len(columns) or (n_classes == 2 and columns != [1])
        ):
            raise invalid(manifest, f"members[{i}].columns {columns!r} do not map {self.width} response columns to {n_classes} classes")
        self.columns: list[int] = columns
        self.calibrators = [self._calibrator(manifest, arrays, i, j, method) for j in range(len(columns))]

    @staticmethod
    def _manifest(manifest: Manifest, arrays: dict[str, np.ndarray], i: int, spec: dict[str, Any]) -> Manifest:
        """Classifier i's own manifest: the model's width with a float64 input, its kind, params, outputs and arrays."""
        kind, estimator, params, outputs = spec.get("kind"), spec.get("estimator"), spec.get("params"), spec.get("outputs")
        if not isinstance(kind, str) or not isinstance(estimator, str) or not isinstance(params, dict) or not isinstance(outputs, list):
            raise invalid(manifest, f"members[{i}] needs kind, estimator (strings), params (an object) and outputs (a list)")
        try:
            specs = [TensorSpec(str(o["name"]), str(o["datatype"]), [int(d) for d in o["shape"]]) for o in outputs]
        except (KeyError, TypeError, ValueError) as exc:
            raise invalid(manifest, f"members[{i}].outputs are malformed: {exc!r}") from None
        prefix = f"member{i}_"
        return Manifest(
            kind=kind,
            estimator=estimator,
            inputs=[TensorSpec(INPUT_NAME, INNER_DATATYPE, [-1, manifest.n_features])],
            outputs=specs,
            arrays={name[len(prefix):]: array_spec(a) for name, a in arrays.items() if name.startswith(prefix)},
            params=params,
        )

    @staticmethod
    def _calibrator(manifest: Manifest, arrays: dict[str, np.ndarray], i: int, j: int, method: str) -> Calibrator:
        if method == "sigmoid":
            ab = []
            for part in ("a", "b"):
                name = f"calibrator{i}_{part}"
                values = arrays.get(name)
                if values is None or values.ndim != 1 or values.dtype != np.float64 or values.shape[0] <= j:
                    raise invalid(manifest, f"array '{name}' must be float64 with one value per calibrator of member {i}")
                value = float(values[j])
                if not math.isfinite(value):
                    raise invalid(manifest, f"array '{name}' holds NaN or infinity")
                ab.append(value)
            return sigmoid(ab[0], ab[1])
        x, y = arrays.get(f"calibrator{i}_{j}_x"), arrays.get(f"calibrator{i}_{j}_y")
        if (
            x is None or y is None or x.ndim != 1 or x.shape != y.shape or x.shape[0] < 1
            or x.dtype != y.dtype or x.dtype not in (np.float32, np.float64)
        ):
            raise invalid(manifest, f"calibrator {j} of member {i}: arrays calibrator{i}_{j}_x and _y must be float32 or float64 of one length")
        x, y = np.array(x), np.array(y)  # private copies: a few thresholds, read at every request
        if not (np.isfinite(x).all() and np.isfinite(y).all() and np.all(np.diff(x) > 0)):
            raise invalid(manifest, f"calibrator {j} of member {i}: thresholds must be finite and strictly increasing")
        return isotonic(x, y)

    def proba(self, X: np.ndarray) -> np.ndarray:
        """_CalibratedClassifier.predict_proba for float64 rows."""
        (response,) = self.scorer.score(X, [self.response])
        n, k = X.shape[0], self.n_classes
        predictions = response[:, -1:] if self.binary_proba else response.reshape(n, -1)
        proba = np.zeros((n, k))
        for j, (column, calibrator) in enumerate(zip(self.columns, self.calibrators, strict=True)):
            proba[:, column] = calibrator(predictions[:, j])
        if k == 2:
            proba[:, 0] = 1.0 - proba[:, 1]
        else:
            denominator = np.sum(proba, axis=1)[:, np.newaxis]
            uniform = np.full_like(proba, 1 / k)
            proba = np.divide(proba, denominator, out=uniform, where=denominator != 0)
        proba[(1.0 < proba) & (proba <= 1.0 + CLIP_ABOVE_ONE)] = 1.0
        return proba


class CalibratedClassifierScorer:
    """predict_proba = the mean of the members' calibrated probabilities; predict = the class of its argmax."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray]) -> None:
        self.manifest = manifest
        self.dtype = FLOAT_DTYPES[manifest.input_datatype]
        params = manifest.params
        classes, label_datatype, method, members = (params.get(p) for p in ("classes", "label_datatype", "method", "members"))
        if label_datatype not in LABEL_DTYPES:
            raise invalid(manifest, f"label_datatype {label_datatype!r} is not one of {sorted(LABEL_DTYPES)}")
        if not isinstance(classes, list) or len(classes) < 2:
            raise invalid(manifest, f"classes must list two or more labels, not {classes!r}")
        if method not in METHODS:
            raise invalid(manifest, f"method {method!r} is not one of {METHODS}")
        if not isinstance(members, list) or not members:
            raise invalid(manifest, "members must list one or more calibrated classifiers")
        self.labels = label_array(manifest, classes, label_datatype)
        self.n_classes = len(classes)
        self.members = [CalibratedMember(manifest, arrays, i, spec, method, self.n_classes) for i, spec in enumerate(members)]
        check_outputs(manifest, calibrated_outputs(manifest.input_datatype, label_datatype, self.n_classes))
        self.output_names = frozenset(o.name for o in manifest.outputs)
        self.score(one_row(manifest), ["predict", "predict_proba"])  # every member's kernels compiled, every calibrator run

    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        check_request(self.manifest, self.output_names, outputs, X)
        rows = np.ascontiguousarray(X, dtype=np.float64)  # an fp32 model's rows, widened exactly
        mean = np.zeros((X.shape[0], self.n_classes))
        for member in self.members:
            mean += member.proba(rows)
        mean /= len(self.members)
        results: dict[str, np.ndarray] = {}
        if "predict" in outputs:
            results["predict"] = self.labels[np.argmax(mean, axis=1)]
        if "predict_proba" in outputs:
            results["predict_proba"] = mean.astype(self.dtype, copy=False)
        return [results[name] for name in outputs]


@register("calibrated_classifier")
def calibrated_classifier(manifest: Manifest, arrays: dict[str, np.ndarray]) -> CalibratedClassifierScorer:
    return CalibratedClassifierScorer(manifest, arrays)


# --- exporter -------------------------------------------------------------------------------


def _response_method(classifier: Any) -> str | None:
    """What scikit-learn calibrates: decision_function where the classifier has one, else predict_proba."""
    for name in RESPONSES:
        if getattr(classifier, name, None) is not None:
            return name
    return None


def _calibrator_arrays(calibrators: Sequence[Any], method: str, i: int, where: str) -> dict[str, np.ndarray]:
    from sklearn.isotonic import IsotonicRegression

    if method == "sigmoid":
        if any(type(c).__name__ != "_SigmoidCalibration" for c in calibrators):
            raise TypeError(f"tensorwire cannot export {where}: method 'sigmoid' with calibrators {[type(c).__name__ for c in calibrators]}")
        a = np.array([float(c.a_) for c in calibrators], dtype=np.float64)
        b = np.array([float(c.b_) for c in calibrators], dtype=np.float64)
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise ValueError(f"tensorwire cannot export {where}: a sigmoid calibrator's parameters are NaN or infinite")
        return {f"calibrator{i}_a": a, f"calibrator{i}_b": b}
    arrays: dict[str, np.ndarray] = {}
    for j, c in enumerate(calibrators):
        if type(c) is not IsotonicRegression or c.out_of_bounds != "clip":
            raise TypeError(f"tensorwire cannot export {where}: method 'isotonic' needs IsotonicRegression(out_of_bounds='clip') calibrators")
        x, y = np.array(c.X_thresholds_), np.array(c.y_thresholds_)
        if (
            x.ndim != 1 or x.shape != y.shape or x.shape[0] < 1 or x.dtype != y.dtype or x.dtype not in (np.float32, np.float64)
            or not (np.isfinite(x).all() and np.isfinite(y).all() and np.all(np.diff(x) > 0))
            or x[0] != c.X_min_ or x[-1] != c.X_max_
        ):
            raise ValueError(f"tensorwire cannot export {where}: isotonic calibrator {j} has thresholds tensorwire cannot reproduce")
        arrays[f"calibrator{i}_{j}_x"], arrays[f"calibrator{i}_{j}_y"] = x, y
    return arrays


@exports("sklearn.calibration.CalibratedClassifierCV", kind="calibrated_classifier")
def _calibrated_classifier_cv(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    from sklearn.frozen import FrozenEstimator

    from tensorwire.server.modeling.export import export_nested  # it imports scikit-learn: exporting only

    where = describe(estimator)
    method = estimator.method
    if method not in METHODS:
        raise ValueError(
            f"tensorwire cannot export {where}: method {method!r} is not supported (only {', '.join(map(repr, METHODS))}): "
            "scikit-learn's temperature scaling decides per batch whether the responses are probabilities (all in [0, 1], "
            "rows summing to 1), so a row's answer would depend on the rows batched with it"
        )
    label_datatype, labels = class_labels(estimator.classes_, where)
    classes = np.asarray(estimator.classes_)
    k = len(labels)
    members = list(estimator.calibrated_classifiers_)
    arrays: dict[str, np.ndarray] = {}
    member_params: list[dict[str, Any]] = []
    n_features: int | None = None
    for i, member in enumerate(members):
        at = f"{where} (calibrated classifier {i + 1} of {len(members)})"
        classifier = member.estimator
        response = _response_method(classifier)
        while isinstance(classifier, FrozenEstimator):  # a prefit classifier: FrozenEstimator only delegates to it
            classifier = classifier.estimator
        if response is None:
            raise TypeError(f"tensorwire cannot export {at}: {type(classifier).__name__} has neither decision_function nor predict_proba")
        if member.method != method:
            raise ValueError(f"tensorwire cannot export {at}: it calibrates with {member.method!r}, the model with {method!r}")
        try:
            inner, name = export_nested(classifier, INNER_DATATYPE, prep)
        except (TypeError, ValueError) as exc:
            reason = str(exc).removeprefix("tensorwire cannot export ")
            raise (TypeError if isinstance(exc, TypeError) else ValueError)(f"tensorwire cannot export {at}: {reason}") from None
        declared = {o.name: o for o in inner.outputs}
        if response not in declared:
            raise ValueError(
                f"tensorwire cannot export {at}: scikit-learn calibrates its {response}, which tensorwire's export of {name} "
                f"does not give (it gives {sorted(declared)})"
            )
        inner_classes = np.asarray(classifier.classes_)
        positions = np.searchsorted(classes, inner_classes)
        if np.any(positions >= k) or not np.array_equal(classes[np.minimum(positions, k - 1)], inner_classes):
            raise ValueError(f"tensorwire cannot export {at}: its classes {inner_classes.tolist()} are not among the model's")
        # scikit-learn zips the classifier's classes, its response columns and the calibrators: the shortest decides.
        n_calibrated = min(len(positions), response_width(declared[response]), len(member.calibrators))
        columns = [int(p) + (1 if k == 2 else 0) for p in positions[:n_calibrated]]
        if n_calibrated < 1 or any(c >= k for c in columns):
            raise ValueError(f"tensorwire cannot export {at}: its calibrators do not map onto the model's {k} classes")
        if n_features is not None and inner.n_features != n_features:
            raise ValueError(f"tensorwire cannot export {at}: it reads {inner.n_features} features, the first reads {n_features}")
        n_features = inner.n_features
        arrays.update({f"member{i}_{a}": v for a, v in inner.arrays.items()})
        arrays.update(_calibrator_arrays(member.calibrators[:n_calibrated], method, i, at))
        member_params.append({
            "kind": inner.kind, "estimator": name, "params": inner.params, "outputs": [asdict(o) for o in inner.outputs],
            "response": response, "columns": columns,
        })
    if n_features is None:
        raise ValueError(f"tensorwire cannot export {where}: it holds no calibrated classifier")
    return Exported(
        kind="calibrated_classifier",
        n_features=n_features,
        outputs=calibrated_outputs(datatype, label_datatype, k),
        arrays=arrays,
        params={"classes": labels, "label_datatype": label_datatype, "method": method, "members": member_params},
    )
