"""The reference profile a model's input drift is measured against: per feature, quantile bins of the training rows.

Written at export from `background` (the training rows), read at load: extra arrays of model.npz, which no
scorer reads, and `params["reference_profile"]` with the feature names. A model without them has no profile.

Bins of feature j: `edges[j, 0]` is the reference minimum, `edges[j, n_bins[j]]` its maximum, and
`edges[j, 1 : n_bins[j]]` the cut points between bins; bin i holds the values in (edges[i], edges[i + 1]],
the first bin everything up to edges[1] and the last everything above edges[n_bins - 1] (right-closed bins, as
`np.searchsorted(cuts, x, side="left")` numbers them). Ties in the reference merge quantiles that coincide, so a
feature may have fewer bins; a constant feature c gets three: below c, c, above c. `fractions[j]` holds the share
of reference rows in each bin, and at column MAX_BINS the share of rows where the feature is missing (NaN).
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
ARRAY_NAMES = (EDGES, N_BINS, FRACTIONS)


@dataclass(frozen=True)
class ReferenceProfile:
    feature_names: tuple[str, ...]
    edges: np.ndarray  # float64 [n_features, MAX_BINS + 1]
    n_bins: np.ndarray  # int64 [n_features], 1..MAX_BINS
    fractions: np.ndarray  # float64 [n_features, MAX_BINS + 1]: value bins, then missing at column MAX_BINS

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays it adds to model.npz."""
        return {EDGES: self.edges, N_BINS: self.n_bins.astype(np.int32), FRACTIONS: self.fractions}

    def params(self) -> dict[str, Any]:
        """What it adds to the manifest's params."""
        return {PARAMS_KEY: {"feature_names": list(self.feature_names), "max_bins": MAX_BINS}}


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
    return ReferenceProfile(tuple(str(n) for n in names), edges, n_bins, np.ascontiguousarray(fractions, dtype=np.float64))


PSI_EPSILON = 1e-4  # the share an empty bin counts as (in either population), so that its log ratio stays finite


def population_stability_index(reference: np.ndarray, live: np.ndarray) -> float:
    """PSI = sum over bins of (live - reference) * ln(live / reference), shares floored at PSI_EPSILON.
    Under 0.1: stable; 0.1 to 0.25: moving; over 0.25: the population has shifted (the usual reading)."""
    expected = np.maximum(reference, PSI_EPSILON)
    actual = np.maximum(live, PSI_EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))
