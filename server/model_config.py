"""A model's optional `config.json`: which versions to serve and how to batch (Triton's vocabulary).

    {"version_policy": {"latest": {"num_versions": 2}}}     the N highest versions (default: 1)
    {"version_policy": {"all": {}}}                         every version on disk
    {"version_policy": {"specific": {"versions": [1, 3]}}}  exactly these

    {"dynamic_batching": {"max_batch_size": 256,             rows per kernel call at most
                          "max_queue_delay_microseconds": 200,  how long a request may wait for company
                          "preferred_batch_size": [64, 128]}}   score at once when one of these is reached
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

from tensorwire.server.layout import CONFIG_FILE


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
class ModelConfig:
    version_policy: VersionPolicy = VersionPolicy()
    dynamic_batching: DynamicBatching | None = None  # off unless configured


def read_model_config(model_dir: pathlib.Path) -> ModelConfig:
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        return ModelConfig()
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelConfigError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ModelConfigError(f"{path}: must hold a JSON object")
    unknown = set(raw) - {"version_policy", "dynamic_batching"}
    if unknown:
        raise ModelConfigError(f"{path}: unknown settings {sorted(unknown)}")
    batching = raw.get("dynamic_batching")
    return ModelConfig(
        version_policy=_version_policy(raw.get("version_policy", {"latest": {"num_versions": 1}}), path),
        dynamic_batching=None if batching is None else _dynamic_batching(batching, path),
    )


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
