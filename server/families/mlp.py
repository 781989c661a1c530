"""Small neural networks (kind "mlp": MLPClassifier, MLPRegressor), their exporter and their scorer.

Arrays (float64, besides the input side's, modeling/scorer_support.py `Inputs`):
    weights [-1]   every layer's coefs_[l] (row-major) then intercepts_[l], layer after layer
    sizes [L + 1]  INT64 layer widths: the kernel's input width, each hidden width, n_outputs_
Params (JSON): activation (identity | logistic | tanh | relu), out_activation (identity | logistic | softmax),
task (regressor | classifier | multilabel), classes and label_datatype (classifier), stages, coef_datatype
(FP32 | FP64, default FP64: the dtype of scikit-learn's coefs_, float32 for a network trained on float32 data).
The forward pass runs in float32 when both the input datatype and coef_datatype are FP32, as scikit-learn's does
(kernels/mlp.py `compute_dtype`), and in float64 otherwise.
Outputs: regressor predict [-1] (one output) or [-1, n_outputs] in the input's float datatype;
classifier predict (labels) [-1] and predict_proba [-1, n_classes]; multilabel predict INT64
[-1, n_labels] (0/1) and predict_proba [-1, n_labels].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tensorwire.kernels import mlp
from tensorwire.server.modeling.export_support import class_labels
from tensorwire.server.modeling.pipelines import Preprocessing, exported, planned
from tensorwire.server.modeling.registry import Exported, exports, register
from tensorwire.server.modeling.scorer_support import FLOAT_DTYPES, Inputs, check_outputs, check_request, compiles_parallel, float_array, int_array, invalid, is_parallel, label_array, one_row
from tensorwire.server.repository.model_format import Manifest, TensorSpec

TASKS = ("regressor", "classifier", "multilabel")


def mlp_outputs(datatype: str, task: str, n_out: int, label_datatype: str = "INT64") -> list[TensorSpec]:
    """The outputs an MLP declares (n_out: regression outputs, classes or labels)."""
    if task == "regressor":
        return [TensorSpec("predict", datatype, [-1] if n_out == 1 else [-1, n_out])]
    if task == "multilabel":
        return [TensorSpec("predict", "INT64", [-1, n_out]), TensorSpec("predict_proba", datatype, [-1, n_out])]
    return [TensorSpec("predict", label_datatype, [-1]), TensorSpec("predict_proba", datatype, [-1, n_out])]


class MLPScorer:
    """The network's forward pass (scikit-learn's _forward_pass_fast), then predict / predict_proba."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray]) -> None:
        self.manifest = manifest
        self.dtype = FLOAT_DTYPES[manifest.input_datatype]
        self.inputs = Inputs(manifest, arrays)
        params = manifest.params
        self.task = params.get("task")
        if self.task not in TASKS:
            raise invalid(manifest, f"task must be one of {TASKS}, not {self.task!r}")
        hidden, out = params.get("activation"), params.get("out_activation")
        if hidden not in ("identity", "logistic", "tanh", "relu") or out not in ("identity", "logistic", "softmax"):
            raise invalid(manifest, f"unknown activations {hidden!r}, {out!r}")
        self.hidden, self.out_activation = mlp.ACTIVATIONS[hidden], mlp.ACTIVATIONS[out]
        self.sizes = int_array(manifest, arrays, "sizes", (-1,))
        if self.sizes.shape[0] < 2 or (self.sizes <= 0).any() or self.sizes[0] != self.inputs.width:
            raise invalid(manifest, f"sizes {self.sizes.tolist()} do not fit input width {self.inputs.width}")
        n_weights = int(sum(int(self.sizes[i]) * int(self.sizes[i + 1]) + int(self.sizes[i + 1]) for i in range(len(self.sizes) - 1)))
        coef_datatype = params.get("coef_datatype", "FP64")
        if coef_datatype not in FLOAT_DTYPES:
            raise invalid(manifest, f"coef_datatype must be FP32 or FP64, not {coef_datatype!r}")
        self.compute_dtype = mlp.compute_dtype(self.dtype, FLOAT_DTYPES[coef_datatype])
        self.weights = float_array(manifest, arrays, "weights", (n_weights,)).astype(self.compute_dtype, copy=False)
        self.weights.setflags(write=False)
        # no pre-scaling: the kernel can read the request's rows where they are, without a copy per tile
        self.reads_rows_in_place = not (self.inputs.shift.any() or self.inputs.offset.any() or (self.inputs.scale != 1.0).any())
        self.n_out = int(self.sizes[-1])
        # work per row, in multiply-adds: what the request-plan path weighs a request by
        self.work_per_row = n_weights
        if self.task == "classifier":
            classes, label_datatype = params.get("classes"), params.get("label_datatype")
            if not isinstance(classes, list) or len(classes) < 2 or len(classes) != max(self.n_out, 2):
                raise invalid(manifest, f"classes {classes!r} do not fit {self.n_out} outputs")
            if not isinstance(label_datatype, str):
                raise invalid(manifest, f"label_datatype must be a string, not {label_datatype!r}")
            self.labels = label_array(manifest, classes, label_datatype)
            expected = mlp_outputs(manifest.input_datatype, "classifier", len(classes), label_datatype)
        else:
            expected = mlp_outputs(manifest.input_datatype, self.task, self.n_out)
        check_outputs(manifest, expected)
        self.output_names = frozenset(o.name for o in manifest.outputs)
        if compiles_parallel():  # the parallel variants too, where a batch can take them
            self._score(one_row(manifest), tuple(sorted(self.output_names)), parallel=True)

    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        check_request(self.manifest, self.output_names, outputs, X)
        return self._score(X, outputs, is_parallel(X))

    def _score(self, X: np.ndarray, outputs: Sequence[str], parallel: bool) -> list[np.ndarray]:
        Xk = self.inputs(X, parallel)  # parallel only for the stages: the network's large batches thread through BLAS
        y = np.empty((X.shape[0], self.n_out), dtype=self.compute_dtype)
        if self.reads_rows_in_place and Xk.dtype == self.compute_dtype and Xk.flags.c_contiguous:
            mlp.mlp_forward_direct(Xk, self.weights, self.sizes, self.hidden, self.out_activation, y)
        else:
            mlp.mlp_forward(
                Xk, self.inputs.shift, self.inputs.scale, self.inputs.offset, self.weights, self.sizes,
                self.hidden, self.out_activation, y,
            )
        results: dict[str, np.ndarray] = {}
        if self.task == "regressor":
            results["predict"] = (y[:, 0] if self.n_out == 1 else y).astype(self.dtype, copy=False)
        elif self.task == "multilabel":
            results["predict"] = (y > 0.5).astype(np.int64)
            results["predict_proba"] = y.astype(self.dtype, copy=False)
        elif self.n_out == 1:
            p = y[:, 0]
            if "predict" in outputs:
                results["predict"] = self.labels[(p > 0.5).astype(np.intp)]
            if "predict_proba" in outputs:
                results["predict_proba"] = np.column_stack((1.0 - p, p)).astype(self.dtype, copy=False)
        else:
            if "predict" in outputs:
                results["predict"] = self.labels[np.argmax(y, axis=1)]
            if "predict_proba" in outputs:
                results["predict_proba"] = y.astype(self.dtype, copy=False)
        return [results[name] for name in outputs]


