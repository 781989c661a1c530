"""Input drift served beside every prediction: the reference profile written at export, counted by a real
2-worker server on the request-plan and general paths, summed over workers into PSI metrics, and `tensorwire drift`."""

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
from tensorwire.client import InferenceClient
from tensorwire.server.inference.drift import DriftMonitor
from tensorwire.server.modeling.reference_profile import MAX_BINS, PSI_EPSILON, bin_edges, population_stability_index, profile_rows
from tensorwire.server.repository.model_config import ModelConfigError, read_model_config

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
    return root


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
    return scrape(server)


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
    feature_lines = [line.split()[0] for line in table.stdout.splitlines() if "PSI" in line]
    assert feature_lines[0] == "income" and sorted(feature_lines) == sorted(NAMES), table.stdout
    assert "shifted" in table.stdout.splitlines()[1]
    as_json = subprocess.run([sys.executable, "-m", "tensorwire", "drift", "--url", url, "--model", "shifted", "--json"], capture_output=True, text=True, env=env, timeout=60)
    (report,) = json.loads(as_json.stdout)
    psi = [f["psi"] for f in report["features"]]
    assert psi == sorted(psi, reverse=True) and report["features"][0]["feature"] == "income"
    assert report["window_rows"] == ROWS_SENT and len(report["features"][0]["bins"]) == 11
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
