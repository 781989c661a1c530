"""The reference profile a model's input drift is measured against: per feature, quantile bins of the training rows.

Written at export from `background` (the training rows), read at load: extra arrays of model.npz, which no
scorer reads, and `params["reference_profile"]` with the feature names. A model without them has no profile.

Bins of feature j: `edges[j, 0]` is the reference minimum, `edges[j, n_bins[j]]` its maximum, and
`edges[j, 1 : n_bins[j]]` the cut points between bins; bin i holds the values in (edges[i], edges[i + 1]],
the first bin everything up to edges[1] and the last everything above edges[n_bins - 1] (right-closed bins, as
`np.searchsorted(cuts, x, side="left")` numbers them). Ties in the reference merge quantiles that coincide, so a
feature may have fewer bins; a constant feature c gets three: below c, c, above c. `fractions[j]` holds the share
of reference rows in each bin, and at column MAX_BINS the share of rows where the feature is missing (NaN).

The main output (`predict` where the model has it, else its first output) has a profile too, where it is one value
per row, computed at export by the model's own scorer on the reference rows (server/modeling/export.py): for class
labels and cluster ids (BYTES, BOOL, INT64 outputs, or a model with `classes`), the share of each label, the
model's classes and those scored on the reference (at most MAX_OUTPUT_CLASSES; more, and there is no output
profile); for numeric scores, bins as a feature's. A file written without it (older, or a multi-column main output
such as PCA's transform) is served with input drift only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_BINS = 10
MAX_BINS = DEFAULT_BINS  # columns of the stored arrays: value bins, then missing
PARAMS_KEY = "reference_profile"
EDGES, N_BINS, FRACTIONS = "drift_edges", "drift_n_bins", "drift_fractions"
OUTPUT_EDGES, OUTPUT_FRACTIONS = "drift_output_edges", "drift_output_fractions"
ARRAY_NAMES = (EDGES, N_BINS, FRACTIONS)
OUTPUT_ARRAY_NAMES = (OUTPUT_EDGES, OUTPUT_FRACTIONS)
MAX_OUTPUT_CLASSES = 64  # two series per class at the metrics endpoint; more classes and the output has no profile
LABEL_DATATYPES = frozenset({"BYTES", "BOOL", "INT64"})  # a main output of these is a class label or a cluster id


@dataclass(frozen=True)
class OutputProfile:
    """The reference distribution of the main output: class shares (`labels` set) or score bins (as a feature's)."""

    name: str  # the output tensor's
    datatype: str
    labels: tuple[Any, ...] | None  # classes: the JSON labels, one per bin (numbers ascending; strings sorted); None: scores
    edges: np.ndarray  # float64; classes: each numeric label's value (empty for BYTES); scores: [MAX_BINS + 1] as a feature's
    n_bins: int
    fractions: np.ndarray  # float64; classes: [n_bins]; scores: [MAX_BINS + 1], the last column the missing share

    @property
    def bin_names(self) -> list[str]:
        """What the metrics call each bin: the class label, or the score bin's index."""
        if self.labels is None:
            return [str(b) for b in range(self.n_bins)]
        return [str(label).lower() if isinstance(label, bool) else str(label) for label in self.labels]

    @property
    def reference(self) -> np.ndarray:
        """The reference share of each bin (classes, or value bins), in bin order."""
        return self.fractions[: self.n_bins]

    def arrays(self) -> dict[str, np.ndarray]:
        return {OUTPUT_EDGES: self.edges, OUTPUT_FRACTIONS: self.fractions}

    def params(self) -> dict[str, Any]:
        labels = None if self.labels is None else list(self.labels)
        return {"name": self.name, "datatype": self.datatype, "labels": labels, "n_bins": self.n_bins}


@dataclass(frozen=True)
class ReferenceProfile:
    feature_names: tuple[str, ...]
    edges: np.ndarray  # float64 [n_features, MAX_BINS + 1]
    n_bins: np.ndarray  # int64 [n_features], 1..MAX_BINS
    fractions: np.ndarray  # float64 [n_features, MAX_BINS + 1]: value bins, then missing at column MAX_BINS
    output: OutputProfile | None = None

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays it adds to model.npz."""
        arrays = {EDGES: self.edges, N_BINS: self.n_bins.astype(np.int32), FRACTIONS: self.fractions}
        return arrays if self.output is None else {**arrays, **self.output.arrays()}

    def params(self) -> dict[str, Any]:
        """What it adds to the manifest's params."""
        spec: dict[str, Any] = {"feature_names": list(self.feature_names), "max_bins": MAX_BINS}
        if self.output is not None:
            spec["output"] = self.output.params()
        return {PARAMS_KEY: spec}


def profile_rows(rows: np.ndarray, feature_names: Sequence[str] | None, datatype: str) -> ReferenceProfile:
    """The profile of the reference rows (float64, NaN: missing), as the server will see them: an FP32 model's
    requests hold float32 values, so the edges are float32 values too and a value equal to one lands where it did here."""
    if datatype == "FP32":
        rows = rows.astype(np.float32).astype(np.float64)
    n_rows, n_features = rows.shape
    names = tuple(str(n) for n in feature_names) if feature_names is not None else tuple(str(j) for j in range(n_features))
    edges = np.zeros((n_features, MAX_BINS + 1))
    n_bins = np.ones(n_features, dtype=np.int64)
    fractions = np.zeros((n_features, MAX_BINS + 1))
    for j in range(n_features):  # once per feature, at export
        column = rows[:, j]
        present = column[~np.isnan(column)]
        fractions[j, MAX_BINS] = 1.0 - len(present) / n_rows
        if not len(present):  # never seen: one bin, so only the missing rate can move
            fractions[j, 0] = 0.0
            continue
        feature_edges = bin_edges(present, DEFAULT_BINS)
        count = len(feature_edges) - 1
        edges[j, : count + 1] = feature_edges
        edges[j, count + 1 :] = feature_edges[-1]
        n_bins[j] = count
        bins = np.searchsorted(feature_edges[1:-1], present, side="left")
        fractions[j, :count] = np.bincount(bins, minlength=count) / n_rows
    return ReferenceProfile(names, edges, n_bins, fractions)


def main_output(outputs: Sequence[Any]) -> Any | None:
    """The output (a TensorSpec) whose distribution is profiled: `predict` where the model has it, else the first;
    None where that one is not one value per row (PCA's transform, a multi-target predict)."""
    main = next((o for o in outputs if o.name == "predict"), outputs[0] if outputs else None)
    return main if main is not None and list(main.shape) == [-1] else None


def profile_output(values: np.ndarray, name: str, datatype: str, classes: Sequence[Any] | None) -> OutputProfile | None:
    """The profile of the main output scored on the reference rows (`values`, one per row, as the scorer returns
    them: BYTES as bytes objects), where it can have one. `classes`: the model's class labels (JSON), if it has any."""
    if not len(values):
        return None
    if classes is None and datatype not in LABEL_DATATYPES:
        scores = profile_rows(np.asarray(values, dtype=np.float64).reshape(-1, 1), [name], "FP64")
        return OutputProfile(name, datatype, None, scores.edges[0], int(scores.n_bins[0]), scores.fractions[0])
    if datatype == "BYTES":
        seen = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
        labels: list[Any] = sorted(set(seen) | {str(c) for c in classes or ()})
        keys = np.zeros(0)
        index = {label: b for b, label in enumerate(labels)}
        bins = np.fromiter((index[v] for v in seen), dtype=np.intp, count=len(seen))
    else:
        numbers = np.asarray(values, dtype=np.float64)
        keys = np.unique(np.concatenate([numbers, np.asarray(list(classes or ()), dtype=np.float64)]))
        labels = [_json_label(k, datatype) for k in keys]
        bins = np.searchsorted(keys, numbers)
    if len(labels) > MAX_OUTPUT_CLASSES:
        return None
    fractions = np.bincount(bins, minlength=len(labels)) / len(values)
    return OutputProfile(name, datatype, tuple(labels), keys, len(labels), fractions)


def _json_label(value: float, datatype: str) -> Any:
    if datatype == "BOOL":
        return bool(value)
    if datatype == "INT64":
        return int(value)
    return float(value)


def bin_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """[minimum, cut points..., maximum] of finite values: quantile cuts, merged where ties make them coincide."""
    low, high = float(values.min()), float(values.max())
    if low == high:  # three bins: below, at and above the constant (the edge below it is the float64 just under it)
        below = np.nextafter(low, -np.inf)
        return np.array([below, below, low, low])
    # cuts are values of the data (not interpolated between two), so no bin between two of its values is empty
    cuts = np.unique(np.quantile(values, np.arange(1, n_bins) / n_bins, method="inverted_cdf"))
    cuts = cuts[cuts < high]  # a cut at the maximum would leave the last bin empty
    return np.concatenate([[low], cuts, [high]])


def read_profile(params: dict[str, Any], arrays: dict[str, np.ndarray], n_features: int) -> ReferenceProfile | None:
    """The profile a loaded model file holds, None where it holds none; ValueError where it is inconsistent."""
    spec = params.get(PARAMS_KEY)
    if spec is None or not all(name in arrays for name in ARRAY_NAMES):
        return None
    names = spec.get("feature_names") if isinstance(spec, dict) else None
    if not isinstance(names, list) or len(names) != n_features or spec.get("max_bins") != MAX_BINS:
        raise ValueError(f"params.{PARAMS_KEY} must name {n_features} features and max_bins {MAX_BINS}")
    edges, n_bins, fractions = (arrays[name] for name in ARRAY_NAMES)
    shape = (n_features, MAX_BINS + 1)
    if edges.shape != shape or fractions.shape != shape or n_bins.shape != (n_features,):
        raise ValueError(f"the reference profile's arrays must be [{n_features}, {MAX_BINS + 1}] and [{n_features}]")
    n_bins = np.asarray(n_bins, dtype=np.int64)
    if n_bins.min(initial=1) < 1 or n_bins.max(initial=1) > MAX_BINS:
        raise ValueError(f"array '{N_BINS}' must hold bin counts from 1 to {MAX_BINS}")
    edges = np.ascontiguousarray(edges, dtype=np.float64)
    if np.any(np.diff(edges, axis=1) < 0):
        raise ValueError(f"array '{EDGES}' must be ascending per feature")
    output = _read_output(spec.get("output"), arrays)
    return ReferenceProfile(tuple(str(n) for n in names), edges, n_bins, np.ascontiguousarray(fractions, dtype=np.float64), output)


def _read_output(spec: Any, arrays: dict[str, np.ndarray]) -> OutputProfile | None:
    """The output's profile, None where the file has none (one written before output profiles, among others)."""
    if spec is None or not all(name in arrays for name in OUTPUT_ARRAY_NAMES):
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("n_bins"), int):
        raise ValueError(f"params.{PARAMS_KEY}.output must give the output's name and n_bins")
    labels, n_bins, datatype = spec.get("labels"), spec["n_bins"], str(spec.get("datatype", ""))
    edges = np.ascontiguousarray(arrays[OUTPUT_EDGES], dtype=np.float64).reshape(-1)
    fractions = np.ascontiguousarray(arrays[OUTPUT_FRACTIONS], dtype=np.float64).reshape(-1)
    if labels is None:
        if not 1 <= n_bins <= MAX_BINS or edges.shape != (MAX_BINS + 1,) or fractions.shape != (MAX_BINS + 1,) or np.any(np.diff(edges) < 0):
            raise ValueError(f"the output's score bins must be 1 to {MAX_BINS}, with ascending edges [{MAX_BINS + 1}]")
        return OutputProfile(spec["name"], datatype, None, edges, n_bins, fractions)
    if not isinstance(labels, list) or not 1 <= len(labels) == n_bins <= MAX_OUTPUT_CLASSES or fractions.shape != (n_bins,):
        raise ValueError(f"the output's classes must be 1 to {MAX_OUTPUT_CLASSES} labels, as many as its shares")
    if datatype != "BYTES" and (edges.shape != (n_bins,) or np.any(np.diff(edges) <= 0)):
        raise ValueError("the output's numeric class labels must be ascending, one value per class")
    return OutputProfile(spec["name"], datatype, tuple(labels), edges, n_bins, fractions)


PSI_EPSILON = 1e-4  # the share an empty bin counts as (in either population), so that its log ratio stays finite


def population_stability_index(reference: np.ndarray, live: np.ndarray) -> float:
    """PSI = sum over bins of (live - reference) * ln(live / reference), shares floored at PSI_EPSILON.
    Under 0.1: stable; 0.1 to 0.25: moving; over 0.25: the population has shifted (the usual reading)."""
    expected = np.maximum(reference, PSI_EPSILON)
    actual = np.maximum(live, PSI_EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))
