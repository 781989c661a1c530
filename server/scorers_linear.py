"""Scorers for linear models: kinds "linear_regressor" and "linear_classifier".

Arrays: "coef" float64 [n_outputs, n_features] and "intercept" float64 [n_outputs].
Params (JSON):
    linear_regressor   multi_target: bool (predict is [n, k] when true, [n] when false)
    linear_classifier  classes: list of labels, in estimator.classes_ order
                       label_datatype: "INT64" | "FP64" | "BOOL" | "BYTES" (strings, utf-8)
                       link: a name in tensorwire.kernels.linear.LINKS
A binary classifier has one coef row and two classes.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from tensorwire.kernels import linear
from tensorwire.server.model_format import MODEL_FILE, Manifest, ModelFormatError, TensorSpec
from tensorwire.server.scoring import ResponseWriter, register

FLOAT_DTYPES: dict[str, type[np.floating[Any]]] = {"FP32": np.float32, "FP64": np.float64}
LABEL_DTYPES: dict[str, Any] = {"INT64": np.int64, "FP64": np.float64, "BOOL": np.bool_, "BYTES": object}

# Links that need one coef row (binary) or one row per class (multiclass); modified_huber serves both.
BINARY_LINKS = frozenset({"none", "logistic", "modified_huber"})
MULTICLASS_LINKS = frozenset(linear.LINKS) - {"logistic"}
# What linear_classifier_response writes for each output a request asks for
WRITES = {"predict": linear.WRITE_LABELS, "decision_function": linear.WRITE_DECISION, "predict_proba": linear.WRITE_PROBA}


def regressor_outputs(datatype: str, n_targets: int, multi_target: bool) -> list[TensorSpec]:
    """The outputs a linear regressor declares."""
    return [TensorSpec("predict", datatype, [-1, n_targets] if multi_target else [-1])]


def classifier_outputs(datatype: str, label_datatype: str, n_classes: int, has_proba: bool) -> list[TensorSpec]:
    """The outputs a linear classifier declares, shaped as scikit-learn returns them."""
    outputs = [
        TensorSpec("predict", label_datatype, [-1]),
        TensorSpec("decision_function", datatype, [-1] if n_classes == 2 else [-1, n_classes]),
    ]
    if has_proba:
        outputs.append(TensorSpec("predict_proba", datatype, [-1, n_classes]))
    return outputs


def _invalid(manifest: Manifest, problem: str) -> ModelFormatError:
    return ModelFormatError(MODEL_FILE, f"{manifest.kind} model ({manifest.estimator}): {problem}")


def _parameters(manifest: Manifest, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """coef and intercept as read-only float64 C arrays, checked against the input width."""
    try:
        coef, intercept = arrays["coef"], arrays["intercept"]
    except KeyError as exc:
        raise _invalid(manifest, f"array {exc} is missing") from None
    if coef.ndim != 2 or coef.shape[1] != manifest.n_features or intercept.shape != coef.shape[:1]:
        raise _invalid(
            manifest,
            f"coef {list(coef.shape)} and intercept {list(intercept.shape)} do not fit "
            f"{manifest.n_features} input features",
        )
    coef = np.ascontiguousarray(coef, dtype=np.float64)
    intercept = np.ascontiguousarray(intercept, dtype=np.float64)
    # One numba specialisation for parameters: read-only, like request tensors.
    coef.setflags(write=False)
    intercept.setflags(write=False)
    return coef, intercept


def _check_outputs(manifest: Manifest, expected: list[TensorSpec]) -> None:
    if manifest.outputs != expected:
        raise _invalid(manifest, f"outputs {manifest.outputs} differ from what this model produces: {expected}")


def _check_request(manifest: Manifest, known: Collection[str], outputs: Sequence[str], X: np.ndarray) -> None:
    """Every output asked for is one of `known`, and X has the model's width (what every scorer checks first)."""
    for name in outputs:
        if name not in known:
            raise _unknown_output(manifest, name)
    # The kernels index coef by X's columns without bounds checks: a wrong width must never reach them.
    if X.ndim != 2 or X.shape[1] != manifest.n_features:
        raise ValueError(f"model ({manifest.estimator}) expects input [-1, {manifest.n_features}], got {list(X.shape)}")


def _unknown_output(manifest: Manifest, name: str) -> ValueError:
    return ValueError(
        f"model ({manifest.estimator}) has no output '{name}' (it has {[o.name for o in manifest.outputs]})"
    )


