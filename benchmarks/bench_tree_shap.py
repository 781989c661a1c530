"""TreeSHAP contributions: tensorwire's `contributions` output beside shap's TreeExplainer, µs per row, one thread, one run.

The models are bench_trees.py's (lgbm500, xgb500, rf100, hgb200; the same builders, data and
seeds). For each, at batch 1, 64 and 4096 rows of float32 data:

    shap        shap.TreeExplainer(model) (feature_perturbation "tree_path_dependent", the default without
                background data) .shap_values(X, check_additivity=False). For scikit-learn models that is
                shap's C++ TreeSHAP (single-threaded); for XGBoost and LightGBM shap hands the rows to the
                library's own TreeSHAP (pred_contribs / pred_contrib), which runs with n_jobs=1 and OpenMP
                capped at one thread (threadpoolctl)
    tensorwire  tensorwire.export(model, dtype="float32") -> load_model -> build_scorer, then
                scorer.score(X, ["contributions"]) on read-only float32 rows, one numba thread

Before timing, both engines explain the same 256 rows and the largest difference, relative to the
largest absolute raw score, is printed (it must be below 1e-6 for fp64 arithmetic; tensorwire's
FP32 output rounds to float32, so up to ~1e-6 here). `speed-up` is shap's time / tensorwire's.
Each figure is the median over --repeats blocks (default 5) of the mean time per call, divided by the
batch size; a block is calls until --block-ms (default 100) has passed, one call at least, after one
untimed call, the two engines' blocks alternating. The batch-4096 column is timed on --large-rows rows (default 4096): shap needs about a
quarter of a second per row on rf100's 100 fully grown trees (a 4096-row call, some 16 minutes, is timed six
times), so rf100 is run on its own with fewer (the table says how many):

    python benchmarks/bench_tree_shap.py --models lgbm500,xgb500,hgb200
    python benchmarks/bench_tree_shap.py --models rf100 --large-rows 128 --repeats 3

    python benchmarks/bench_tree_shap.py                 # full run
    python benchmarks/bench_tree_shap.py --quick         # bench_trees' quick models (50 trees; rf 20), fewer repeats
    python benchmarks/bench_tree_shap.py --models xgb500,rf100
    python benchmarks/bench_tree_shap.py --json          # one JSON document on stdout
    python benchmarks/bench_tree_shap.py --models rf100 --quick --large-rows 128 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("TENSORWIRE_KERNEL_THREADS", "1")

import numpy as np
from bench_trees import SPECS, fit_model, make_data, progress, readonly  # noqa: E402 - a sibling script module

BATCHES = (1, 64, 4096)
CHECK_ROWS = 256


def shap_engine(estimator: Any) -> Any:
    import shap

    explainer = shap.TreeExplainer(estimator)
    return lambda X: explainer.shap_values(X, check_additivity=False)


def tensorwire_engine(estimator: Any, workdir: pathlib.Path) -> tuple[Any, float]:
    from tensorwire.server.modeling.export import export
    from tensorwire.server.modeling.registry import build_scorer
    from tensorwire.server.repository.model_format import load_model

    start = time.perf_counter()
    stored = load_model(export(estimator, workdir, dtype="float32"))
    scorer = build_scorer(stored.manifest, stored.arrays)
    return (lambda X: scorer.score(X, ["contributions"])[0]), time.perf_counter() - start


def as_tensorwire_layout(values: Any, n_rows: int, n_features: int, expected_value: Any) -> np.ndarray:
    """shap's (rows, F) / (rows, F, k) or a library's (rows, F + 1) / (rows, k, F + 1) as [rows, k, F] (no expected value column)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == n_features + 1:
        return values[:, None, :-1]
    if values.ndim == 2:
        return values[:, None, :]
    if values.shape[1] == n_features:
        return values.transpose(0, 2, 1)
    return values[:, :, :-1]


