"""A tree ensemble as every tree exporter describes it, whatever library trained it, and how its raw scores become outputs.

`TreeEnsemble` is the one shape scikit-learn's trees and forests, gradient boosting,
XGBoost and LightGBM models are converted to (sklearn_trees.py, xgboost_format.py,
lightgbm_format.py). Each node says how a row is routed at it, in the trainer's own
terms: the exporter never re-derives a library's rules, it records them.

Routing at an internal node n, for the row's value x = X[row, feature[n]]:
    x is first rounded to `precision` ("float32": scikit-learn and XGBoost compare float32
    features; "float64": LightGBM and HistGradientBoosting compare doubles).
    NaN goes left iff missing_left[n].
    zero_missing[n] (LightGBM's missing_type=Zero): |x| <= ZERO_THRESHOLD goes where NaN goes.
    numeric node: left iff x <= threshold[n] (comparison "le") or x < threshold[n] ("lt").
    categorical node: c = x truncated toward zero; if 0 <= c < cat_nbits[n], left iff bit c of
        the node's bitset (cat_words[cat_start[n]:], 32 bits a word, low bit first) is set;
        any other value goes left iff cat_other_left[n]. cat_rule says which values count as
        "other" before truncation: "truncate" none (LightGBM: -0.5 is category 0), "exact" any
        value that is not a whole number (HistGradientBoosting), "nonnegative" any negative
        value (XGBoost: -0.5 is invalid).
A leaf (left == right == -1) adds value[leaf] (width = value.shape[1]) to
raw[tree_output[t] : tree_output[t] + width]; then raw = base + sum / divisor.
`cover` (optional) is the training weight that reached each node as the library counts it
(scikit-learn weighted_n_node_samples, HistGradientBoosting count, XGBoost sum_hessian,
LightGBM internal_count / leaf_count): path-dependent TreeSHAP weighs a split's branches by it.

How raw becomes outputs (`Head`):
    regression       predict = link(raw): identity, exp, logistic ([-1] for one output, else [-1, k])
    classification   link "logistic" (one raw column: binary, p = sigmoid(link_scale * raw), proba [1-p, p];
                     several: one-vs-all, proba = sigmoid per class, not normalised, as LightGBM),
                     "softmax" (proba = softmax(raw)), "proba" (raw already is the probabilities: forests);
                     predict = the class of highest raw score (softmax) or probability (binary: see
                     binary_rule), decision_function = raw where the library has it (has_decision)
    isolation        score_samples = -2 ** -raw, decision_function = score_samples - offset,
                     predict = -1 where decision_function < 0 else 1 (IsolationForest)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tensorwire.kernels import trees

ZERO_THRESHOLD = trees.ZERO_THRESHOLD

TASKS = ("regression", "classification", "isolation")
BINARY_RULES = ("proba", "raw_positive", "raw_nonnegative")
CAT_RULES = ("truncate", "exact", "nonnegative")
LINK_CODES = {"identity": trees.IDENTITY, "exp": trees.EXP, "logistic": trees.LOGISTIC, "softmax": trees.SOFTMAX, "proba": trees.PROBA}
RULE_CODES = {"proba": trees.BY_PROBA, "raw_positive": trees.RAW_POSITIVE, "raw_nonnegative": trees.RAW_NONNEGATIVE}
LINKS = {
    "regression": ("identity", "exp", "logistic"),
    "classification": ("logistic", "softmax", "proba"),
    "isolation": ("isolation",),
}


@dataclass
class TreeEnsemble:
    """Every tree's nodes, concatenated (children are indices into these arrays), and what the sum of leaves means."""

    estimator: str  # what it was exported from, for people to read
    n_features: int
    feature: np.ndarray  # int64 [n_nodes]; 0 at leaves
    threshold: np.ndarray  # float64 [n_nodes]; numeric nodes only
    left: np.ndarray  # int64 [n_nodes]; -1 at leaves
    right: np.ndarray  # int64 [n_nodes]; -1 at leaves
    missing_left: np.ndarray  # bool [n_nodes]: where NaN goes
    value: np.ndarray  # float64 [n_nodes, width]: what a leaf adds (rows of internal nodes are ignored)
    roots: np.ndarray  # int64 [n_trees]
    tree_output: np.ndarray  # int64 [n_trees]: the first raw column tree t adds to
    base: np.ndarray  # float64 [n_raw]: raw = base + sum / divisor
    divisor: float = 1.0
    comparison: str = "le"  # "le" | "lt"
    precision: str = "float64"  # "float32" | "float64"
    zero_missing: np.ndarray | None = None  # bool [n_nodes]; None: no node has it
    categorical: np.ndarray | None = None  # bool [n_nodes]; None: no categorical node
    cat_start: np.ndarray | None = None  # int64 [n_nodes]
    cat_nbits: np.ndarray | None = None  # int64 [n_nodes]
    cat_words: np.ndarray | None = None  # uint32 [n_words]
    cat_other_left: np.ndarray | None = None  # bool [n_nodes]
    task: str = "regression"
    link: str = "identity"
    link_scale: float = 1.0
    classes: list[Any] | None = None  # classification: labels in raw/proba column order
    has_decision: bool = False  # classification: decision_function is an output
    binary_rule: str = "proba"  # binary predict: class 1 iff "proba": p > 0.5, "raw_positive": raw > 0, "raw_nonnegative": raw >= 0
    cat_rule: str = "truncate"  # which values a categorical split takes as categories (see the module docstring)
    offset: float = 0.0  # isolation
    accepts_nan: bool = False  # the library's own predict takes NaN
    accepts_inf: bool = False  # ... and infinities
    notes: dict[str, Any] = field(default_factory=dict)  # anything the exporter wants in the manifest, for people
    cover: np.ndarray | None = None  # float64 [n_nodes]: the training weight (count, hessian sum) reaching each node; None: unknown

    @property
    def n_nodes(self) -> int:
        return int(self.feature.shape[0])

    @property
    def n_trees(self) -> int:
        return int(self.roots.shape[0])

    @property
    def n_raw(self) -> int:
        return int(self.base.shape[0])

    @property
    def width(self) -> int:
        return int(self.value.shape[1])

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistency: every array sized, every tree a tree."""
        n = self.n_nodes
        where = f"tree ensemble ({self.estimator})"
        for name in ("threshold", "left", "right", "missing_left"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{where}: {name} has shape {getattr(self, name).shape}, expected ({n},)")
        if self.value.ndim != 2 or self.value.shape[0] != n or self.value.shape[1] < 1:
            raise ValueError(f"{where}: value has shape {self.value.shape}, expected ({n}, width)")
        if self.n_trees < 1:
            raise ValueError(f"{where}: no trees")
        if self.tree_output.shape != self.roots.shape:
            raise ValueError(f"{where}: tree_output and roots differ in length")
        if self.tree_output.min() < 0 or self.tree_output.max() + self.width > self.n_raw:
            raise ValueError(f"{where}: a tree adds past the {self.n_raw} raw outputs")
        if self.cat_rule not in CAT_RULES:
            raise ValueError(f"{where}: cat_rule {self.cat_rule!r} is not one of {CAT_RULES}")
        if self.binary_rule not in BINARY_RULES:
            raise ValueError(f"{where}: binary_rule {self.binary_rule!r} is not one of {BINARY_RULES}")
        if self.task not in TASKS or self.link not in LINKS[self.task]:
            raise ValueError(f"{where}: task {self.task!r} with link {self.link!r} is not one tensorwire serves")
        if self.comparison not in ("le", "lt") or self.precision not in ("float32", "float64"):
            raise ValueError(f"{where}: comparison {self.comparison!r} / precision {self.precision!r}")
        if not (np.isfinite(self.base).all() and np.isfinite(self.value).all() and self.divisor > 0):
            raise ValueError(f"{where}: leaf values, base scores and divisor must be finite")
        internal = self.left >= 0
        if not np.array_equal(internal, self.right >= 0):
            raise ValueError(f"{where}: a node has one child")
        if internal.any():
            children = np.concatenate([self.left[internal], self.right[internal]])
            if children.max() >= n or self.feature[internal].min() < 0 or self.feature[internal].max() >= self.n_features:
                raise ValueError(f"{where}: a child or feature index is out of range")
            if np.isnan(self.threshold[internal & ~self._categorical()]).any():
                raise ValueError(f"{where}: a numeric split has a NaN threshold")
        if self.categorical is not None:
            for name in ("cat_start", "cat_nbits", "cat_other_left"):
                if getattr(self, name) is None or getattr(self, name).shape != (n,):
                    raise ValueError(f"{where}: categorical splits need {name} of shape ({n},)")
            assert self.cat_words is not None and self.cat_start is not None and self.cat_nbits is not None
            cats = self.categorical & internal
            ends = self.cat_start[cats] + (self.cat_nbits[cats] + 31) // 32
            if cats.any() and (self.cat_start[cats].min() < 0 or ends.max() > self.cat_words.shape[0]):
                raise ValueError(f"{where}: a category bitset lies outside cat_words")
        if self.cover is not None and (self.cover.shape != (n,) or not np.isfinite(self.cover).all() or (self.cover < 0).any()):
            raise ValueError(f"{where}: cover must be {n} finite non-negative numbers")
        self._check_trees(where)
        if self.task == "classification":
            n_classes = len(self.classes or [])
            expected = 1 if (self.link == "logistic" and n_classes == 2) else n_classes
            if n_classes < 2 or self.n_raw != expected:
                raise ValueError(f"{where}: {n_classes} classes with {self.n_raw} raw outputs and link {self.link}")

    def _categorical(self) -> np.ndarray:
        return self.categorical if self.categorical is not None else np.zeros(self.n_nodes, dtype=bool)

    def _check_trees(self, where: str) -> None:
        """Each node is reached from at most one parent, and every tree from its root ends in leaves (no cycles)."""
        seen = np.zeros(self.n_nodes, dtype=bool)
        for root in self.roots:
            stack = [int(root)]
            while stack:
                node = stack.pop()
                if node < 0 or node >= self.n_nodes or seen[node]:
                    raise ValueError(f"{where}: node {node} is out of range or reached twice")
                seen[node] = True
                if self.left[node] >= 0:
                    stack += [int(self.left[node]), int(self.right[node])]

    def explainable(self) -> str | None:
        """Why TreeSHAP contributions cannot be computed for this ensemble, or None when they can."""
        if self.cover is None:
            return "the model file has no node covers"
        if (self.cover[self.left >= 0] <= 0).any():
            return "a split node has no training weight (cover 0)"
        return None

    def depths(self) -> np.ndarray:
        """The depth of each tree (a lone leaf: 0)."""
        result = np.zeros(self.n_trees, dtype=np.int64)
        for t, root in enumerate(self.roots):
            stack = [(int(root), 0)]
            while stack:
                node, depth = stack.pop()
                result[t] = max(result[t], depth)
                if self.left[node] >= 0:
                    stack += [(int(self.left[node]), depth + 1), (int(self.right[node]), depth + 1)]
        return result

    # --- a plain numpy evaluation: the reference the kernels and exporters are tested against ---

    def go_left(self, nodes: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Whether rows with values x (already rounded to `precision`) at internal nodes go left."""
        nan = np.isnan(x)
        threshold = self.threshold[nodes]
        with np.errstate(invalid="ignore"):
            result = x <= threshold if self.comparison == "le" else x < threshold
        missing = nan.copy()
        if self.zero_missing is not None:
            missing |= self.zero_missing[nodes] & (np.abs(x) <= ZERO_THRESHOLD)
        if self.categorical is not None:
            assert self.cat_start is not None and self.cat_nbits is not None and self.cat_words is not None and self.cat_other_left is not None
            cat = self.categorical[nodes]
            with np.errstate(invalid="ignore"):
                c = np.trunc(np.where(nan, -1.0, x))
            inside = cat & (c >= 0) & (c < self.cat_nbits[nodes])
            if self.cat_rule == "exact":
                inside &= c == x
            elif self.cat_rule == "nonnegative":
                inside &= x >= 0
            ci = np.where(inside, c, 0).astype(np.int64)
            words = self.cat_words[np.where(inside, self.cat_start[nodes] + ci // 32, 0)]
            in_set = ((words >> (ci % 32).astype(np.uint32)) & 1).astype(bool)
            result = np.where(cat, np.where(inside, in_set, self.cat_other_left[nodes]), result)
        return np.where(missing, self.missing_left[nodes], result)

    def raw_reference(self, X: np.ndarray) -> np.ndarray:
        """raw scores [n_rows, n_raw] for float rows X, one tree at a time in plain numpy."""
        X = np.asarray(X)
        Xc = X.astype(np.float32).astype(np.float64) if self.precision == "float32" else X.astype(np.float64)
        rows = np.arange(Xc.shape[0])
        total = np.zeros((Xc.shape[0], self.n_raw))
        for t, root in enumerate(self.roots):
            node = np.full(Xc.shape[0], root, dtype=np.int64)
            while True:
                inner = self.left[node] >= 0
                if not inner.any():
                    break
                at = node[inner]
                x = Xc[rows[inner], self.feature[at]]
                node[inner] = np.where(self.go_left(at, x), self.left[at], self.right[at])
            start = int(self.tree_output[t])
            total[:, start : start + self.width] += self.value[node]
        return self.base + total / self.divisor

    def outputs_reference(self, X: np.ndarray, dtype: Any = np.float64) -> dict[str, np.ndarray]:
        """Every output this ensemble declares, for rows X, in plain numpy."""
        head = Head(self.task, self.link, self.link_scale, self.n_raw, _labels(self.classes), self.has_decision, self.offset, self.binary_rule)
        return dict(zip(head.names, head.outputs(self.raw_reference(X), head.names, np.dtype(dtype)), strict=True))


def _labels(classes: list[Any] | None) -> np.ndarray | None:
    if classes is None:
        return None
    labels = np.empty(len(classes), dtype=object)
    labels[:] = classes
    return labels


class Head:
    """Raw scores to the outputs a request asks for (see the module docstring)."""

    def __init__(
        self, task: str, link: str, link_scale: float, n_raw: int, labels: np.ndarray | None, has_decision: bool, offset: float, binary_rule: str = "proba"
    ) -> None:
        self.task, self.link, self.link_scale, self.n_raw = task, link, link_scale, n_raw
        self.labels, self.has_decision, self.offset, self.binary_rule = labels, has_decision, offset, binary_rule
        if task == "regression":
            self.names: tuple[str, ...] = ("predict",)
        elif task == "classification":
            self.names = ("predict", "predict_proba") + (("decision_function",) if has_decision else ())
        else:
            self.names = ("predict", "decision_function", "score_samples")

    def outputs(self, raw: np.ndarray, names: Any, dtype: np.dtype) -> list[np.ndarray]:  # type: ignore[type-arg]
        """The named outputs of raw scores [n, n_raw] (float64), as arrays of dtype (labels: their own)."""
        n = raw.shape[0]
        results: dict[str, np.ndarray] = {}
        if self.task == "regression":
            predict = np.empty((n, self.n_raw), dtype=dtype)
            trees.apply_link(raw, LINK_CODES[self.link], self.link_scale, predict)
            results["predict"] = predict[:, 0] if self.n_raw == 1 else predict
        elif self.task == "classification":
            assert self.labels is not None
            proba = np.empty((n, self.labels.shape[0]), dtype=dtype)
            index = np.empty(n, dtype=np.int64)
            trees.classify(raw, LINK_CODES[self.link], self.link_scale, RULE_CODES[self.binary_rule], proba, index)
            if "predict" in names:
                results["predict"] = self.labels[index]
            results["predict_proba"] = proba
            if "decision_function" in names:
                results["decision_function"] = (raw[:, 0] if self.n_raw == 1 else raw).astype(dtype)
        else:
            score = -np.exp2(-raw[:, 0])
            decision = score - self.offset
            results["score_samples"] = score.astype(dtype)
            results["decision_function"] = decision.astype(dtype)
            results["predict"] = np.where(decision < 0, -1, 1).astype(np.int64)
        return [results[name] for name in names]
