"""`tensorwire export FILE DIR`: XGBoost and LightGBM files are recognised by their content and read as data; anything else is a pickle, refused unless trusted."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from tensorwire.server.modeling.export import PickleNotTrustedError, export_file
from tensorwire.server.repository.model_format import ON_REQUEST_OUTPUTS, load_model

xgboost = pytest.importorskip("xgboost")
lightgbm = pytest.importorskip("lightgbm")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] > 0).astype(int)
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 3}, xgboost.DMatrix(X, label=y), num_boost_round=5)
    booster.save_model(str(root / "model.json"))
    booster.save_model(str(root / "model.ubj"))
    (root / "renamed.bin").write_bytes((root / "model.ubj").read_bytes())  # the content decides, not the name
    lightgbm.train({"objective": "binary", "verbose": -1}, lightgbm.Dataset(X, label=y), num_boost_round=5).save_model(str(root / "model.txt"))
    (root / "not-a-model.txt").write_text("hello\n")
    return {p.name: p for p in root.iterdir()}


@pytest.mark.parametrize(("name", "source"), [("model.json", "xgboost"), ("model.ubj", "xgboost"), ("renamed.bin", "xgboost"), ("model.txt", "lightgbm")])
def test_each_file_kind_is_recognised_and_exported(files: dict[str, pathlib.Path], tmp_path: pathlib.Path, name: str, source: str) -> None:
    path = export_file(files[name], tmp_path / "1")
    manifest = load_model(path).manifest
    assert manifest.kind == "tree_ensemble"
    assert manifest.params["source"].startswith(source)
    assert [o.name for o in manifest.outputs if o.name not in ON_REQUEST_OUTPUTS] == ["predict", "predict_proba", "decision_function"]


def test_from_names_the_kind_and_a_wrong_one_is_refused_with_the_reason(files: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    export_file(files["model.txt"], tmp_path / "1", source="lightgbm")
    with pytest.raises(ValueError, match="(?i)lightgbm"):
        export_file(files["model.json"], tmp_path / "2", source="lightgbm")
    with pytest.raises(ValueError, match="unknown model file kind 'onnx'"):
        export_file(files["model.json"], tmp_path / "3", source="onnx")


def test_an_unrecognised_file_is_a_pickle_and_needs_trust(files: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    with pytest.raises(PickleNotTrustedError):
        export_file(files["not-a-model.txt"], tmp_path / "1")
