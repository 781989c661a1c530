"""Nearest neighbours: µs per call for tensorwire's scorer beside scikit-learn's fastest algorithm and ONNX Runtime (1 thread).

    python benchmarks/bench_neighbors.py [--quick]

KNeighborsClassifier(k=5) fitted on N x 32 standard-normal rows (N = 10,000 and 200,000; --quick: 10,000
only, batches 1 and 64); each engine asked for predict_proba at batch 1, 64 and 4096. tensorwire goes
export(float32) -> load_model -> build_scorer -> scorer.score, as bench_trees.py's tensorwire_engine does.
scikit-learn: brute, kd_tree and ball_tree each timed, the fastest reported. ratio = best other / tensorwire.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sklearn.neighbors import KNeighborsClassifier

from tensorwire.server.modeling.export import export
from tensorwire.server.modeling.registry import build_scorer
from tensorwire.server.repository.model_format import load_model


def per_call_us(fn: Callable[[], Any], budget_s: float = 0.5) -> float:
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget_s or calls < 2:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    quick = "--quick" in sys.argv
    rng = np.random.default_rng(0)
    sizes = [10_000] if quick else [10_000, 200_000]
    batches = [1, 64] if quick else [1, 64, 4096]
    print(f"{'train rows':>10} {'batch':>6} {'tensorwire':>12} {'sklearn best':>20} {'onnxruntime':>12} {'ratio':>6}")
    for n in sizes:
        X = rng.normal(size=(n, 32))
        y = rng.integers(0, 3, n)
        fits = {a: KNeighborsClassifier(5, algorithm=a).fit(X, y) for a in ("brute", "kd_tree", "ball_tree")}
        with tempfile.TemporaryDirectory() as tmp:
            stored = load_model(export(fits["brute"], Path(tmp) / "m" / "1", dtype="float32"))
            scorer = build_scorer(stored.manifest, stored.arrays)
            ort = None
            try:
                import onnxruntime as rt
                from skl2onnx import to_onnx

                options = rt.SessionOptions()
                options.intra_op_num_threads = 1
                onx = to_onnx(fits["brute"], X[:1].astype(np.float32), options={id(fits["brute"]): {"zipmap": False}})
                ort = rt.InferenceSession(onx.SerializeToString(), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001 - the column says error
                print(f"onnxruntime: {exc}")
            for b in batches:
                Q = rng.normal(size=(b, 32)).astype(np.float32)
                ours = per_call_us(lambda: scorer.score(Q, ["predict_proba"]))
                skl = {a: per_call_us(lambda m=m: m.predict_proba(Q)) for a, m in fits.items()}
                best = min(skl, key=skl.__getitem__)
                onnx = per_call_us(lambda: ort.run(None, {ort.get_inputs()[0].name: Q})) if ort is not None else float("nan")
                ratio = min(skl[best], onnx if onnx == onnx else np.inf) / ours
                print(f"{n:>10} {b:>6} {ours:>12.1f} {skl[best]:>11.1f} ({best:>7}) {onnx:>12.1f} {ratio:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
