"""A model's optional `config.json`: which versions to serve and how to batch (Triton's vocabulary).

    {"version_policy": {"latest": {"num_versions": 2}}}     the N highest versions (default: 1)
    {"version_policy": {"all": {}}}                         every version on disk
    {"version_policy": {"specific": {"versions": [1, 3]}}}  exactly these

    {"dynamic_batching": {"max_batch_size": 256,             rows per kernel call at most
                          "max_queue_delay_microseconds": 200,  how long a request may wait for company
                          "preferred_batch_size": [64, 128]}}   score at once when one of these is reached

    {"drift": {"enabled": true,                              count scored rows into the reference profile's bins
               "window_rows": 10000}}                        PSI over about the last N rows (see server/inference/drift.py)

The file is read with bounds (MAX_CONFIG_BYTES, MAX_JSON_DEPTH): a hostile one is refused
before it can cost memory or reach the recursion of json's parser.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import stat
from dataclasses import dataclass
from typing import Any

import numpy as np

from tensorwire.server.repository.layout import CONFIG_FILE

MAX_CONFIG_BYTES = 1 << 20  # a config.json takes a few hundred bytes
MAX_JSON_DEPTH = 32  # config.json nests 4 deep, a manifest a few more; json's parser recurses once per level

# a JSON string, its closing quote optional so that an unterminated one still matches in linear time
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


class ModelConfigError(ValueError):
    """config.json is unreadable or says something tensorwire cannot do."""


@dataclass(frozen=True)
class VersionPolicy:
    kind: str = "latest"  # latest | all | specific
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of those on disk, in ascending order."""
        ordered = sorted(available)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[-self.num_versions :]


@dataclass(frozen=True)
class DynamicBatching:
    max_batch_size: int = 64
    max_queue_delay_microseconds: int = 100
    preferred_batch_size: tuple[int, ...] = ()


@dataclass(frozen=True)
class Drift:
    """Input drift monitoring of a model whose file holds a reference profile (exported with `background`)."""

    enabled: bool = True
    window_rows: int = 10_000


MAX_WINDOW_ROWS = 100_000_000


@dataclass(frozen=True)
class ModelConfig:
    version_policy: VersionPolicy = VersionPolicy()
    dynamic_batching: DynamicBatching | None = None  # off unless configured
    drift: Drift = Drift()


