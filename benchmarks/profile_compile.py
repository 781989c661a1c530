"""What a cold model load compiles: our kernels and the numba internals each one pulls in, with their times.

For each family one model is exported into a temporary repository and loaded, as a
server worker loads it (`repository.Model.load`: build the scorer, compile, warm up),
in a fresh Python process whose NUMBA_CACHE_DIR is a fresh empty directory. numba's
event API ("numba:compile", fired only for a real compile, never for a cache hit)
records every compilation with its dispatcher and argument types; compilations nest
(a kernel's lowering compiles its callees and numba's own @overload implementations),
so the events form a tree. Printed per model: the total load time, the tree (total
and self time of each node; nodes under --min-ms are folded into their parent), and
the numba internals ranked by summed self time.

    python benchmarks/profile_compile.py                      # every family (~1-3 min cold on 2 cores)
    python benchmarks/profile_compile.py --family logistic svc
    python benchmarks/profile_compile.py --family kmeans --min-ms 20 --repeat 3
    python benchmarks/profile_compile.py --summary            # one line per model: load time, ours vs internals

Tree times are CPU seconds of the child (compiling is single-threaded), steadier than wall time on a loaded machine;
`--baseline DIR` loads each model from a copy of the repository too, alternating, for an A/B in one run.
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
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

warnings.filterwarnings("ignore")

CHILD = r"""
import json, os, pathlib, sys, time
started = time.perf_counter()
if os.environ.get("PROFILE_COMPILE_SOURCE"):  # load tensorwire from another copy of the repository (an A/B baseline)
    import __editable___tensorwire_0_1_0_finder as finder
    for package, folder in finder.MAPPING.items():
        finder.MAPPING[package] = folder.replace(os.environ["PROFILE_COMPILE_REPO"], os.environ["PROFILE_COMPILE_SOURCE"], 1)
import numpy as np
from numba.core import event

events = []   # (id, parent id, module, qualname, args, start, end, cpu start, cpu end)
stack = []

class Recorder(event.Listener):
    def on_start(self, ev):
        d = ev.data["dispatcher"]
        f = d.py_func
        events.append([len(events), stack[-1] if stack else -1, getattr(f, "__module__", "?") or "?",
                       getattr(f, "__qualname__", str(f)), str(tuple(ev.data["args"])), time.perf_counter(), None, time.process_time(), None])
        stack.append(len(events) - 1)

    def on_end(self, ev):
        e = events[stack.pop()]
        e[6], e[8] = time.perf_counter(), time.process_time()

event.register("numba:compile", Recorder())
from tensorwire.server.repository.model_repository import Model
assert Model.load.__code__.co_filename.startswith(os.environ.get("PROFILE_COMPILE_SOURCE") or os.environ["PROFILE_COMPILE_REPO"])
imported, cpu = time.perf_counter(), time.process_time()
model = Model.load("m", "1", pathlib.Path(sys.argv[1]))
loaded = time.perf_counter()
print(json.dumps({"import": imported - started, "load": loaded - imported, "load_cpu": time.process_time() - cpu, "events": events}))
"""


def models(n_features: int = 20) -> dict[str, tuple[str, Callable[[], Any]]]:
    """family -> (description, fitted estimator factory)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_classification, make_regression
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, SVR, LinearSVC

    X, y = make_classification(600, n_features, n_informative=10, n_classes=4, random_state=0)
    Xr, yr = make_regression(600, n_features, noise=3.0, random_state=0)
    return {
        "logistic": ("StandardScaler + LogisticRegression, 4 classes", lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)),
        "ridge": ("Ridge", lambda: Ridge().fit(Xr, yr)),
        "svc": ("StandardScaler + SVC rbf, 4 classes, probability", lambda: make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)).fit(X, y)),
        "svr": ("SVR poly", lambda: SVR(kernel="poly").fit(Xr, yr / np.abs(yr).max())),
        "kmeans": ("KMeans, 8 clusters", lambda: KMeans(8, n_init=1, random_state=0).fit(X)),
        "pca": ("StandardScaler + PCA whiten, 5 components", lambda: make_pipeline(StandardScaler(), PCA(5, whiten=True)).fit(X)),
        "trees": ("HistGradientBoostingClassifier, 20 trees", lambda: HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X, y)),
        "mlp": ("MLPClassifier (32,)", lambda: MLPClassifier((32,), max_iter=50, random_state=0).fit(X, y)),
        "neighbors": ("KNeighborsClassifier k=5", lambda: KNeighborsClassifier(5).fit(X, y)),
        "calibration": ("CalibratedClassifierCV(LinearSVC)", lambda: CalibratedClassifierCV(LinearSVC(), cv=3).fit(X, y)),
    }