def seconds_per_call(engines: dict[str, Any], repeats: int, block_s: float) -> dict[str, float]:
    """For each engine, the median over `repeats` blocks of the mean seconds per call, a block being calls until
    block_s has passed (one call at least), after one untimed call; the engines' blocks alternate, so that a
    change in the machine's load falls on both."""
    samples: dict[str, list[float]] = {name: [] for name in engines}
    for fn in engines.values():
        fn()
    for _ in range(repeats):
        for name, fn in engines.items():
            calls, start = 0, time.perf_counter()
            while calls == 0 or time.perf_counter() - start < block_s:
                fn()
                calls += 1
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: float(np.median(values)) for name, values in samples.items()}


def bench_model(key: str, quick: bool, repeats: int, block_s: float, large_rows: int, workdir: pathlib.Path) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    spec = SPECS[key]
    X_train, y_train, X_check = make_data(spec.quick_train_rows if quick else spec.train_rows)
    fitted = fit_model(spec, quick, X_train, y_train)
    progress(f"{key}: {fitted.description}")
    tw, load_s = tensorwire_engine(fitted.estimator, workdir / key / "1")
    reference = shap_engine(fitted.estimator)
    rows = readonly(X_check[:CHECK_ROWS])
    with threadpool_limits(1):
        ours = np.asarray(tw(rows), dtype=np.float64)
        theirs = as_tensorwire_layout(reference(rows), CHECK_ROWS, X_check.shape[1], None)
    ours3 = ours.reshape(CHECK_ROWS, -1, X_check.shape[1] + 1)
    if ours3.shape[1] != theirs.shape[1]:  # shap gives a binary forest's two probability columns, or one margin
        ours3 = ours3[:, -theirs.shape[1]:]
    scale = float(np.abs(ours3.sum(axis=2)).max())
    difference = float(np.abs(ours3[:, :, :-1] - theirs).max()) / max(scale, 1e-12)
    timings: dict[str, dict[int, float]] = {"shap": {}, "tensorwire": {}}
    for batch in BATCHES:
        n = min(batch, large_rows)
        X = readonly(X_check[:n])
        with threadpool_limits(1):
            seconds = seconds_per_call({"shap": lambda X=X: reference(X), "tensorwire": lambda X=X: tw(X)}, repeats, block_s)
        for name in timings:
            timings[name][batch] = seconds[name] * 1e6 / n
        progress(f"  batch {batch}: shap {timings['shap'][batch]:.1f} µs/row, tensorwire {timings['tensorwire'][batch]:.1f} µs/row")
    return {"model": key, "description": fitted.description, "load_s": load_s, "max_rel_difference": difference, "us_per_row": timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--models", default=",".join(SPECS))
    parser.add_argument("--large-rows", type=int, default=4096, help="rows timed for the batch-4096 column")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per figure (the median is shown)")
    parser.add_argument("--block-ms", type=float, default=100.0, help="shortest timed block")
    options = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in options.models.split(","):
            results.append(bench_model(key, options.quick, options.repeats, options.block_ms / 1e3, options.large_rows, pathlib.Path(tmp)))
    if options.json:
        json.dump(results, sys.stdout, indent=2)
        return 0
    print(f"{'model':<9} {'batch':>6} {'shap µs/row':>12} {'tensorwire µs/row':>18} {'speed-up':>9}")
    for result in results:
        for batch in BATCHES:
            ref, ours = result["us_per_row"]["shap"][batch], result["us_per_row"]["tensorwire"][batch]
            print(f"{result['model']:<9} {batch:>6} {ref:>12.1f} {ours:>18.1f} {ref / ours:>8.2f}x")
    print()
    for result in results:
        print(f"{result['model']}: {result['description']}; export+load {result['load_s']:.2f} s; max |Δ| / max |raw| {result['max_rel_difference']:.1e}")
    if options.large_rows < 4096:
        print(f"the batch-4096 column was timed on {options.large_rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
