"""The layout's rules, from every module's imports; the family registry is complete; a serving process imports no
export-only library; the README's estimator table is true.

Import rules: kernels import nothing of tensorwire's but kernels; protos nothing
but protos; the client nothing of the server's, the kernels' or the command
line's; no family imports another family; nothing imports from a package above
it (its `__init__`'s names); no private name (`_x`) is imported from another
module, and a private module only from its own package.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import pkgutil
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
GENERATED = {"tensorwire.protos.inference_pb2"}
FAMILIES = "tensorwire.server.families"


def package_dirs() -> dict[str, pathlib.Path]:
    """Each installed package's source folder, as pyproject.toml maps them."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {package: ROOT / folder for package, folder in setuptools["package-dir"].items()}


def source_modules() -> dict[str, pathlib.Path]:
    """Every module of tensorwire by its dotted name (a package by its name, from its __init__.py)."""
    modules: dict[str, pathlib.Path] = {}
    for package, folder in package_dirs().items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


MODULES = source_modules()


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # a module
    name: str | None  # an attribute of it, or None when the module itself is imported
    line: int

    def __str__(self) -> str:
        what = self.target if self.name is None else f"{self.name} from {self.target}"
        return f"{self.importer} line {self.line} imports {what}"


def is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py" if module in MODULES else False


def imports_of(module: str) -> Iterator[Import]:
    """Every tensorwire import in a module, wherever it sits (functions included), resolved to modules."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if is_package(module) else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tensorwire":
                    yield Import(module, alias.name, None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "tensorwire":
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in MODULES:
                    yield Import(module, submodule, None, node.lineno)
                else:
                    yield Import(module, base, alias.name, node.lineno)


ALL_IMPORTS = [imp for module in sorted(MODULES) if module not in GENERATED for imp in imports_of(module)]


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def test_the_walk_sees_the_layout() -> None:
    """Guards the walk itself: it finds the parts and their imports."""
    for part in ("tensorwire.cli", "tensorwire.client.client", "tensorwire.kernels.linear", "tensorwire.server.inference.handler", "tensorwire.server.families.linear"):
        assert part in MODULES
    assert any(i.importer == "tensorwire.server.inference.handler" and i.target == "tensorwire.server.repository.model_repository" for i in ALL_IMPORTS)
    assert len(ALL_IMPORTS) > 200


@pytest.mark.parametrize(
    ("part", "allowed"),
    [
        ("tensorwire.kernels", ("tensorwire.kernels",)),
        ("tensorwire.protos", ("tensorwire.protos",)),
        ("tensorwire.client", ("tensorwire.client", "tensorwire.protos")),
    ],
)
def test_parts_import_only_what_they_may(part: str, allowed: tuple[str, ...]) -> None:
    wrong = [str(i) for i in ALL_IMPORTS if within(i.importer, part) and not any(within(i.target, ok) for ok in allowed)]
    assert wrong == []


def family_of(module: str) -> str | None:
    """The family a module belongs to: a module of the families package, or any module inside a family that is a package."""
    if not within(module, FAMILIES) or module == FAMILIES:
        return None
    return ".".join(module.split(".")[: FAMILIES.count(".") + 2])


def test_no_family_imports_another() -> None:
    wrong = [
        str(i) for i in ALL_IMPORTS
        if family_of(i.importer) is not None and family_of(i.target) is not None and family_of(i.importer) != family_of(i.target)
    ]
    assert wrong == []


def test_nothing_imports_upwards() -> None:
    """No module takes names from a package above it: a package's __init__ may import its parts, not the reverse."""
    wrong = [
        str(i) for i in ALL_IMPORTS
        if i.importer != i.target and within(i.importer, i.target) and is_package(i.target) and (i.name is not None or i.target == "tensorwire")
    ]
    assert wrong == []


def test_no_private_name_crosses_a_module() -> None:
    def private(part: str) -> bool:
        return part.startswith("_") and not part.startswith("__")

    wrong = []
    for i in ALL_IMPORTS:
        if i.name is not None and private(i.name):
            wrong.append(str(i))
        target_package = i.target.rpartition(".")[0]
        if private(i.target.rpartition(".")[2]) and not within(i.importer, target_package):
            wrong.append(str(i))
    assert wrong == []


# --- families ------------------------------------------------------------------------


def test_every_family_module_registers_a_scorer_and_an_exporter() -> None:
    from tensorwire.server.modeling.registry import EXPORTERS, SCORERS, load_families

    families = sorted(f"{FAMILIES}.{m.name}" for m in pkgutil.iter_modules([str(MODULES[FAMILIES].parent)]))
    assert sorted(load_families()) == families and len(families) >= 4
    for family in families:
        assert any(family_of(factory.__module__) == family for factory in SCORERS.values()), f"{family} registers no scorer"
        assert any(family_of(entry.exporter.__module__) == family for entry in EXPORTERS.values()), f"{family} registers no exporter"


