"""Linear models: kinds "linear_regressor" and "linear_classifier", their exporters and their scorers.

Arrays: "coef" float64 [n_outputs, n_features] and "intercept" float64 [n_outputs];
        "contributions_mean" float64 [n_features], optional: the training mean the `contributions` output
        (exact interventional SHAP values, coef_j (x_j - mean_j), then the expected value coef . mean + intercept)
        measures from; the model declares that output exactly when it has this array.
Params (JSON):
    linear_regressor   multi_target: bool (predict is [n, k] when true, [n] when false)
    linear_classifier  classes: list of labels, in estimator.classes_ order
                       label_datatype: "INT64" | "FP64" | "BOOL" | "BYTES" (strings, utf-8)
                       link: a name in tensorwire.kernels.linear.LINKS
A binary classifier has one coef row and two classes.

Contributions explain the raw input columns (the pipeline's scalers and projections are folded into coef) and need
the training mean: from export(..., background=X_train), else from a StandardScaler(with_mean=True) that only
per-feature scalers precede; without either the model has no `contributions` output and export warns.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tensorwire.kernels import linear
from tensorwire.server.modeling.export_support import class_labels, refuse_multilabel
from tensorwire.server.modeling.pipelines import Preprocessing
from tensorwire.server.modeling.registry import ClassTable, Exported, ResponseWriter, describe, exports, register
from tensorwire.server.modeling.scorer_support import FLOAT_DTYPES, LABEL_DTYPES, check_outputs, check_request, float_array, invalid, label_array
from tensorwire.server.repository.model_format import Manifest, TensorSpec

if TYPE_CHECKING:  # estimator types are registered by dotted path: a serving process never imports scikit-learn
    from sklearn.multiclass import OneVsRestClassifier

# Links that need one coef row (binary) or one row per class (multiclass); modified_huber serves both.
BINARY_LINKS = frozenset({"none", "logistic", "modified_huber"})


MULTICLASS_LINKS = frozenset(linear.LINKS) - {"logistic"}


# What linear_classifier_response writes for each output a request asks for
WRITES = {"predict": linear.WRITE_LABELS, "decision_function": linear.WRITE_DECISION, "predict_proba": linear.WRITE_PROBA}


def contributions_output(datatype: str, n_outputs: int, n_features: int) -> TensorSpec:
    """Per feature its contribution, then the expected value: one row per decision column when there are several
    (XGBoost's pred_contribs layout), so each row sums to that column's decision value."""
    return TensorSpec("contributions", datatype, [-1, n_features + 1] if n_outputs == 1 else [-1, n_outputs, n_features + 1])


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


def _parameters(manifest: Manifest, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """coef and intercept as read-only float64 C arrays, checked against the input width."""
    try:
        coef, intercept = arrays["coef"], arrays["intercept"]
    except KeyError as exc:
        raise invalid(manifest, f"array {exc} is missing") from None
    if coef.ndim != 2 or coef.shape[1] != manifest.n_features or intercept.shape != coef.shape[:1]:
        raise invalid(
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


class Contributions:
    """Exact interventional SHAP values of a linear model under feature independence (what shap.LinearExplainer gives):
    coef_j (x_j - mean_j) for each feature j, then the expected value coef . mean + intercept."""

    def __init__(self, manifest: Manifest, coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray) -> None:
        if not np.isfinite(mean).all():
            raise invalid(manifest, "array 'contributions_mean' holds NaN or infinity")
        self.coef, self.mean = coef, mean
        self.expected = coef @ mean + intercept
        self.dtype = FLOAT_DTYPES[manifest.input_datatype]

    def outputs(self, datatype: str) -> list[TensorSpec]:
        return [contributions_output(datatype, *self.coef.shape)]

    def __call__(self, X: np.ndarray) -> np.ndarray:
        n, m = X.shape
        k = self.coef.shape[0]
        out = np.empty((n, k, m + 1), dtype=self.dtype)
        np.multiply((X - self.mean)[:, None, :], self.coef, out=out[:, :, :m])  # in float64, rounded once into out
        out[:, :, m] = self.expected
        return out.reshape(n, m + 1) if k == 1 else out


def _contributions(manifest: Manifest, arrays: dict[str, np.ndarray], coef: np.ndarray, intercept: np.ndarray) -> Contributions | None:
    """The model's contributions, when it stores the mean they measure from."""
    if "contributions_mean" not in arrays:
        return None
    return Contributions(manifest, coef, intercept, float_array(manifest, arrays, "contributions_mean", (manifest.n_features,)))


class LinearRegressorScorer:
    """predict = X @ coef.T + intercept."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray]) -> None:
        self.manifest = manifest
        self.coef, self.intercept = _parameters(manifest, arrays)
        self.dtype = FLOAT_DTYPES[manifest.input_datatype]
        multi_target = manifest.params.get("multi_target")
        if not isinstance(multi_target, bool):
            raise invalid(manifest, f"params.multi_target must be true or false, not {multi_target!r}")
        self.multi_target = multi_target
        if not self.multi_target and self.coef.shape[0] != 1:
            raise invalid(manifest, f"a single-target regressor has one coef row, not {self.coef.shape[0]}")
        self.contributions = _contributions(manifest, arrays, self.coef, self.intercept)
        explained = [] if self.contributions is None else self.contributions.outputs(manifest.input_datatype)
        check_outputs(manifest, regressor_outputs(manifest.input_datatype, self.coef.shape[0], self.multi_target) + explained)
        self.output_names = frozenset(o.name for o in manifest.outputs)

    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        check_request(self.manifest, self.output_names, outputs, X)
        out = np.empty((X.shape[0], self.coef.shape[0]), dtype=self.dtype)
        linear.score_linear_regressor(X, self.coef, self.intercept, out)
        predict = out if self.multi_target else out.reshape(X.shape[0])
        if self.contributions is None or "contributions" not in outputs:
            return [predict for _ in outputs]
        contributions = self.contributions(X)
        return [contributions if name == "contributions" else predict for name in outputs]

    def response_writer(self, outputs: Sequence[str], template: np.ndarray, offsets: Sequence[int]) -> ResponseWriter | None:
        """Whole responses to requests of one plan (server/inference/request_plans.py) in one kernel call: `template`
        is the response with its tensors' bytes zero, `offsets` where each output's bytes go; None when a request
        asks for contributions (the scorer's path computes them)."""
        check_request(self.manifest, self.output_names, outputs, np.empty((1, self.manifest.n_features), self.dtype))
        if "contributions" in outputs:
            return None
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
            raise invalid(manifest, f"label_datatype {label_datatype!r} is not one of {sorted(LABEL_DTYPES)}")
        if not isinstance(classes, list) or len(classes) < 2:
            raise invalid(manifest, f"classes must list two or more labels, not {classes!r}")
        self.n_classes = len(classes)
        binary = self.n_classes == 2
        allowed = BINARY_LINKS if binary else MULTICLASS_LINKS
        if link not in allowed:
            raise invalid(manifest, f"link {link!r} is not one of {sorted(allowed)} for {self.n_classes} classes")
        if self.coef.shape[0] != (1 if binary else self.n_classes):
            raise invalid(manifest, f"{self.coef.shape[0]} coef rows for {self.n_classes} classes")
        self.link_code = linear.LINKS[link]
        self.labels = label_array(manifest, classes, label_datatype)
        self.binary = binary
        has_proba = link != "none"
        self.contributions = _contributions(manifest, arrays, self.coef, self.intercept)
        explained = [] if self.contributions is None else self.contributions.outputs(manifest.input_datatype)
        check_outputs(manifest, classifier_outputs(manifest.input_datatype, label_datatype, self.n_classes, has_proba) + explained)
        self.output_names = frozenset(o.name for o in manifest.outputs)

    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        check_request(self.manifest, self.output_names, outputs, X)
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
        if self.contributions is not None and "contributions" in outputs:
            results["contributions"] = self.contributions(X)
        return [results[name] for name in outputs]

    def response_writer(self, outputs: Sequence[str], template: np.ndarray, offsets: Sequence[int]) -> ResponseWriter | None:
        """As LinearRegressorScorer.response_writer; None for string labels (their size varies) and for contributions."""
        if self.labels.dtype == object:
            return None
        check_request(self.manifest, self.output_names, outputs, np.empty((1, self.manifest.n_features), self.dtype))
        if "contributions" in outputs:
            return None
        layout = np.array([(WRITES[name], at) for name, at in zip(outputs, offsets)], dtype=np.int64).reshape(-1, 2)
        link_code = self.link_code if "predict_proba" in outputs else linear.LINK_NONE
        return functools.partial(linear.linear_classifier_response, self.coef, self.intercept, link_code, self.labels, template, layout)


@register("linear_regressor")
def linear_regressor(manifest: Manifest, arrays: dict[str, np.ndarray]) -> LinearRegressorScorer:
    return LinearRegressorScorer(manifest, arrays)


@register("linear_classifier")
def linear_classifier(manifest: Manifest, arrays: dict[str, np.ndarray]) -> LinearClassifierScorer:
    return LinearClassifierScorer(manifest, arrays)


# --- exporters ------------------------------------------------------------------


def _linear_parameters(coef: Any, intercept: Any, prep: Preprocessing | None) -> tuple[np.ndarray, np.ndarray]:
    """coef as float64 [k, n_features] and intercept as float64 [k], preprocessing folded in."""
    coef2 = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    intercept1 = np.broadcast_to(np.asarray(intercept, dtype=np.float64).reshape(-1), (coef2.shape[0],))
    if prep is not None:
        coef2, intercept1 = prep.fold(coef2, intercept1)
    return np.ascontiguousarray(coef2), np.ascontiguousarray(intercept1)


def _explanation(prep: Preprocessing | None, coef: np.ndarray, datatype: str, where: str) -> tuple[list[TensorSpec], dict[str, np.ndarray]]:
    """The contributions output and the mean it measures from, or nothing (see the module docstring)."""
    if prep is None or not prep.explain:  # a meta-estimator's member: the model it belongs to explains itself or not
        return [], {}
    if prep.background is not None:
        missing = np.argwhere(np.isnan(prep.background))
        if missing.size:
            row, column = missing[0]
            raise ValueError(
                f"tensorwire cannot export {where} with this background: it holds NaN (first at row {row}, column {column}), "
                "which a linear model cannot score; pass the rows it was fitted on"
            )
        mean = prep.background.mean(axis=0)
    else:
        mean = prep.raw_input_mean()
    if mean is None:
        warnings.warn(
            f"tensorwire exports {where} without its 'contributions' output (exact SHAP values): they need the training "
            "data's mean. Pass the training data, tensorwire.export(model, dir, background=X_train), or start the "
            "pipeline with a StandardScaler()",
            UserWarning,
            stacklevel=2,
        )
        return [], {}
    return [contributions_output(datatype, *coef.shape)], {"contributions_mean": np.ascontiguousarray(mean, dtype=np.float64)}


@exports(
    "sklearn.linear_model.LinearRegression",
    "sklearn.linear_model.Ridge",
    "sklearn.linear_model.RidgeCV",
    "sklearn.linear_model.Lasso",
    "sklearn.linear_model.LassoCV",
    "sklearn.linear_model.ElasticNet",
    "sklearn.linear_model.ElasticNetCV",
    "sklearn.linear_model.MultiTaskLasso",
    "sklearn.linear_model.MultiTaskElasticNet",
    "sklearn.linear_model.Lars",
    "sklearn.linear_model.LassoLars",
    "sklearn.linear_model.OrthogonalMatchingPursuit",
    "sklearn.linear_model.HuberRegressor",
    "sklearn.linear_model.BayesianRidge",
    "sklearn.linear_model.ARDRegression",
    "sklearn.linear_model.SGDRegressor",
    "sklearn.svm.LinearSVR",
    kind="linear_regressor",
)
def _linear_regressor(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    multi_target = np.ndim(estimator.coef_) == 2  # sklearn's predict is then [n, k], even for k = 1
    coef, intercept = _linear_parameters(estimator.coef_, estimator.intercept_, prep)
    explained, explanation_arrays = _explanation(prep, coef, datatype, describe(estimator))
    return Exported(
        kind="linear_regressor",
        n_features=coef.shape[1],
        outputs=regressor_outputs(datatype, coef.shape[0], multi_target) + explained,
        arrays={"coef": coef, "intercept": intercept, **explanation_arrays},
        params={"multi_target": multi_target},
    )


# type -> its predict_proba as (link when binary, link when multiclass); "none" when it has none.
_SGD_LINKS = {"log_loss": ("logistic", "ovr_logistic"), "modified_huber": ("modified_huber", "modified_huber")}


CLASSIFIER_LINKS: ClassTable[Callable[[Any], tuple[str, str]]] = ClassTable("CLASSIFIER_LINKS", {
    "sklearn.linear_model.LogisticRegression": lambda est: ("logistic", "softmax"),
    "sklearn.linear_model.LogisticRegressionCV": lambda est: ("logistic", "softmax"),
    "sklearn.linear_model.SGDClassifier": lambda est: _SGD_LINKS.get(est.loss, ("none", "none")),
    "sklearn.svm.LinearSVC": lambda est: ("none", "none"),
    "sklearn.linear_model.RidgeClassifier": lambda est: ("none", "none"),
    "sklearn.linear_model.RidgeClassifierCV": lambda est: ("none", "none"),
    "sklearn.linear_model.Perceptron": lambda est: ("none", "none"),
})


# OneVsRestClassifier normalises its estimators' probabilities itself, leaving zero-sum rows at zero.
_ONEVSREST_LINKS = {"none": "none", "logistic": "onevsrest_logistic", "modified_huber": "onevsrest_modified_huber"}


def _classifier(
    coef: np.ndarray, intercept: np.ndarray, classes: Any, links: tuple[str, str], datatype: str, where: str, prep: Preprocessing | None
) -> Exported:
    label_datatype, labels = class_labels(classes, where)
    n_classes = len(labels)
    if n_classes < 2 or coef.shape[0] != (1 if n_classes == 2 else n_classes):
        raise ValueError(f"tensorwire cannot export {where}: {coef.shape[0]} coefficient rows for {n_classes} classes")
    link = links[0] if n_classes == 2 else links[1]
    explained, explanation_arrays = _explanation(prep, coef, datatype, where)
    return Exported(
        kind="linear_classifier",
        n_features=coef.shape[1],
        outputs=classifier_outputs(datatype, label_datatype, n_classes, has_proba=link != "none") + explained,
        arrays={"coef": coef, "intercept": intercept, **explanation_arrays},
        params={"classes": labels, "label_datatype": label_datatype, "link": link},
    )


@exports(*CLASSIFIER_LINKS.registered(), kind="linear_classifier")
def _linear_classifier(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    where = type(estimator).__name__
    refuse_multilabel(getattr(getattr(estimator, "_label_binarizer", None), "y_type_", None), where)
    coef, intercept = _linear_parameters(estimator.coef_, estimator.intercept_, prep)
    return _classifier(
        coef, intercept, estimator.classes_, CLASSIFIER_LINKS[type(estimator)](estimator), datatype, where, prep
    )


@exports("sklearn.multiclass.OneVsRestClassifier", kind="linear_classifier")
def _one_vs_rest(estimator: OneVsRestClassifier, prep: Preprocessing | None, datatype: str) -> Exported:
    where = describe(estimator)
    refuse_multilabel(estimator.label_binarizer_.y_type_, where)
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
        coef, intercept, estimator.classes_, (binary_link, _ONEVSREST_LINKS[binary_link]), datatype, where, prep
    )