class LinearRegressorScorer:
    """predict = X @ coef.T + intercept."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray]) -> None:
        self.manifest = manifest
        self.coef, self.intercept = _parameters(manifest, arrays)
        self.dtype = FLOAT_DTYPES[manifest.input_datatype]
        multi_target = manifest.params.get("multi_target")
        if not isinstance(multi_target, bool):
            raise _invalid(manifest, f"params.multi_target must be true or false, not {multi_target!r}")
        self.multi_target = multi_target
        if not self.multi_target and self.coef.shape[0] != 1:
            raise _invalid(manifest, f"a single-target regressor has one coef row, not {self.coef.shape[0]}")
        _check_outputs(manifest, regressor_outputs(manifest.input_datatype, self.coef.shape[0], self.multi_target))

    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        _check_request(self.manifest, ("predict",), outputs, X)
        out = np.empty((X.shape[0], self.coef.shape[0]), dtype=self.dtype)
        linear.score_linear_regressor(X, self.coef, self.intercept, out)
        predict = out if self.multi_target else out.reshape(X.shape[0])
        return [predict for _ in outputs]

    def response_writer(self, outputs: Sequence[str], template: np.ndarray, offsets: Sequence[int]) -> ResponseWriter:
        """Whole responses to requests of one plan (server/request_plans.py) in one kernel call: `template`
        is the response with its tensors' bytes zero, `offsets` where each output's bytes go."""
        _check_request(self.manifest, ("predict",), outputs, np.empty((1, self.manifest.n_features), self.dtype))
        (predict_at,) = offsets  # outputs are never asked twice
        return functools.partial(linear.linear_regressor_response, self.coef, self.intercept, template, predict_at)


class LinearClassifierScorer:
    """decision_function = X @ coef.T + intercept; predict and predict_proba derive from it."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray]) -> None:
        self.manifest = manifest
        self.coef, self.intercept = _parameters(manifest, arrays)
        self.dtype = FLOAT_DTYPES[manifest.input_datatype]
        params = manifest.params
        label_datatype, link, classes = params.get("label_datatype"), params.get("link"), params.get("classes")
        if label_datatype not in LABEL_DTYPES:
            raise _invalid(manifest, f"label_datatype {label_datatype!r} is not one of {sorted(LABEL_DTYPES)}")
        if not isinstance(classes, list) or len(classes) < 2:
            raise _invalid(manifest, f"classes must list two or more labels, not {classes!r}")
        self.n_classes = len(classes)
        binary = self.n_classes == 2
        allowed = BINARY_LINKS if binary else MULTICLASS_LINKS
        if link not in allowed:
            raise _invalid(manifest, f"link {link!r} is not one of {sorted(allowed)} for {self.n_classes} classes")
        if self.coef.shape[0] != (1 if binary else self.n_classes):
            raise _invalid(manifest, f"{self.coef.shape[0]} coef rows for {self.n_classes} classes")
        self.link_code = linear.LINKS[link]
        self.labels = self._labels(manifest, classes, label_datatype)
        self.binary = binary
        has_proba = link != "none"
        _check_outputs(manifest, classifier_outputs(manifest.input_datatype, label_datatype, self.n_classes, has_proba))
        self.output_names = frozenset(o.name for o in manifest.outputs)

    @staticmethod
    def _labels(manifest: Manifest, classes: list[Any], label_datatype: str) -> np.ndarray:
        try:
            if label_datatype == "BYTES":
                labels = np.empty(len(classes), dtype=object)
                labels[:] = [str(c).encode("utf-8") for c in classes]
            else:
                labels = np.array(classes, dtype=LABEL_DTYPES[label_datatype])
        except (TypeError, ValueError, OverflowError) as exc:
            raise _invalid(manifest, f"classes do not fit label_datatype {label_datatype}: {exc}") from None
        labels.setflags(write=False)
        return labels

    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        _check_request(self.manifest, self.output_names, outputs, X)
        n = X.shape[0]
        want_proba = "predict_proba" in outputs
        decision = np.empty((n, self.coef.shape[0]), dtype=self.dtype)
        proba = np.empty((n, self.n_classes if want_proba else 0), dtype=self.dtype)
        label_index = np.empty(n, dtype=np.int64)
        link_code = self.link_code if want_proba else linear.LINK_NONE
        linear.score_linear_classifier(X, self.coef, self.intercept, link_code, decision, proba, label_index)
        results = {
            "decision_function": decision.reshape(n) if self.binary else decision,
            "predict_proba": proba,
        }
        if "predict" in outputs:
            results["predict"] = self.labels[label_index]  # fancy indexing: ~10x cheaper than np.take here
        return [results[name] for name in outputs]

    def response_writer(self, outputs: Sequence[str], template: np.ndarray, offsets: Sequence[int]) -> ResponseWriter | None:
        """As LinearRegressorScorer.response_writer; None for string labels (their size varies)."""
        if self.labels.dtype == object:
            return None
        _check_request(self.manifest, self.output_names, outputs, np.empty((1, self.manifest.n_features), self.dtype))
        layout = np.array([(WRITES[name], at) for name, at in zip(outputs, offsets)], dtype=np.int64).reshape(-1, 2)
        link_code = self.link_code if "predict_proba" in outputs else linear.LINK_NONE
        return functools.partial(linear.linear_classifier_response, self.coef, self.intercept, link_code, self.labels, template, layout)


@register("linear_regressor")
def linear_regressor(manifest: Manifest, arrays: dict[str, np.ndarray]) -> LinearRegressorScorer:
    return LinearRegressorScorer(manifest, arrays)


@register("linear_classifier")
def linear_classifier(manifest: Manifest, arrays: dict[str, np.ndarray]) -> LinearClassifierScorer:
    return LinearClassifierScorer(manifest, arrays)
