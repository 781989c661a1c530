"""Hostile model-repository files: each is refused as UNAVAILABLE with its reason, and the models beside it keep serving.

The rows: a config.json nested 100,000 deep, a 100 MB config.json, a model.npz whose
manifest entry is a zip bomb, and model folders, version folders and model files that
are symbolic links out of the repository. Each is served by a real server (start-up,
RepositoryModelLoad and poll mode), whose workers must neither restart nor swell.
"""

from __future__ import annotations

import io
import json
import pathlib
import re
import shutil
import struct
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import tensorwire
from tensorwire.client import InferenceClient, InferenceServerError
from tensorwire.server.repository.model_config import MAX_CONFIG_BYTES, MAX_JSON_DEPTH, ModelConfigError, json_depth, parse_json, read_model_config
from tensorwire.server.repository.model_format import MANIFEST_KEY, MAX_MANIFEST_BYTES, ModelFormatError, load_model
from tensorwire.server.repository.model_repository import READY, UNAVAILABLE, ModelRepository

from .conftest import RunningServer, _worker_pids, start_server, stop_server

N_FEATURES = 5
NESTING = 100_000
BOMB_BYTES = 1 << 30  # what the zip bomb's manifest inflates to
OVERSIZED_CONFIG_BYTES = 100 << 20
PEAK_MEMORY_BOUND = 600 << 20  # a worker's VmHWM: ~200 MiB serving, the hostile files would take it past 1 GiB

# each hostile model of the repositories below, and what its reason in RepositoryIndex must say
REASONS = {
    "nested": f"nests {NESTING} levels deep",
    "oversized": f"more than the limit of {MAX_CONFIG_BYTES} bytes",
    "bomb": "manifest entry is compressed",
    "linked": "--follow-symlinks",
    "linked_version": "--follow-symlinks",
    "linked_file": "--follow-symlinks",
}


# ---- hostile files ---------------------------------------------------------------


def zip_bomb(path: pathlib.Path, inflated: int) -> pathlib.Path:
    """A model.npz of about 1 MB whose only entry, the manifest, is a deflated .npy of `inflated` bytes of spaces."""
    chunk = b" " * (16 << 20)
    count = max(1, inflated // len(chunk))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (count * len(chunk),)})

    def block(data: bytes) -> bytes:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)

    # deflate output after a full flush refers to nothing before it, so one compressed chunk repeats
    stream = block(header.getvalue()) + block(chunk) * count + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc = zlib.crc32(header.getvalue())
    for _ in range(count):
        crc = zlib.crc32(chunk, crc)
    size = len(header.getvalue()) + count * len(chunk)
    name = f"{MANIFEST_KEY}.npy".encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, zipfile.ZIP_DEFLATED, 0, 0x21, crc, len(stream), size, len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, zipfile.ZIP_DEFLATED, 0, 0x21, crc, len(stream), size, len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(stream), 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(local + stream + central + end)
    return path


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """One fitted and exported model version folder, copied into every repository of this module."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((100, N_FEATURES))
    version = tmp_path_factory.mktemp("healthy") / "1"
    tensorwire.export(LogisticRegression().fit(X, (X[:, 0] > 0).astype(int)), version)
    return version


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return zip_bomb(tmp_path_factory.mktemp("bomb") / "model.npz", BOMB_BYTES)


def add_model(root: pathlib.Path, name: str, healthy: pathlib.Path) -> pathlib.Path:
    shutil.copytree(healthy, root / name / "1")
    return root / name


def add_nested_config(root: pathlib.Path, healthy: pathlib.Path) -> None:
    (add_model(root, "nested", healthy) / "config.json").write_text("[" * NESTING)


def add_oversized_config(root: pathlib.Path, healthy: pathlib.Path) -> None:
    padding = "x" * (OVERSIZED_CONFIG_BYTES - 50)
    (add_model(root, "oversized", healthy) / "config.json").write_text(json.dumps({"version_policy": {"all": {}}, "padding": padding}))


def add_bomb(root: pathlib.Path, bomb: pathlib.Path) -> None:
    (root / "bomb" / "1").mkdir(parents=True)
    shutil.copy(bomb, root / "bomb" / "1" / "model.npz")


def add_links_out(root: pathlib.Path, healthy: pathlib.Path, outside: pathlib.Path) -> None:
    """A model folder, a version folder and a model file, each a symbolic link to a good model outside the root."""
    away = add_model(outside, "away", healthy)
    (root / "linked").symlink_to(away, target_is_directory=True)
    (root / "linked_version").mkdir()
    (root / "linked_version" / "1").symlink_to(away / "1", target_is_directory=True)
    (root / "linked_file" / "1").mkdir(parents=True)
    (root / "linked_file" / "1" / "model.npz").symlink_to(away / "1" / "model.npz")


# ---- talking to a server ---------------------------------------------------------------


def index_of(url: str) -> dict[str, list[Any]]:
    """RepositoryIndex as {model: [its entries]}."""
    with InferenceClient(url) as client:
        models = client.repository_index().models
    found: dict[str, list[Any]] = {}
    for model in models:
        found.setdefault(model.name, []).append(model)
    return found


def assert_unavailable(url: str, name: str) -> None:
    entries = index_of(url)[name]
    assert entries and all(e.state == UNAVAILABLE for e in entries), entries
    assert any(REASONS[name] in e.reason for e in entries), entries
    with InferenceClient(url) as client:
        assert not client.model_ready(name)


def assert_serves(url: str, name: str = "healthy", connections: int = 4) -> None:
    """An inference succeeds on several fresh connections, which the kernel spreads over the workers."""
    X = np.random.default_rng(1).standard_normal((3, N_FEATURES)).astype(np.float32)
    for _ in range(connections):
        with InferenceClient(url, options=[("grpc.use_local_subchannel_pool", 1)]) as client:
            assert client.infer(name, X)["predict"].shape == (3,)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def wait_for_workers(server: RunningServer, count: int) -> list[int]:
    wait_for(lambda: len(re.findall(r"worker \d ready", server.log())) >= count, f"{count} workers ready")
    pids = sorted(_worker_pids(server.process.pid))
    assert len(pids) == count, pids
    return pids


def peak_memory(pid: int) -> int:
    """The process's peak resident bytes (VmHWM)."""
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) * 1024  # type: ignore[union-attr]