REPO = pathlib.Path(__file__).resolve().parent.parent


def run_child(path: pathlib.Path, cache: pathlib.Path, source: pathlib.Path | None) -> dict[str, Any]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "OPENBLAS_NUM_THREADS": "1", "PROFILE_COMPILE_REPO": str(REPO)}
    if source is not None:
        env["PROFILE_COMPILE_SOURCE"] = str(source.resolve())
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"loading {path} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _name(event: list[Any]) -> str:
    module, qualname, args = event[2], event[3], event[4]
    return f"{module}.{qualname} {args}"


def _ours(event: list[Any]) -> bool:
    return str(event[2]).startswith("tensorwire")


def report(result: dict[str, Any], min_ms: float, tree: bool) -> tuple[float, float, float]:
    """Print the compile tree (CPU seconds) and the internals ranking; return (compile total, our self time, internals self time)."""
    events = result["events"]
    children: dict[int, list[int]] = defaultdict(list)
    for e in events:
        children[e[1]].append(e[0])
    total = {e[0]: e[8] - e[7] for e in events}
    self_time = {i: total[i] - sum(total[c] for c in children[i]) for i in total}

    def show(i: int, depth: int) -> None:
        e = events[i]
        mark = "" if _ours(e) else "  [numba]"
        print(f"{'  ' * depth}{total[i]:6.2f} (self {self_time[i]:5.2f})  {_name(e)[:220]}{mark}")
        folded = [c for c in children[i] if total[c] * 1e3 < min_ms]
        for c in children[i]:
            if total[c] * 1e3 >= min_ms:
                show(c, depth + 1)
        if folded:
            print(f"{'  ' * (depth + 1)}{sum(total[c] for c in folded):6.2f} in {len(folded)} smaller compiles")

    if tree:
        print("  compile tree, CPU seconds (total, self = total less nested compiles):")
        for root in children[-1]:
            show(root, 1)
    ours = sum(self_time[e[0]] for e in events if _ours(e))
    internals = sum(self_time[e[0]] for e in events if not _ours(e))
    if tree:
        by_impl: dict[str, list[float]] = defaultdict(list)
        for e in events:
            if not _ours(e):
                by_impl[_name(e)].append(self_time[e[0]])
        ranked = sorted(by_impl.items(), key=lambda kv: -sum(kv[1]))
        print("  numba internals by self time (CPU s):")
        for name, times in ranked[:15]:
            print(f"    {sum(times):6.2f}  x{len(times):<3d} {name[:160]}")
    compiled = sum(total[r] for r in children[-1])
    return compiled, ours, internals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", nargs="*", help="families to profile (default: all)")
    parser.add_argument("--min-ms", type=float, default=50.0, help="fold compiles shorter than this (CPU ms) into their parent")
    parser.add_argument("--repeat", type=int, default=1, help="cold loads per model (each with a fresh cache)")
    parser.add_argument("--summary", action="store_true", help="one line per load, no tree")
    parser.add_argument("--baseline", type=pathlib.Path, help="a copy of the repository to load each model from too, alternating (A/B)")
    parser.add_argument("--source", type=pathlib.Path, help="load tensorwire from this copy of the repository instead")
    args = parser.parse_args()

    import tensorwire

    families = models()
    chosen = args.family or list(families)
    sources: list[tuple[str, pathlib.Path | None]] = [("", args.source)] if args.baseline is None else [("base ", args.baseline), ("new  ", args.source)]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; each load in a fresh process with an empty numba cache\n")
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        for family in chosen:
            description, factory = families[family]
            path = tensorwire.export(factory(), root / "models" / family / "1", dtype="float32")
            for attempt in range(args.repeat):
                for label, source in sources:
                    cache = pathlib.Path(tempfile.mkdtemp(dir=root))
                    result = run_child(path, cache, source)
                    if not args.summary:
                        print(f"== {label}{family}: {description} (cold load {attempt + 1})")
                    compiled, ours, internals = report(result, args.min_ms, tree=not args.summary)
                    print(f"{label}{family:12s} load {result['load']:6.2f} s wall, {result['load_cpu']:6.2f} s CPU (compiling {compiled:.2f} s CPU: "
                          f"our kernels' own {ours:.2f}, numba internals {internals:.2f}; {len(result['events'])} compiles)", flush=True)


if __name__ == "__main__":
    main()