def test_every_exportable_estimator_has_a_scorer_and_every_scorer_an_exporter() -> None:
    from tensorwire.server.modeling.registry import EXPORTERS, EXPORTERS_BY_NAME, SCORERS, load_families

    load_families()
    assert {cls.__name__: entry.kind for cls, entry in EXPORTERS.items() if entry.kind not in SCORERS} == {}
    assert set(SCORERS) == {entry.kind for entry in [*EXPORTERS.values(), *EXPORTERS_BY_NAME.values()]}
    assert {name: entry.kind for name, entry in EXPORTERS_BY_NAME.items() if entry.kind not in SCORERS} == {}


# --- what a serving process imports -----------------------------------------------------

EXPORT_ONLY_LIBRARIES = ("sklearn", "scipy", "pandas")

# In a fresh process: compile a first numba function (numba itself imports scipy's top-level package to check its
# version, and scipy.linalg's BLAS when it first compiles or loads from its cache), then do what a worker does
# (load_families, build each model's scorer, which warms it) and print every module loaded since.
SERVING_SCRIPT = """
import sys
import numba
numba.njit(lambda: 0)()
before = set(sys.modules)
from tensorwire.server.modeling.registry import build_scorer, load_families
from tensorwire.server.repository.model_format import load_model
load_families()
for path in sys.argv[1:]:
    model = load_model(path)
    build_scorer(model.manifest, model.arrays, path)
for name in sorted(set(sys.modules) - before):
    print(name)
"""


def one_model_of_each_kind() -> dict[str, Any]:
    """A small fitted estimator (or Pipeline) for every model kind, keyed by the kind it exports as."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.cluster import DBSCAN, KMeans
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsClassifier, RadiusNeighborsRegressor
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, SVR, OneClassSVM

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4))
    labels = (X[:, 0] > 0).astype(int)
    values = X @ rng.standard_normal(4)
    return {
        "linear_classifier": LogisticRegression().fit(X, labels),
        "linear_regressor": Ridge().fit(X, values),
        "svc": SVC().fit(X, labels),
        "svr": SVR().fit(X, values),
        "one_class_svm": OneClassSVM().fit(X),
        "kmeans": KMeans(n_clusters=3, n_init=1, random_state=0).fit(X),
        "projection": make_pipeline(StandardScaler(), PCA(n_components=2)).fit(X),
        "neighbors": KNeighborsClassifier(n_neighbors=3).fit(X, labels),
        "radius_neighbors": RadiusNeighborsRegressor(radius=10.0).fit(X, values),
        "mlp": MLPRegressor(hidden_layer_sizes=(5,), max_iter=20, random_state=0).fit(X, values),
        "tree_ensemble": RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(X, labels),
        "dbscan": DBSCAN(eps=1.5).fit(X),
        "calibrated_classifier": CalibratedClassifierCV(LogisticRegression(), cv=2).fit(X, labels),
    }


def test_a_class_table_imports_its_dotted_paths_on_first_lookup() -> None:
    from fractions import Fraction

    from tensorwire.server.modeling.registry import ClassTable

    table = ClassTable("TABLE", {"fractions.Fraction": "fraction", int: "int"})
    assert table.registered() == {int: "int", "fractions.Fraction": "fraction"}  # nothing imported yet
    with pytest.raises(RuntimeError, match="registered twice"):
        table.add("fractions.Fraction", "again")
    assert Fraction in table and table.get(Fraction) == "fraction" and str not in table
    assert dict(table.items()) == {int: "int", Fraction: "fraction"}
    table.add("fractions.Fraction", "again")  # the same class by another entry: refused at the next lookup
    with pytest.raises(RuntimeError, match="Fraction is registered twice"):
        table.get(Fraction)


@pytest.mark.filterwarnings("ignore")  # tiny fits: convergence warnings say nothing here
def test_a_serving_process_never_imports_scikit_learn_scipy_or_pandas(tmp_path: pathlib.Path) -> None:
    """Issue 16: a worker only scores, and these libraries cost every worker ~130 MiB; only exporting may import them
    (exporters and pipeline steps are registered by dotted path, modeling/registry.py ClassTable)."""
    import tensorwire
    from tensorwire.server.modeling.registry import SCORERS, load_families

    load_families()
    models = one_model_of_each_kind()
    assert set(models) == set(SCORERS), "give this test a model of every kind"
    paths = [str(tensorwire.export(estimator, tmp_path / kind / "1")) for kind, estimator in models.items()]
    result = subprocess.run([sys.executable, "-c", SERVING_SCRIPT, *paths], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    imported = [name for name in result.stdout.split() if name.split(".")[0] in EXPORT_ONLY_LIBRARIES]
    assert imported == [], (
        f"the serving process imported {len(imported)} modules of {EXPORT_ONLY_LIBRARIES}: {imported[:20]} "
        "(register estimator types by dotted path and import such libraries inside the exporters that need them)"
    )


def test_the_supervisor_and_its_metrics_endpoint_never_import_numba() -> None:
    """The supervisor scores nothing: numba and LLVM would cost it ~40 MiB, once per server (issue 16's memory table)."""
    script = (
        "import sys\n"
        "import tensorwire.cli, tensorwire.server.process.supervisor, tensorwire.server.process.metrics\n"
        "import tensorwire.server.transport.tokens  # the start-up check of the TLS and token files\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite', 'grpc'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"the supervisor's modules imported {result.stdout.split()[:20]}"


# --- the README's estimator table -------------------------------------------------------


def readme_estimator_rows() -> list[tuple[list[str], list[str]]]:
    """(estimators, outputs) for each row of the README's estimator table."""
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- estimators:", 1)[1].split("<!-- end of estimators -->", 1)[0]
    rows = []
    for line in table.splitlines()[1:]:
        if not line.startswith("| `"):
            continue
        estimators, outputs, _notes = (cell.strip() for cell in line.strip().strip("|").split("|"))
        rows.append((re.findall(r"`([\w.]+)`", estimators), re.findall(r"`(\w+)`", outputs)))
    return rows


def fitted_with_defaults(name: str) -> Any:
    """The estimator class of that name, fitted with its defaults on small random data."""
    from sklearn.base import is_classifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.utils import all_estimators

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4))
    if "." in name:
        return fitted_other_library(name, X, rng)
    classes = dict(all_estimators())
    if name == "OneVsRestClassifier":
        estimator = classes[name](LogisticRegression())
    elif name in ("PCA", "TruncatedSVD"):
        estimator = classes[name](n_components=2)
    else:
        estimator = classes[name]()
    if name in ("KMeans", "MiniBatchKMeans", "PCA", "TruncatedSVD", "OneClassSVM"):
        return estimator.fit(X)
    if is_classifier(estimator):
        return estimator.fit(X, np.array(["a", "b", "c"])[np.argmax(X[:, :3], axis=1)])
    y = X @ rng.standard_normal((4, 2)) if name.startswith("MultiTask") else X @ rng.standard_normal(4)
    return estimator.fit(X, y)


