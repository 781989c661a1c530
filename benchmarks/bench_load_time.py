"""Model load time per family, as a server worker pays it: cold (empty numba cache) and warm (the cache the cold run wrote).

For each family one model is exported into a temporary repository; then, twice, a
fresh Python process imports the server, calls `repository.Model.load` (read the
file, build the scorer, compile every kernel it uses: the parallel variants while
the scorer is built, the serial ones in the 1- and 64-row warm-up) and scores one
more row. Both processes get NUMBA_CACHE_DIR pointing at a directory of their
family's own, empty before the first: the first start compiles everything and
fills it, the second loads compiled code from it. The reference in the same run
is the linear model (logistic regression) of the walking skeleton.

    python benchmarks/bench_load_time.py            # all families, ~1-3 minutes cold on 2 cores
    python benchmarks/bench_load_time.py --only svc kmeans
    python benchmarks/bench_load_time.py --only trees "trees (LightGBM)"   # the 1,000-tree models (LightGBM's only where it is installed)

Columns: import (s) = importing the server and numpy in the fresh process; load (s)
= Model.load; 1 row (µs) = one more 1-row score after load (no compilation may be
left); cache files = entries numba wrote (warm: new entries, which should be 0).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

warnings.filterwarnings("ignore")  # scikit-learn 1.9 deprecates SVC(probability=True); it is still what we mirror

CHILD = r"""
import json, pathlib, sys, time
started = time.perf_counter()
import numpy as np
from tensorwire.server.repository.model_repository import Model
imported = time.perf_counter()
model = Model.load("m", "1", pathlib.Path(sys.argv[1]))
loaded = time.perf_counter()
X = np.frombuffer(np.ones(model.manifest.n_features, dtype=model.input_dtype).tobytes(), dtype=model.input_dtype).reshape(1, -1)
model.scorer.score(X, model.output_names)
t = time.perf_counter()
for _ in range(200):
    model.scorer.score(X, model.output_names)
one_row = (time.perf_counter() - t) / 200
print(json.dumps({"import": imported - started, "load": loaded - imported, "one_row": one_row}))
"""


def models(n_features: int = 20) -> dict[str, tuple[str, Callable[[], Any]]]:
    """family -> (description, fitted estimator factory); data of a size a served model might have."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.datasets import make_classification, make_regression
    from sklearn.decomposition import PCA, TruncatedSVD
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler
    from sklearn.svm import SVC, SVR, OneClassSVM

    X, y = make_classification(2000, n_features, n_informative=10, n_classes=4, random_state=0)
    Xr, yr = make_regression(2000, n_features, noise=3.0, random_state=0)
    return {
        "linear (reference)": ("StandardScaler + LogisticRegression, 4 classes", lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)),
        "svc": ("StandardScaler + SVC rbf, 4 classes, probability", lambda: make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)).fit(X, y)),
        "svr": ("SVR poly", lambda: SVR(kernel="poly").fit(Xr, yr / np.abs(yr).max())),
        "one_class_svm": ("OneClassSVM sigmoid", lambda: OneClassSVM(kernel="sigmoid", gamma=0.01).fit(X)),
        "kmeans": ("KMeans, 8 clusters", lambda: KMeans(8, n_init=1, random_state=0).fit(X)),
        "projection": ("StandardScaler + PCA whiten, 5 components", lambda: make_pipeline(StandardScaler(), PCA(5, whiten=True)).fit(X)),
        "staged svc": ("StandardScaler + PCA + SVC rbf (a projection stage)", lambda: make_pipeline(StandardScaler(), PCA(8), SVC()).fit(X, y)),
        "staged kmeans": ("Normalizer + TruncatedSVD + MiniBatchKMeans", lambda: make_pipeline(Normalizer(), TruncatedSVD(6, random_state=0), MiniBatchKMeans(5, n_init=1, random_state=0)).fit(X)),
        "trees": ("HistGradientBoostingClassifier, 1,000 trees of 31 leaves", lambda: _hgb_1000(X, y)),
        **({"trees (LightGBM)": ("LightGBM LGBMClassifier, 1,000 trees of 31 leaves", lambda: _lightgbm_1000(X, y))} if _has("lightgbm") else {}),
    }


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _hgb_1000(X: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    binary = (y > 1).astype(int)  # one tree per iteration
    return HistGradientBoostingClassifier(max_iter=1000, early_stopping=False, random_state=0).fit(X, binary)


def _lightgbm_1000(X: np.ndarray, y: np.ndarray) -> Any:
    import lightgbm

    binary = (y > 1).astype(int)
    return lightgbm.LGBMClassifier(n_estimators=1000, num_leaves=31, min_child_samples=5, random_state=0, verbose=-1).fit(X, binary)


def run_child(path: pathlib.Path, cache: pathlib.Path) -> dict[str, float]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"loading {path} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def count_files(folder: pathlib.Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="families to measure (default: all)")
    args = parser.parse_args()

    import tensorwire

    families = models()
    chosen = args.only or list(families)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; every figure from a fresh process\n")
    header = ["family", "model", "cold import s", "cold load s", "warm import s", "warm load s", "1 row µs", "cache files cold / warm"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        for family in chosen:
            description, factory = families[family]
            path = tensorwire.export(factory(), root / "models" / family.replace(" ", "_") / "1", dtype="float32")
            cache = root / "cache" / family.replace(" ", "_")
            cache.mkdir(parents=True)
            cold = run_child(path, cache)
            cold_files = count_files(cache)
            warm = run_child(path, cache)
            warm_files = count_files(cache) - cold_files
            print(f"{family} | {description} | {cold['import']:.2f} | {cold['load']:.2f} | {warm['import']:.2f} | {warm['load']:.3f} | "
                  f"{warm['one_row'] * 1e6:.1f} | {cold_files} / {warm_files}", flush=True)


if __name__ == "__main__":
    main()