def assert_workers_unharmed(server: RunningServer, pids: list[int]) -> None:
    """Same workers as at start, none restarted, no traceback logged, and each one's peak memory bounded."""
    assert server.process.poll() is None
    assert sorted(_worker_pids(server.process.pid)) == pids
    log = server.log()
    assert "restarting" not in log and "Traceback" not in log and "RecursionError" not in log, log[-5000:]
    peaks = {pid: peak_memory(pid) for pid in pids}
    assert all(peak < PEAK_MEMORY_BOUND for peak in peaks.values()), {pid: peak >> 20 for pid, peak in peaks.items()}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[pathlib.Path, pathlib.Path]]:
    def make(label: str) -> tuple[pathlib.Path, pathlib.Path]:
        base = tmp_path_factory.mktemp(label)
        (base / "models").mkdir()
        (base / "outside").mkdir()
        return base / "models", base / "outside"

    return make


def started(root: pathlib.Path, *flags: str) -> RunningServer:
    return start_server(root, root.parent / "server.log", "--engine", "sync", *flags)


# ---- start-up with every hostile file (default mode, 2 workers) --------------------------------


@pytest.fixture(scope="module")
def at_start_up(folders: Any, healthy: pathlib.Path, bomb: pathlib.Path) -> Iterator[tuple[RunningServer, list[int]]]:
    root, outside = folders("start-up")
    add_model(root, "healthy", healthy)
    add_nested_config(root, healthy)
    add_oversized_config(root, healthy)
    add_bomb(root, bomb)
    add_links_out(root, healthy, outside)
    server = started(root, "--workers", "2")
    pids = wait_for_workers(server, 2)
    yield server, pids
    stop_server(server)


@pytest.mark.parametrize("name", sorted(REASONS))
def test_a_hostile_model_is_unavailable_at_start_up_with_its_reason(at_start_up: tuple[RunningServer, list[int]], name: str) -> None:
    server, _ = at_start_up
    assert_unavailable(server.url, name)