def fitted_other_library(name: str, X: np.ndarray, rng: np.random.Generator) -> Any:
    """xgboost.* and lightgbm.* objects, trained with defaults (a Booster: regression) on small random data."""
    library, _, cls = name.partition(".")
    module = importlib.import_module(library)
    y_class = np.argmax(X[:, :3], axis=1)
    y_value = X @ rng.standard_normal(4)
    if cls == "Booster":
        if library == "xgboost":
            return module.train({}, module.DMatrix(X, label=y_value), num_boost_round=5)
        return module.train({"verbose": -1}, module.Dataset(X, label=y_value), num_boost_round=5)
    estimator = getattr(module, cls)(n_estimators=5, **({"verbose": -1} if library == "lightgbm" else {}))
    return estimator.fit(X, y_class if "Classifier" in cls else y_value)


def public_name(registered: str) -> str:
    """ "xgboost.core.Booster" -> "xgboost.Booster": how users (and the README) name a by-name exporter's type."""
    parts = registered.split(".")
    return f"{parts[0]}.{parts[-1]}"


def test_the_readme_lists_exactly_what_export_accepts() -> None:
    from tensorwire.server.modeling.registry import EXPORTERS, EXPORTERS_BY_NAME, load_families

    load_families()
    listed = [name for estimators, _ in readme_estimator_rows() for name in estimators]
    assert len(listed) == len(set(listed)), "an estimator is listed twice"
    assert sorted(listed) == sorted([cls.__name__ for cls in EXPORTERS] + [public_name(n) for n in EXPORTERS_BY_NAME])


@pytest.mark.filterwarnings("ignore")  # default fits of tiny data: convergence warnings say nothing here
def test_each_listed_estimator_exports_with_the_listed_outputs(tmp_path: pathlib.Path) -> None:
    import tensorwire
    from tensorwire.server.repository.model_format import load_model

    for estimators, outputs in readme_estimator_rows():
        for name in estimators:
            path = tensorwire.export(fitted_with_defaults(name), tmp_path / name / "1")
            declared = [o.name for o in load_model(path).manifest.outputs]
            assert set(declared) <= set(outputs), f"{name} declares {declared}; the README lists {outputs}"


def test_every_package_folder_is_installed() -> None:
    """A subpackage missing from pyproject.toml's list works in a checkout and is absent from the wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module for module in MODULES if is_package(module)}
    assert found - listed == set()
