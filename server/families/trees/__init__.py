"""Tree ensembles (kind "tree_ensemble"): decision trees, random forests, gradient boosting from scikit-learn, XGBoost and LightGBM.

ensemble.py is the one shape they are all converted to; sklearn_trees.py, xgboost_format.py
(with ubjson.py) and lightgbm_format.py convert; packing.py lays an ensemble out for
kernels/trees.py; scorer.py serves it; exporters.py registers every entry point.
"""

from tensorwire.server.families.trees import exporters, scorer  # noqa: F401  (importing registers them)