def test_the_healthy_model_beside_them_serves_and_no_worker_suffers(at_start_up: tuple[RunningServer, list[int]]) -> None:
    server, pids = at_start_up
    assert_serves(server.url)
    assert_workers_unharmed(server, pids)
    assert re.search(r"model nested failed to load: .*config\.json: nests 100000 levels deep", server.log())


# ---- one worker, the nested config at start-up; links followed by TENSORWIRE_FOLLOW_SYMLINKS=1 --------------------------


def test_one_worker_starts_beside_a_nested_config_and_follows_links_when_told(folders: Any, healthy: pathlib.Path) -> None:
    root, outside = folders("one-worker")
    add_model(root, "healthy", healthy)
    add_nested_config(root, healthy)
    add_links_out(root, healthy, outside)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TENSORWIRE_FOLLOW_SYMLINKS", "1")
        server = started(root, "--workers", "1")
    try:
        assert_serves(server.url, connections=1)
        assert_unavailable(server.url, "nested")
        for name in ("linked", "linked_version", "linked_file"):
            assert_serves(server.url, name, connections=1)
        assert server.process.poll() is None and "Traceback" not in server.log()
    finally:
        stop_server(server)


# ---- RepositoryModelLoad (explicit mode, 2 workers) ----------------------------------------


@pytest.fixture(scope="module")
def explicit(folders: Any, healthy: pathlib.Path, bomb: pathlib.Path) -> Iterator[tuple[RunningServer, list[int]]]:
    root, outside = folders("explicit")
    add_model(root, "healthy", healthy)
    add_nested_config(root, healthy)
    add_oversized_config(root, healthy)
    add_bomb(root, bomb)
    add_links_out(root, healthy, outside)
    server = started(root, "--workers", "2", "--model-control-mode", "explicit", "--load-model", "healthy")
    pids = wait_for_workers(server, 2)
    yield server, pids
    stop_server(server)


@pytest.mark.parametrize("name", sorted(REASONS))
def test_repository_model_load_of_a_hostile_model_is_refused_with_its_reason(explicit: tuple[RunningServer, list[int]], name: str) -> None:
    server, _ = explicit
    with InferenceClient(server.url) as client, pytest.raises(InferenceServerError) as info:
        client.repository_model_load(name, timeout=120)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT, info.value
    assert REASONS[name] in info.value.details, info.value.details
    assert_unavailable(server.url, name)
    assert_serves(server.url)


def test_repository_model_load_leaves_the_workers_unharmed(explicit: tuple[RunningServer, list[int]]) -> None:
    server, pids = explicit
    assert_serves(server.url)
    assert_workers_unharmed(server, pids)


# ---- poll mode (2 workers), links followed by --follow-symlinks ---------------------------------


def test_poll_mode_reports_a_nested_config_and_follows_links_when_told(folders: Any, healthy: pathlib.Path) -> None:
    root, outside = folders("poll")
    add_model(root, "healthy", healthy)
    server = started(root, "--workers", "2", "--model-control-mode", "poll", "--repository-poll-secs", "0.3", "--follow-symlinks")
    try:
        pids = wait_for_workers(server, 2)
        staging = root.parent / "staging"
        add_nested_config(staging, healthy)
        (staging / "nested").rename(root / "nested")  # whole, or the poller could load it before its config.json
        add_links_out(root, healthy, outside)
        wait_for(lambda: any(e.reason != "unloaded" for e in index_of(server.url).get("nested", [])), "the poller to load the nested config")
        assert_unavailable(server.url, "nested")
        for name in ("linked", "linked_version", "linked_file"):
            wait_for(lambda: all(e.state == READY for e in index_of(server.url).get(name, [])), f"{name} to be ready")
            assert_serves(server.url, name)
        assert_serves(server.url)
        assert_workers_unharmed(server, pids)
    finally:
        stop_server(server)


# ---- unit: the bounds themselves ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"", 0),
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "[[[{{{"}', 1),
        (b'["\\"[[[", "\\\\", [[]]]', 3),
        (b'"unterminated [[[[', 0),
        (b'"' + b'\\"' * 100_000, 0),  # many escaped quotes, one string: linear, not quadratic
        (b"[" * NESTING, NESTING),
        (b"[]]]]][[", 1),  # a closer too many ends the parse: what follows never nests
    ],
)
def test_json_depth_counts_brackets_outside_strings(text: bytes, depth: int) -> None:
    assert json_depth(text) == depth