def json_depth(text: bytes) -> int:
    """How deep arrays and objects nest in JSON text (brackets inside strings aside), without recursion."""
    brackets = np.frombuffer(_JSON_STRING.sub(b"", text).translate(None, _NOT_BRACKETS), dtype=np.uint8)
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), np.int32(1), np.int32(-1))
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def parse_json(text: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads of UTF-8 text, refused with ValueError when it nests deeper than max_depth."""
    openers = text.count(b"[") + text.count(b"{")
    depth = openers if openers <= max_depth else json_depth(text)  # it nests no deeper than it opens
    if depth > max_depth:
        raise ValueError(f"nests {depth} levels deep, more than the limit of {max_depth}")
    return json.loads(text.decode("utf-8"))


def read_bounded(path: pathlib.Path, limit: int) -> bytes:
    """A regular file's bytes, refused with ValueError when it holds more than `limit`, before it is read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO put in its place must not block the open
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("is not a regular file")
        if info.st_size > limit:
            raise ValueError(f"is {info.st_size} bytes, more than the limit of {limit} bytes")
        data = fh.read(limit + 1)  # the file may grow between the check and the read
    if len(data) > limit:
        raise ValueError(f"is more than the limit of {limit} bytes")
    return data


def read_model_config(model_dir: pathlib.Path) -> ModelConfig:
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        return ModelConfig()
    try:
        raw = parse_json(read_bounded(path, MAX_CONFIG_BYTES))
    except OSError as exc:
        raise ModelConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelConfigError(f"{path}: not readable JSON ({exc})") from None
    except ValueError as exc:  # over a limit
        raise ModelConfigError(f"{path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ModelConfigError(f"{path}: must hold a JSON object")
    unknown = set(raw) - {"version_policy", "dynamic_batching", "drift"}
    if unknown:
        raise ModelConfigError(f"{path}: unknown settings {sorted(unknown)}")
    batching = raw.get("dynamic_batching")
    return ModelConfig(
        version_policy=_version_policy(raw.get("version_policy", {"latest": {"num_versions": 1}}), path),
        dynamic_batching=None if batching is None else _dynamic_batching(batching, path),
        drift=_drift(raw.get("drift", {}), path),
    )


def _drift(raw: object, path: pathlib.Path) -> Drift:
    if not isinstance(raw, dict):
        raise ModelConfigError(f"{path}: drift must be an object, e.g. {{\"enabled\": true, \"window_rows\": 10000}}")
    unknown = set(raw) - {"enabled", "window_rows"}
    if unknown:
        raise ModelConfigError(f"{path}: unknown drift settings {sorted(unknown)} (known: enabled, window_rows)")
    enabled = raw.get("enabled", Drift.enabled)
    window = raw.get("window_rows", Drift.window_rows)
    if not isinstance(enabled, bool):
        raise ModelConfigError(f"{path}: drift.enabled must be true or false, not {enabled!r}")
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_WINDOW_ROWS:
        raise ModelConfigError(f"{path}: drift.window_rows must be an integer from 1 to {MAX_WINDOW_ROWS}, not {window!r}")
    return Drift(enabled, window)


def _dynamic_batching(raw: object, path: pathlib.Path) -> DynamicBatching:
    if not isinstance(raw, dict):
        raise ModelConfigError(f"{path}: dynamic_batching must be an object")
    unknown = set(raw) - {"max_batch_size", "max_queue_delay_microseconds", "preferred_batch_size"}
    if unknown:
        raise ModelConfigError(f"{path}: unknown dynamic_batching settings {sorted(unknown)}")
    size = raw.get("max_batch_size", DynamicBatching.max_batch_size)
    delay = raw.get("max_queue_delay_microseconds", DynamicBatching.max_queue_delay_microseconds)
    preferred = raw.get("preferred_batch_size", [])
    if not isinstance(size, int) or size < 1:
        raise ModelConfigError(f"{path}: dynamic_batching.max_batch_size must be a positive integer")
    if not isinstance(delay, int) or not 0 <= delay <= 1_000_000:
        raise ModelConfigError(f"{path}: dynamic_batching.max_queue_delay_microseconds must be 0..1000000")
    if not isinstance(preferred, list) or not all(isinstance(p, int) and 0 < p <= size for p in preferred):
        raise ModelConfigError(f"{path}: dynamic_batching.preferred_batch_size must list sizes from 1 to max_batch_size")
    return DynamicBatching(size, delay, tuple(sorted(preferred)))


def _version_policy(raw: object, path: pathlib.Path) -> VersionPolicy:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ModelConfigError(f"{path}: version_policy must have exactly one of latest, all, specific")
    ((kind, body),) = raw.items()
    body = body or {}
    if not isinstance(body, dict):
        raise ModelConfigError(f"{path}: version_policy.{kind} must be an object")
    if kind == "all":
        return VersionPolicy("all")
    if kind == "latest":
        count = body.get("num_versions", 1)
        if not isinstance(count, int) or count < 1:
            raise ModelConfigError(f"{path}: latest.num_versions must be a positive integer, not {count!r}")
        return VersionPolicy("latest", num_versions=count)
    if kind == "specific":
        versions = body.get("versions")
        if not isinstance(versions, list) or not versions or not all(isinstance(v, int) and v > 0 for v in versions):
            raise ModelConfigError(f"{path}: specific.versions must be a non-empty list of positive integers")
        return VersionPolicy("specific", versions=tuple(versions))
    raise ModelConfigError(f"{path}: unknown version policy '{kind}' (latest, all or specific)")