@register("mlp")
def mlp_scorer(manifest: Manifest, arrays: dict[str, np.ndarray]) -> MLPScorer:
    return MLPScorer(manifest, arrays)


@exports("sklearn.neural_network.MLPClassifier", "sklearn.neural_network.MLPRegressor", kind="mlp")
def _mlp(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
    from sklearn.neural_network import MLPRegressor  # exporting only: a server never imports scikit-learn

    weights, sizes = mlp.mlp_params(estimator.coefs_, estimator.intercepts_)
    result = planned(estimator, prep, int(sizes[0]))
    coef_datatype = "FP32" if all(np.asarray(c).dtype == np.float32 for c in estimator.coefs_) else "FP64"
    params: dict[str, Any] = {"activation": estimator.activation, "out_activation": estimator.out_activation_, "coef_datatype": coef_datatype}
    n_out = int(sizes[-1])
    if isinstance(estimator, MLPRegressor):
        params["task"] = "regressor"
        outputs = mlp_outputs(datatype, "regressor", n_out)
    elif estimator._label_binarizer.y_type_.startswith("multilabel"):
        params["task"] = "multilabel"
        outputs = mlp_outputs(datatype, "multilabel", n_out)
    else:
        label_datatype, labels = class_labels(estimator.classes_, type(estimator).__name__)
        params.update(task="classifier", classes=labels, label_datatype=label_datatype)
        outputs = mlp_outputs(datatype, "classifier", len(labels), label_datatype)
    return exported("mlp", result, outputs, {"weights": weights, "sizes": sizes}, params)