def test_parse_json_refuses_deep_nesting_before_the_parser_recurses() -> None:
    assert parse_json(b'{"a": [[1]]}') == {"a": [[1]]}
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None
    for hostile in (b"[" * NESTING, b"{\"a\":" * NESTING, b'["x", ' * NESTING):
        with pytest.raises(ValueError, match="levels deep"):
            parse_json(hostile)


def test_config_json_bounds(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "config.json"
    config.write_text("[" * NESTING)
    with pytest.raises(ModelConfigError, match=f"nests {NESTING} levels deep"):
        read_model_config(tmp_path)
    config.write_bytes(b" " * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ModelConfigError, match="more than the limit"):
        read_model_config(tmp_path)
    config.write_text(json.dumps({"version_policy": {"latest": [1]}}))
    with pytest.raises(ModelConfigError, match="must be an object"):
        read_model_config(tmp_path)
    config.write_bytes(b'{"version_policy": {"all": {}}}' + b" " * (MAX_CONFIG_BYTES - 40))
    assert read_model_config(tmp_path).version_policy.kind == "all"


def test_a_compressed_or_oversized_manifest_is_refused_before_it_is_read(bomb: pathlib.Path, healthy: pathlib.Path, tmp_path: pathlib.Path) -> None:
    with zipfile.ZipFile(healthy / "model.npz") as archive:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())  # what the exporter writes
    assert load_model(healthy / "model.npz").manifest.kind
    with pytest.raises(ModelFormatError, match="manifest entry is compressed"):
        load_model(bomb)
    huge = tmp_path / "huge.npz"
    np.savez(huge, **{MANIFEST_KEY: np.zeros(MAX_MANIFEST_BYTES + 1, np.uint8)})
    with pytest.raises(ModelFormatError, match="more than the limit"):
        load_model(huge)
    deep = tmp_path / "deep.npz"
    np.savez(deep, **{MANIFEST_KEY: np.frombuffer(b"[" * NESTING, np.uint8)})
    with pytest.raises(ModelFormatError, match="levels deep"):
        load_model(deep)


def test_links_resolve_inside_the_root_unless_followed(healthy: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """Links that stay inside the root are served, as in a Kubernetes volume (`name -> ..data/name`); links out are not."""
    root, outside = tmp_path / "models", tmp_path / "outside"
    add_model(root / "..2024_01_01", "inside", healthy)
    (root / "..data").symlink_to("..2024_01_01")
    (root / "inside").symlink_to("..data/inside")
    outside.mkdir()
    add_links_out(root, healthy, outside)
    (root / "loop").symlink_to("loop")
    strict = ModelRepository(root)
    strict.load_all()
    states = {e.name: {s.state for s in e.versions.values()} for e in strict.entries()}
    assert states == {"inside": {READY}, "linked": {UNAVAILABLE}, "linked_version": {UNAVAILABLE}, "linked_file": {UNAVAILABLE}}
    assert strict.load_failures[("linked", "1")] == 1
    lenient = ModelRepository(root, follow_symlinks=True)
    lenient.load_all(["linked", "linked_version", "linked_file"])
    assert all(s.state == READY for e in lenient.entries() for s in e.versions.values())


def test_any_exception_while_loading_marks_only_that_model_unavailable(healthy: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorwire.server.repository.model_repository as repository

    root = tmp_path / "models"
    add_model(root, "healthy", healthy)
    add_model(root, "cursed", healthy)
    real = repository.read_model_config

    def read(model_dir: pathlib.Path) -> Any:
        if model_dir.name == "cursed":
            raise RuntimeError("x" * 100_000)
        return real(model_dir)

    monkeypatch.setattr(repository, "read_model_config", read)
    loaded = ModelRepository(root)
    loaded.load_all()
    cursed = loaded.entry("cursed").versions["1"]
    assert cursed.state == UNAVAILABLE and cursed.reason.startswith("RuntimeError: xxx") and len(cursed.reason) < 1100
    assert loaded.is_ready("healthy")
