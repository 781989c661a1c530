"""µs per call for a 32-64-64-3 MLPClassifier's predict_proba: tensorwire's scorer, scikit-learn, ONNX Runtime (1 thread).

tensorwire   tensorwire.export(model, dtype="float32") -> load_model -> build_scorer, then scorer.score (in-process)
sklearn      MLPClassifier.predict_proba
onnxruntime  skl2onnx conversion (zipmap off), InferenceSession with one intra-op and one inter-op thread

Run: python benchmarks/bench_mlp.py [--repeat N]
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time
import warnings
from collections.abc import Callable

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

import tensorwire
from tensorwire.server.modeling.registry import build_scorer
from tensorwire.server.repository.model_format import load_model


def per_call_us(fn: Callable[[], object], budget_s: float) -> float:
    """Best of five rounds of the median-sized loop: µs per call."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    loops = max(1, int(budget_s / 5 / one))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - t0) / loops)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per measurement")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4096, 32)).astype(np.float32)
    y = rng.integers(0, 3, size=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=5, random_state=0).fit(X, y)

    with tempfile.TemporaryDirectory() as tmp:
        stored = load_model(tensorwire.export(model, pathlib.Path(tmp) / "mlp" / "1", dtype="float32"))
    scorer = build_scorer(stored.manifest, stored.arrays)

    import onnxruntime as ort
    from skl2onnx import to_onnx

    onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}})
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(onx.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    print(f"{'batch':>6} {'tensorwire µs':>14} {'sklearn µs':>11} {'onnxruntime µs':>15} {'sk/tw':>7} {'ort/tw':>7}")
    for n in (1, 64, 4096):
        Xn = np.ascontiguousarray(X[:n])
        np.testing.assert_allclose(scorer.score(Xn, ["predict_proba"])[0], model.predict_proba(Xn), rtol=1e-4, atol=1e-5)
        tw = per_call_us(lambda: scorer.score(Xn, ["predict_proba"]), args.budget)
        sk = per_call_us(lambda: model.predict_proba(Xn), args.budget)
        ox = per_call_us(lambda: session.run(None, {name: Xn}), args.budget)
        print(f"{n:>6} {tw:>14.1f} {sk:>11.1f} {ox:>15.1f} {sk / tw:>7.2f} {ox / tw:>7.2f}")


if __name__ == "__main__":
    main()
