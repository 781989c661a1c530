"""Input and output drift served beside every prediction: the reference profile written at export (the features'
bins and the main output's classes or score bins), counted by a real 2-worker server on the request-plan and general
paths, summed over workers into PSI metrics, and `tensorwire drift` (table, JSON, --plot) and `export --background`."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression

import tensorwire
from tensorwire.cli import main as cli_main
from tensorwire.client import InferenceClient
from tensorwire.kernels.drift import count_classes, count_scores
from tensorwire.server.inference.drift import DriftMonitor
from tensorwire.server.modeling.reference_profile import (
    MAX_BINS,
    OUTPUT_ARRAY_NAMES,
    PARAMS_KEY,
    PSI_EPSILON,
    bin_edges,
    population_stability_index,
    profile_rows,
)
from tensorwire.server.repository.model_config import ModelConfigError, read_model_config
from tensorwire.server.repository.model_format import load_model, save_model
from tensorwire.server.repository.model_repository import Model

from .conftest import RunningServer, start_server, stop_server

NAMES = ["age", "income", "tenure", "score"]
ROWS_SENT = 1200  # per model: well under the default window of 10,000 rows
SINGLE_ROWS = 400  # sent one row per request (the request-plan path); the rest in batches with an id (the general path)
BATCH = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def training_rows(seed: int, rows: int = 3000) -> np.ndarray:
    return np.random.default_rng(seed).normal([40.0, 50.0, 5.0, 0.0], [10.0, 15.0, 3.0, 1.0], size=(rows, 4))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("models")
    X = training_rows(0)
    y = (X[:, 1] + X[:, 3] * 10 > 50).astype(int)
    frame = pd.DataFrame(X, columns=NAMES)
    tensorwire.export(LogisticRegression(max_iter=500).fit(X, y), root / "stable" / "1", background=X)  # fitted without names
    tensorwire.export(LogisticRegression(max_iter=500).fit(frame, y), root / "shifted" / "1", background=frame)
    tensorwire.export(LogisticRegression(max_iter=500).fit(X, y), root / "quiet" / "1", background=X)
    (root / "quiet" / "config.json").write_text(json.dumps({"drift": {"enabled": False}}))
    tensorwire.export(HistGradientBoostingRegressor(max_iter=5).fit(X, y), root / "trees" / "1", background=X)  # takes NaN
    tensorwire.export(LogisticRegression(max_iter=500).fit(X, y), root / "refused" / "1", background=X)
    (root / "refused" / "config.json").write_text(json.dumps({"drift": {"enabled": True, "window_rows": 0}}))
    tensorwire.export(LogisticRegression(max_iter=500).fit(X, tiers(X)), root / "tiers" / "1", background=X)  # string labels
    tensorwire.export(LogisticRegression(max_iter=500).fit(X, y), root / "plain" / "1")  # no background: no profile
    tensorwire.export(LogisticRegression(max_iter=500).fit(X, y), root / "legacy" / "1", background=X)
    without_output_profile(root / "legacy" / "1")
    return root


def tiers(X: np.ndarray) -> np.ndarray:
    """String labels from the same rule as y: three tiers of income + 10 x score."""
    value = X[:, 1] + 10 * X[:, 3]
    return np.where(value > 60, "gold", np.where(value > 40, "silver", "bronze"))


def without_output_profile(version_dir: pathlib.Path) -> None:
    """Rewrite a model file as it was written before output profiles: the features' profile only."""
    stored = load_model(version_dir / "model.npz")
    arrays = {name: a for name, a in stored.arrays.items() if name not in OUTPUT_ARRAY_NAMES}
    manifest = stored.manifest
    params = {**manifest.params, PARAMS_KEY: {k: v for k, v in manifest.params[PARAMS_KEY].items() if k != "output"}}
    specs = {name: spec for name, spec in manifest.arrays.items() if name in arrays}
    (version_dir / "model.npz").unlink()
    save_model(version_dir, type(manifest)(manifest.kind, manifest.estimator, manifest.inputs, manifest.outputs, specs, params), arrays)


