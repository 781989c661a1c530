"""Every way a tree model reaches tensorwire, registered: scikit-learn estimators, XGBoost and LightGBM objects, and their model files.

XGBoost and LightGBM are never imported: their objects are recognised by type name and
read through the libraries' own documented formats (save_raw("json"), model_to_string()),
and their files are parsed as data, so exporting and serving need neither library.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from tensorwire.server.families.trees.ensemble import TreeEnsemble
from tensorwire.server.families.trees.lightgbm_format import ensemble_from_lightgbm_object, looks_like_lightgbm, read_lightgbm_file
from tensorwire.server.families.trees.scorer import KIND, exported_ensemble
from tensorwire.server.families.trees.sklearn_trees import SKLEARN_CONVERTERS
from tensorwire.server.families.trees.xgboost_format import ensemble_from_xgboost_object, looks_like_xgboost, read_xgboost_file
from tensorwire.server.modeling.pipelines import Preprocessing
from tensorwire.server.modeling.registry import Exported, Exporter, exports, exports_named, reads_files


def _exporter(convert: Callable[[Any], TreeEnsemble], source: str) -> Exporter:
    def export(estimator: Any, prep: Preprocessing | None, datatype: str) -> Exported:
        return exported_ensemble(convert(estimator), estimator, prep, datatype, source)

    return export


for _path, _convert in SKLEARN_CONVERTERS.registered().items():  # dotted paths: registering imports nothing
    exports(_path, kind=KIND)(_exporter(_convert, "scikit-learn"))

exports_named("xgboost.core.Booster", "xgboost.sklearn.XGBClassifier", "xgboost.sklearn.XGBRegressor", kind=KIND)(
    _exporter(ensemble_from_xgboost_object, "xgboost")
)
exports_named("lightgbm.basic.Booster", "lightgbm.sklearn.LGBMClassifier", "lightgbm.sklearn.LGBMRegressor", kind=KIND)(
    _exporter(ensemble_from_lightgbm_object, "lightgbm")
)


def _file_exporter(read: Callable[[str], TreeEnsemble], source: str) -> Callable[[str, str], tuple[Exported, str]]:
    def export(path: str, datatype: str) -> tuple[Exported, str]:
        ensemble = read(path)
        return exported_ensemble(ensemble, ensemble, None, datatype, f"{source} file {os.path.basename(path)}"), ensemble.estimator

    return export


reads_files("xgboost", looks_like_xgboost)(_file_exporter(read_xgboost_file, "xgboost"))
reads_files("lightgbm", looks_like_lightgbm)(_file_exporter(read_lightgbm_file, "lightgbm"))
