"""The tree-ensemble scorer (kind "tree_ensemble"), the outputs a tree model declares, and a TreeEnsemble written as an Exported model.

Arrays: packing.py's (nodes, leaf_slot, leaf_value, tree_root, tree_min_depth, tree_output,
base, and for categorical or zero-as-missing splits kind, cat_start, cat_nbits, cat_other,
cat_words; `cover` where the model has a `contributions` output: contributions.py), besides the input side's (modeling/scorer_support.py, `Inputs`).
Params (JSON): task, link, link_scale, divisor, offset, has_decision, classes and
label_datatype (classifiers), comparison ("FP32" | "FP64": the dtype the nodes compare in),
accepts_nan / accepts_inf / float32_range (what the input may hold, as the library that
trained it allows), stages, and `source` (what the model was read from, for people).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tensorwire.kernels import trees
from tensorwire.server.families.trees.contributions import CONTRIBUTIONS, TreeContributions, contributions_spec
from tensorwire.server.families.trees.ensemble import BINARY_RULES, LINKS, Head, TreeEnsemble
from tensorwire.server.families.trees.packing import comparison_dtype, pack
from tensorwire.server.modeling.export_support import class_labels
from tensorwire.server.modeling.pipelines import Preprocessing, exported, planned
from tensorwire.server.modeling.registry import Exported, register
from tensorwire.server.modeling.scorer_support import (
    FLOAT_DTYPES,
    Inputs,
    check_outputs,
    check_request,
    compiles_parallel,
    float_array,
    int32_array,
    invalid,
    is_parallel,
    label_array,
    one_row,
)
from tensorwire.server.repository.model_format import Manifest, TensorSpec

KIND = "tree_ensemble"
SPECIAL_ARRAYS = ("kind", "cat_start", "cat_nbits", "cat_other", "cat_words")


def tree_outputs(datatype: str, task: str, n_raw: int, n_classes: int, label_datatype: str, has_decision: bool, contributions_of: int = 0) -> list[TensorSpec]:
    """The outputs a tree model declares, shaped as its library returns them; `contributions` too for a model
    with covers (contributions_of: its number of input features; 0: none)."""
    if task == "regression":
        outputs = [TensorSpec("predict", datatype, [-1] if n_raw == 1 else [-1, n_raw])]
    elif task == "classification":
        outputs = [TensorSpec("predict", label_datatype, [-1]), TensorSpec("predict_proba", datatype, [-1, n_classes])]
        if has_decision:
            outputs.append(TensorSpec("decision_function", datatype, [-1] if n_raw == 1 else [-1, n_raw]))
    else:
        outputs = [TensorSpec("predict", "INT64", [-1]), TensorSpec("decision_function", datatype, [-1]), TensorSpec("score_samples", datatype, [-1])]
    if contributions_of:
        outputs.append(contributions_spec(datatype, n_raw, contributions_of))
    return outputs


def exported_ensemble(ensemble: TreeEnsemble, estimator: Any, prep: Preprocessing | None, datatype: str, source: str) -> Exported:
    """What `tensorwire.export` writes for a tree ensemble converted from `estimator` (after the pipeline steps in `prep`, if any)."""
    ensemble.validate()
    plan = planned(estimator, prep, ensemble.n_features)
    input_dtype = FLOAT_DTYPES[datatype]
    label_datatype, labels = ("INT64", []) if ensemble.classes is None else class_labels(ensemble.classes, ensemble.estimator)
    arrays = pack(ensemble, input_dtype)
    if plan.stages:  # contributions would explain the projected features, not the model's inputs
        arrays.pop("cover", None)
    explained = plan.n_features if "cover" in arrays else 0
    outputs = tree_outputs(datatype, ensemble.task, ensemble.n_raw, len(labels), label_datatype, ensemble.has_decision, explained)
    float32_compare = comparison_dtype(ensemble, input_dtype) == np.float32
    params: dict[str, Any] = {
        "task": ensemble.task,
        "link": ensemble.link,
        "link_scale": float(ensemble.link_scale),
        "divisor": float(ensemble.divisor),
        "offset": float(ensemble.offset),
        "has_decision": ensemble.has_decision,
        "binary_rule": ensemble.binary_rule,
        "comparison": "FP32" if float32_compare else "FP64",
        # projections and norms would turn NaN into numbers the library never saw: with stages, refuse NaN
        "accepts_nan": ensemble.accepts_nan and not plan.stages,
        "accepts_inf": ensemble.accepts_inf and not plan.stages,
        # a float64 value past float32's range rounds to infinity, which the library then refuses
        "float32_range": ensemble.precision == "float32" and datatype == "FP64" and not ensemble.accepts_inf,
        "source": source,
        **({"classes": labels, "label_datatype": label_datatype} if ensemble.classes is not None else {}),
    }
    return exported(KIND, plan, outputs, arrays, params)


class TreeEnsembleScorer:
    """raw = base + sum of the leaves each row reaches / divisor (kernels/trees.py), then the link (ensemble.Head)."""

    def __init__(self, manifest: Manifest, arrays: dict[str, np.ndarray]) -> None:
        self.manifest = manifest
        params = manifest.params
        self.dtype = np.dtype(FLOAT_DTYPES[manifest.input_datatype])
        self.inputs = Inputs(manifest, arrays)
        self.identity = not (self.inputs.shift.any() or self.inputs.offset.any() or (self.inputs.scale != 1.0).any())
        task, link = params.get("task"), params.get("link")
        if task not in LINKS or link not in LINKS[task]:
            raise invalid(manifest, f"task {task!r} with link {link!r} is not one tensorwire serves")
        comparison = params.get("comparison")
        if comparison not in ("FP32", "FP64"):
            raise invalid(manifest, f"params.comparison must be FP32 or FP64, not {comparison!r}")
        self.compare_dtype = np.dtype(FLOAT_DTYPES[comparison])
        self.nodes = self._nodes(arrays, trees.NODE_FP32 if comparison == "FP32" else trees.NODE_FP64)
        n_nodes = self.nodes.shape[0]
        self.leaf_slot = int32_array(manifest, arrays, "leaf_slot", (n_nodes,))
        self.leaf_value = float_array(manifest, arrays, "leaf_value", (-1, -1))
        self.tree_root = int32_array(manifest, arrays, "tree_root", (-1,))
        n_trees = self.tree_root.shape[0]
        self.tree_min_depth = int32_array(manifest, arrays, "tree_min_depth", (n_trees,))
        self.tree_output = int32_array(manifest, arrays, "tree_output", (n_trees,))
        self.base = float_array(manifest, arrays, "base", (-1,))
        self.special = tuple(self._special(arrays, n_nodes)) if "kind" in arrays else None
        self._check_structure()
        self.divisor = float(params.get("divisor", 1.0))
        if not self.divisor > 0:
            raise invalid(manifest, f"params.divisor must be positive, not {self.divisor!r}")
        labels = None
        if task == "classification":
            labels = label_array(manifest, list(params.get("classes", [])), str(params.get("label_datatype")))
        self.head = Head(task, link, float(params.get("link_scale", 1.0)), self.base.shape[0], labels, bool(params.get("has_decision")), float(params.get("offset", 0.0)), self._binary_rule())
        n_classes = 0 if labels is None else labels.shape[0]
        self.contributions = self._contributions(arrays)
        explained = manifest.n_features if self.contributions is not None else 0
        check_outputs(manifest, tree_outputs(manifest.input_datatype, task, self.base.shape[0], n_classes, str(params.get("label_datatype", "INT64")), bool(params.get("has_decision")), explained))
        self.output_names = frozenset(o.name for o in manifest.outputs)
        self.work_per_row = self._work_per_row()
        if compiles_parallel():  # the parallel variants too, where a batch can take them
            self._score(one_row(manifest), [o.name for o in manifest.outputs], parallel=True)
        if self.contributions is not None:  # the repository's warm-up leaves out on-request outputs: compile the serial variant here
            self._score(one_row(manifest), [CONTRIBUTIONS], parallel=False)

    def _contributions(self, arrays: dict[str, np.ndarray]) -> TreeContributions | None:
        if "cover" not in arrays:
            if any(o.name == CONTRIBUTIONS for o in self.manifest.outputs):
                raise invalid(self.manifest, f"it declares {CONTRIBUTIONS} but has no array 'cover'")
            return None
        if self.inputs.stages:
            raise invalid(self.manifest, "a model with pipeline stages cannot have contributions (its trees read projected features)")
        return TreeContributions(self.manifest, arrays, self.nodes, self.leaf_slot, self.leaf_value, self.tree_root, self.tree_output, self.base, self.divisor, self.special)

    def _work_per_row(self) -> int:
        """About 8 multiply-adds' time per node a row visits, a balanced tree's depth per tree (see registry.Scorer)."""
        n_trees = self.tree_root.shape[0]
        leaves_per_tree = max(1.0, self.leaf_value.shape[0] / n_trees)
        return int(n_trees * (np.log2(leaves_per_tree) + 1) * (8 + self.leaf_value.shape[1]))

    def _binary_rule(self) -> str:
        rule = self.manifest.params.get("binary_rule", "proba")
        if rule not in BINARY_RULES:
            raise invalid(self.manifest, f"params.binary_rule must be one of {BINARY_RULES}, not {rule!r}")
        return str(rule)

    def _nodes(self, arrays: dict[str, np.ndarray], record: np.dtype) -> np.ndarray:  # type: ignore[type-arg]
        words = record.itemsize // 4
        raw = int32_array(self.manifest, arrays, "nodes", (-1, words))
        return raw.view(record).reshape(raw.shape[0])  # a view: the memory-mapped file's pages stay shared

    def _special(self, arrays: dict[str, np.ndarray], n_nodes: int) -> list[np.ndarray]:
        kinds = {"kind": np.int8, "cat_start": np.int32, "cat_nbits": np.int32, "cat_other": np.uint8, "cat_words": np.uint32}
        result = []
        for name in SPECIAL_ARRAYS:
            if name not in arrays:
                raise invalid(self.manifest, f"array '{name}' is missing")
            array = arrays[name]
            shape_ok = array.ndim == 1 and (name == "cat_words" or array.shape[0] == n_nodes)
            if not shape_ok or array.dtype != kinds[name]:
                raise invalid(self.manifest, f"array '{name}' is {array.dtype}{list(array.shape)}")
            result.append(array)
        return result

    def _check_structure(self) -> None:
        """Every index the kernels follow without bounds checks stays inside its array."""
        n = self.nodes.shape[0]
        internal = self.leaf_slot < 0
        child = self.nodes["child"].astype(np.int64)
        feature = self.nodes["feature"].astype(np.int64)
        width = self.inputs.width
        if n == 0 or (internal & ((child + 1 >= n) | (feature >= width))).any():
            raise invalid(self.manifest, "a node's child or feature index is out of range")
        leaves = ~internal
        if (leaves & (child != np.arange(n))).any() or self.leaf_slot.max() >= self.leaf_value.shape[0]:
            raise invalid(self.manifest, "a leaf does not point at itself or at a leaf value")
        if self.tree_root.min() < 0 or self.tree_root.max() >= n or self.tree_min_depth.min() < 0:
            raise invalid(self.manifest, "a tree root or depth is out of range")
        if self.tree_output.min() < 0 or self.tree_output.max() + self.leaf_value.shape[1] > self.base.shape[0]:
            raise invalid(self.manifest, "a tree adds past the model's raw outputs")
        if (internal & (child <= np.arange(n))).any():
            raise invalid(self.manifest, "a node's children come before it (the trees must not loop)")
        if self.special is not None:
            kind, cat_start, cat_nbits, _, cat_words = self.special
            cats = internal & np.isin(kind, (trees.CATEGORICAL, trees.CATEGORICAL_EXACT, trees.CATEGORICAL_NONNEGATIVE))
            if cats.any() and (cat_start[cats].min() < 0 or (cat_start[cats] + (cat_nbits[cats].astype(np.int64) + 31) // 32).max() > cat_words.shape[0]):
                raise invalid(self.manifest, "a category bitset lies outside cat_words")

    def score(self, X: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        check_request(self.manifest, self.output_names, outputs, X)
        return self._score(X, outputs, is_parallel(X))

    def _score(self, X: np.ndarray, outputs: Sequence[str], parallel: bool) -> list[np.ndarray]:
        Xk = self._kernel_input(X, parallel)
        if CONTRIBUTIONS not in outputs:
            return self._head_outputs(Xk, outputs, parallel)
        assert self.contributions is not None  # check_request let the name through
        contributions = self.contributions(Xk, parallel)
        explained = (contributions[:, 0] if contributions.shape[1] == 1 else contributions).astype(self.dtype, copy=False)
        others = [name for name in outputs if name != CONTRIBUTIONS]
        results = iter(self._head_outputs(Xk, others, parallel) if others else [])
        return [explained if name == CONTRIBUTIONS else next(results) for name in outputs]

    def _head_outputs(self, Xk: np.ndarray, outputs: Sequence[str], parallel: bool) -> list[np.ndarray]:
        raw = np.empty((Xk.shape[0], self.base.shape[0]))
        if self.special is None:
            numeric = trees.score_trees_parallel if parallel else trees.score_trees
            numeric(Xk, self.nodes, self.leaf_slot, self.leaf_value, self.tree_root, self.tree_min_depth, self.tree_output, self.base, self.divisor, raw)
        else:
            general = trees.score_trees_general_parallel if parallel else trees.score_trees_general
            kind, cat_start, cat_nbits, cat_other, cat_words = self.special
            general(Xk, self.nodes, kind, cat_start, cat_nbits, cat_other, cat_words, self.leaf_slot, self.leaf_value, self.tree_root, self.tree_output, self.base, self.divisor, raw)
        return self.head.outputs(raw, outputs, self.dtype)

    def _kernel_input(self, X: np.ndarray, parallel: bool) -> np.ndarray:
        """X after the pipeline's steps, in the comparison dtype (float32 rounding is the library's own)."""
        Xk = self.inputs(X, parallel)
        if not self.identity:
            Xk = (np.asarray(Xk, dtype=np.float64) - self.inputs.shift) * self.inputs.scale + self.inputs.offset
        if Xk.dtype != self.compare_dtype:
            with np.errstate(over="ignore"):
                Xk = Xk.astype(self.compare_dtype)
        return Xk


@register(KIND)
def tree_ensemble_scorer(manifest: Manifest, arrays: dict[str, np.ndarray]) -> TreeEnsembleScorer:
    return TreeEnsembleScorer(manifest, arrays)