@pytest.fixture(scope="module")
def server(repository: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    port = free_port()
    running = start_server(repository, tmp_path_factory.mktemp("logs") / "server.log", "--workers", "2", "--metrics-port", str(port))
    running.metrics_port = port  # type: ignore[attr-defined]
    yield running
    stop_server(running)


def send(server: RunningServer, model: str, X: np.ndarray) -> None:
    """The first SINGLE_ROWS rows one per request, the rest in batches with an id; over two clients of eight channels each,
    so that both workers serve."""
    clients = [InferenceClient(server.url, channels=8) for _ in range(2)]
    try:
        rows = X.astype(np.float32)
        for i in range(SINGLE_ROWS):
            clients[i % 2].infer(model, rows[i : i + 1])
        for k, start in enumerate(range(SINGLE_ROWS, len(rows), BATCH)):
            clients[k % 2].infer(model, rows[start : start + BATCH], request_id=f"batch-{k}")
    finally:
        for client in clients:
            client.close()


def scrape(server: RunningServer) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as response:  # type: ignore[attr-defined]
        return str(response.read().decode())


def values(text: str, name: str, **labels: str) -> dict[str, float]:
    """Each sample of a metric whose labels include `labels`, by its full label text."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            series, value = line.rsplit(" ", 1)
            found[series] = float(value)
    return found


def psi_by_feature(text: str, model: str) -> dict[str, float]:
    return {series.split('feature="')[1].split('"')[0]: v for series, v in values(text, "tensorwire_feature_psi", model=model).items()}


@pytest.fixture(scope="module")
def traffic(server: RunningServer) -> str:
    """Every model's traffic sent once, then one scrape: in-distribution rows to `stable`, `quiet` and `trees`
    (with NaN and out-of-range values), and `income` moved by one standard deviation to `shifted`."""
    live = training_rows(1, ROWS_SENT)
    send(server, "stable", live)
    send(server, "quiet", live)
    shifted = live.copy()
    shifted[:, 1] += 15.0
    send(server, "shifted", shifted)
    send(server, "trees", odd_rows())
    send(server, "tiers", gold_rows())
    send(server, "plain", live)
    send(server, "legacy", live)
    return scrape(server)


def gold_rows() -> np.ndarray:
    """Rows from the region where the model says "gold" (a shift of the predictions)."""
    rows = training_rows(2, 20 * ROWS_SENT)
    return rows[tiers(rows) == "gold"][:ROWS_SENT]


def odd_rows() -> np.ndarray:
    """In-distribution rows with 10 values of feature 2 missing, and 5 of feature 0 far above its range, 2 far below."""
    odd = training_rows(1, ROWS_SENT)
    odd[:10, 2] = np.nan
    odd[10:15, 0] = 1e6
    odd[15:17, 0] = -1e6
    return odd


def test_in_distribution_traffic_keeps_every_feature_stable(traffic: str) -> None:
    psi = psi_by_feature(traffic, "stable")
    assert set(psi) == {"0", "1", "2", "3"}  # fitted without names: column indices
    assert all(v < 0.1 for v in psi.values()), psi


def test_a_feature_moved_by_one_standard_deviation_shows_and_the_others_do_not(traffic: str) -> None:
    psi = psi_by_feature(traffic, "shifted")
    assert set(psi) == set(NAMES)  # fitted on a DataFrame: its column names
    assert psi["income"] > 0.25, psi
    assert all(v < 0.1 for name, v in psi.items() if name != "income"), psi


def test_both_workers_count_and_their_counts_add_up(traffic: str) -> None:
    per_worker = values(traffic, "tensorwire_requests_total", model="stable", outcome="success")
    assert len(per_worker) == 2 and all(v > 0 for v in per_worker.values()), per_worker
    assert list(values(traffic, "tensorwire_drift_rows_total", model="stable").values()) == [ROWS_SENT]
    assert list(values(traffic, "tensorwire_drift_window_rows", model="stable").values()) == [ROWS_SENT]
    live = values(traffic, "tensorwire_feature_bin_fraction", model="stable", feature="0", population="live")
    assert len(live) == 11 and sum(live.values()) == pytest.approx(1.0)


def test_missing_and_out_of_range_values_are_counted(traffic: str) -> None:
    missing = values(traffic, "tensorwire_feature_missing_total", model="trees")
    assert missing == {'tensorwire_feature_missing_total{feature="0",model="trees",version="1"}': 0.0,
                       'tensorwire_feature_missing_total{feature="1",model="trees",version="1"}': 0.0,
                       'tensorwire_feature_missing_total{feature="2",model="trees",version="1"}': 10.0,
                       'tensorwire_feature_missing_total{feature="3",model="trees",version="1"}': 0.0}
    reference = training_rows(0)[:, 0].astype(np.float32)
    sent = odd_rows()[:, 0].astype(np.float32)
    above, below = int((sent > reference.max()).sum()), int((sent < reference.min()).sum())
    assert above >= 5 and below >= 2  # the values put there, and any of the live rows beyond the reference's range
    assert list(values(traffic, "tensorwire_feature_out_of_range_total", model="trees", feature="0", side="above").values()) == [above]
    assert list(values(traffic, "tensorwire_feature_out_of_range_total", model="trees", feature="0", side="below").values()) == [below]


def test_a_model_with_drift_disabled_has_no_drift_metrics(traffic: str) -> None:
    assert values(traffic, "tensorwire_requests_total", model="quiet")  # it served
    assert not [line for line in traffic.splitlines() if line.startswith("tensorwire_") and 'model="quiet"' in line and ("feature" in line or "drift" in line)]


def output_psi(text: str, model: str) -> float:
    (psi,) = values(text, "tensorwire_output_psi", model=model).values()
    return psi


def output_shares(text: str, model: str, population: str) -> dict[str, float]:
    return {series.split('bin="')[1].split('"')[0]: v for series, v in values(text, "tensorwire_output_bin_fraction", model=model, population=population).items()}


def test_the_output_is_stable_with_in_distribution_traffic(traffic: str) -> None:
    assert output_psi(traffic, "stable") < 0.1
    assert output_psi(traffic, "trees") < 0.1  # a regressor: score bins
    assert len(output_shares(traffic, "trees", "reference")) > 1


def test_the_output_shifts_when_traffic_moves_the_predictions(traffic: str) -> None:
    assert output_psi(traffic, "shifted") > 0.25  # income one standard deviation up: more of class 1
    assert output_psi(traffic, "tiers") > 0.25  # string labels, rows of the "gold" region only
    live = output_shares(traffic, "tiers", "live")
    assert set(live) == {"bronze", "gold", "silver"} and live["gold"] > 0.9, live


def test_the_output_counts_of_both_workers_add_up_to_the_predictions(traffic: str, repository: pathlib.Path) -> None:
    assert list(values(traffic, "tensorwire_output_window_rows", model="stable").values()) == [ROWS_SENT]
    live = output_shares(traffic, "stable", "live")
    reference = output_shares(traffic, "stable", "reference")
    assert set(live) == set(reference) == {"0", "1"} and sum(live.values()) == pytest.approx(1.0)
    model = Model.load("stable", "1", repository / "stable" / "1" / "model.npz")  # the server's own predictions
    (predicted,) = model.scorer.score(training_rows(1, ROWS_SENT).astype(np.float32), ["predict"])
    assert round(live["1"] * ROWS_SENT) == int((predicted == 1).sum())  # single rows (request plans) and batches alike
    tiers_live = output_shares(traffic, "tiers", "live")
    assert sum(tiers_live.values()) == pytest.approx(1.0)


def test_a_model_exported_without_background_serves_with_no_drift_metrics(traffic: str) -> None:
    assert values(traffic, "tensorwire_requests_total", model="plain")
    assert not [line for line in traffic.splitlines() if 'model="plain"' in line and ("psi" in line or "drift" in line or "bin_fraction" in line)]


def test_a_model_file_without_an_output_profile_still_measures_its_inputs(traffic: str) -> None:
    assert set(psi_by_feature(traffic, "legacy")) == {"0", "1", "2", "3"}
    assert not values(traffic, "tensorwire_output_psi", model="legacy")
    assert not values(traffic, "tensorwire_output_bin_fraction", model="legacy")


def test_bad_drift_config_is_refused_naming_the_setting(server: RunningServer) -> None:
    with InferenceClient(server.url) as client:
        index = {(m.name, m.version): m for m in client.repository_index().models}
    refused = index[("refused", "1")]
    assert refused.state == "UNAVAILABLE"
    assert "drift.window_rows must be an integer from 1 to" in refused.reason and "not 0" in refused.reason


@pytest.mark.parametrize(
    ("drift", "message"),
    [
        ({"window": 10}, "unknown drift settings ['window']"),
        ({"enabled": "no"}, "drift.enabled must be true or false, not 'no'"),
        ({"window_rows": 2.5}, "drift.window_rows must be an integer"),
        ([], "drift must be an object"),
    ],
)
def test_bad_drift_settings_are_refused(tmp_path: pathlib.Path, drift: Any, message: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"drift": drift}))
    with pytest.raises(ModelConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_model_config(tmp_path)


def test_drift_settings_default_to_on_over_ten_thousand_rows(tmp_path: pathlib.Path) -> None:
    drift = read_model_config(tmp_path).drift
    assert (drift.enabled, drift.window_rows) == (True, 10_000)


def test_the_cli_ranks_features_by_psi(server: RunningServer, traffic: str) -> None:
    url = f"http://127.0.0.1:{server.metrics_port}"  # type: ignore[attr-defined]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    table = subprocess.run([sys.executable, "-m", "tensorwire", "drift", "--url", url, "--model", "shifted"], capture_output=True, text=True, env=env, timeout=60)
    assert table.returncode == 0, table.stderr
    feature_lines = [line.split()[0] for line in table.stdout.splitlines() if "PSI" in line and "output" not in line]
    assert feature_lines[0] == "income" and sorted(feature_lines) == sorted(NAMES), table.stdout
    assert "shifted" in table.stdout.splitlines()[1]
    (output_line,) = [line for line in table.stdout.splitlines() if line.startswith("  output 'predict'  PSI")]
    assert "shifted" in output_line and f"({ROWS_SENT:,} rows in the window)" in output_line
    as_json = subprocess.run([sys.executable, "-m", "tensorwire", "drift", "--url", url, "--model", "shifted", "--json"], capture_output=True, text=True, env=env, timeout=60)
    (report,) = json.loads(as_json.stdout)
    psi = [f["psi"] for f in report["features"]]
    assert psi == sorted(psi, reverse=True) and report["features"][0]["feature"] == "income"
    assert report["window_rows"] == ROWS_SENT and len(report["features"][0]["bins"]) == 11
    output = report["output"]
    assert output["name"] == "predict" and output["psi"] > 0.25 and output["window_rows"] == ROWS_SENT
    assert [b["bin"] for b in output["bins"]] == ["0", "1"] and sum(b["live"] for b in output["bins"]) == pytest.approx(1.0)
    missing = subprocess.run([sys.executable, "-m", "tensorwire", "drift", "--url", url, "--model", "quiet"], capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 1 and "no drift metrics for model 'quiet'" in missing.stderr


def test_profile_bins_merge_ties_and_give_a_constant_three_bins() -> None:
    values_ = np.array([0.0] * 70 + [1.0] * 30)
    edges = bin_edges(values_, 10)
    assert list(edges) == [0.0, 0.0, 1.0]  # two bins: exactly 0, above 0
    constant = bin_edges(np.full(50, 2.5), 10)
    assert len(constant) == 4 and constant[0] < 2.5 and list(constant[2:]) == [2.5, 2.5]
    rows = np.column_stack([values_, np.where(np.arange(100) < 20, np.nan, np.arange(100.0))])
    profile = profile_rows(rows, None, "FP64")
    assert list(profile.n_bins) == [2, 10]
    assert profile.fractions[0, :2].tolist() == [0.7, 0.3] and profile.fractions[1, MAX_BINS] == pytest.approx(0.2)
    assert profile.fractions.sum(axis=1) == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_counting_kernel_agrees_with_numpy(dtype: Any) -> None:
    rng = np.random.default_rng(5)
    reference = np.column_stack([rng.normal(size=500), rng.integers(0, 4, 500).astype(float), np.full(500, 3.0)])
    profile = profile_rows(reference, None, "FP32" if dtype == np.float32 else "FP64")
    X = np.column_stack([rng.normal(size=300) * 2, rng.integers(-1, 6, 300).astype(float), rng.choice([2.0, 3.0, 4.0, np.nan], 300)]).astype(dtype)
    monitor = DriftMonitor(profile, 10_000, np.dtype(dtype))
    monitor.count(X)
    snapshot = monitor.snapshot()
    for j in range(3):
        n = profile.n_bins[j]
        column = X[:, j].astype(np.float64)
        present = column[~np.isnan(column)]
        expected = np.bincount(np.searchsorted(profile.edges[j, 1:n], present, side="left"), minlength=n)
        assert snapshot["window"][j][:n] == expected.tolist()
        assert snapshot["window"][j][MAX_BINS] == int(np.isnan(column).sum())
        assert snapshot["totals"][j] == [int(np.isnan(column).sum()), int((present < profile.edges[j, 0]).sum()), int((present > profile.edges[j, n]).sum())]


def test_the_window_keeps_the_last_rows_and_the_totals_keep_all() -> None:
    profile = profile_rows(np.arange(100.0).reshape(-1, 1), None, "FP64")
    monitor = DriftMonitor(profile, 100, np.dtype(np.float64))
    for _ in range(50):
        monitor.count(np.full((7, 1), -1.0))  # below the range: every row also counts in the totals
    snapshot = monitor.snapshot()
    assert 100 - 2 * 10 - 7 <= snapshot["window_rows"] < 100 + 7  # give or take a chunk (a tenth) and a request
    assert sum(snapshot["window"][0]) == snapshot["window_rows"]
    assert snapshot["rows"] == 350 and snapshot["totals"][0] == [0, 350, 0]


def test_psi_is_zero_for_equal_shares_and_floors_empty_bins() -> None:
    shares = np.array([0.25, 0.25, 0.5])
    assert population_stability_index(shares, shares) == 0.0
    moved = population_stability_index(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert moved == pytest.approx(2 * (1 - PSI_EPSILON) * np.log(1 / PSI_EPSILON))


def test_the_cli_plots_every_feature_and_the_output(server: RunningServer, traffic: str, tmp_path: pathlib.Path) -> None:
    pytest.importorskip("matplotlib")
    url = f"http://127.0.0.1:{server.metrics_port}"  # type: ignore[attr-defined]
    png = tmp_path / "drift.png"
    assert cli_main(["drift", "--url", url, "--model", "tiers", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_the_cli_plot_without_matplotlib_says_how_to_install_it(tmp_path: pathlib.Path) -> None:
    code = "import sys; sys.modules['matplotlib'] = None; from tensorwire.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run([sys.executable, "-c", code, "drift", "--url", "http://127.0.0.1:9", "--model", "m", "--plot", str(tmp_path / "p.png")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "pip install matplotlib" in run.stderr, run.stderr
    assert not (tmp_path / "p.png").exists()


def test_export_background_from_a_csv_with_a_header_names_the_features(tmp_path: pathlib.Path) -> None:
    xgboost = pytest.importorskip("xgboost")
    X = training_rows(0, 500)
    model = xgboost.XGBRegressor(n_estimators=5, max_depth=2).fit(X, X[:, 1] / 10)
    model.save_model(tmp_path / "model.json")
    csv = tmp_path / "train.csv"
    X[0, 2] = np.nan  # an empty cell: a missing value
    csv.write_text(",".join(NAMES) + "\n" + "\n".join(",".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in X) + "\n")
    assert cli_main(["export", str(tmp_path / "model.json"), str(tmp_path / "xgb" / "1"), "--background", str(csv)]) == 0
    profile = Model.load("xgb", "1", tmp_path / "xgb" / "1" / "model.npz").drift
    assert profile is not None and profile.profile.feature_names == tuple(NAMES)
    assert profile.profile.output is not None and profile.profile.output.labels is None  # score bins
    assert profile.profile.fractions[2, MAX_BINS] == pytest.approx(1 / 500)


def test_export_background_from_npy_for_a_joblib_file(tmp_path: pathlib.Path) -> None:
    import joblib

    X = training_rows(0, 500)
    joblib.dump(LogisticRegression(max_iter=500).fit(X, tiers(X)), tmp_path / "model.joblib")
    np.save(tmp_path / "train.npy", X)
    assert cli_main(["export", str(tmp_path / "model.joblib"), str(tmp_path / "lr" / "1"), "--trust-pickle", "--background", str(tmp_path / "train.npy")]) == 0
    monitor = Model.load("lr", "1", tmp_path / "lr" / "1" / "model.npz").drift
    assert monitor is not None and monitor.profile.feature_names == ("0", "1", "2", "3")
    output = monitor.profile.output
    assert output is not None and output.labels == ("bronze", "gold", "silver")
    assert output.reference.tolist() == pytest.approx([float((tiers(X) == t).mean()) for t in output.labels], abs=0.05)
    assert cli_main(["export", str(tmp_path / "model.joblib"), str(tmp_path / "lr" / "2"), "--trust-pickle", "--background", str(tmp_path / "train.txt")]) == 1


def test_models_whose_main_output_has_several_columns_get_no_output_profile(tmp_path: pathlib.Path) -> None:
    from sklearn.decomposition import PCA

    X = training_rows(0, 300)
    tensorwire.export(PCA(2).fit(X), tmp_path / "1", background=X)
    monitor = Model.load("pca", "1", tmp_path / "1" / "model.npz").drift
    assert monitor is not None and monitor.profile.output is None and monitor.snapshot()["output"] is None


def test_the_output_counting_kernels_agree_with_numpy() -> None:
    rng = np.random.default_rng(3)
    classes = np.array([-1.0, 0.0, 2.0, 7.0])
    y = rng.choice([-1, 0, 2, 7, 5], 500).astype(np.int64)
    counts = np.zeros(5)
    count_classes(y, classes, counts)
    assert counts.tolist() == [*(float((y == c).sum()) for c in classes), float((y == 5).sum())]
    cuts = np.array([-0.5, 0.0, 1.0])
    scores = np.concatenate([rng.normal(size=300), [np.nan, 0.0, 1.0]]).astype(np.float32)
    counts = np.zeros(5)
    count_scores(scores, cuts, counts)
    present = scores[~np.isnan(scores)].astype(np.float64)
    assert counts.tolist() == [*np.bincount(np.searchsorted(cuts, present, side="left"), minlength=4).astype(float), 1.0]


@pytest.mark.parametrize("kind", ["kmeans", "dbscan", "bool_labels"])
def test_cluster_ids_and_other_label_outputs_are_profiled_as_classes(tmp_path: pathlib.Path, kind: str) -> None:
    from sklearn.cluster import DBSCAN, KMeans

    X = training_rows(0, 400)
    estimator: Any = {
        "kmeans": lambda: KMeans(3, n_init=2, random_state=0).fit(X),
        "dbscan": lambda: DBSCAN(eps=6.0, min_samples=5).fit(X),  # no predict of its own: the server's nearest-core-sample rule
        "bool_labels": lambda: LogisticRegression(max_iter=500).fit(X, X[:, 1] > 50),
    }[kind]()
    tensorwire.export(estimator, tmp_path / "1", background=X)
    model = Model.load(kind, "1", tmp_path / "1" / "model.npz")
    monitor = model.drift
    assert monitor is not None and monitor.profile.output is not None and monitor.profile.output.labels is not None
    (predicted,) = model.scorer.score(X.astype(np.float32), ["predict"])
    assert monitor.profile.output.bin_names == [str(v).lower() for v in np.unique(predicted)]
    assert monitor.profile.output.reference.sum() == pytest.approx(1.0)
    monitor.count(X.astype(np.float32), predicted)
    output = monitor.snapshot()["output"]
    assert output["window"][:-1] == [int((predicted == v).sum()) for v in np.unique(predicted)] and output["window"][-1] == 0
