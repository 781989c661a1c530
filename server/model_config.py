"""A model's optional `config.json`: which versions to serve (Triton's version policies).

    {"version_policy": {"latest": {"num_versions": 2}}}     the N highest versions (default: 1)
    {"version_policy": {"all": {}}}                         every version on disk
    {"version_policy": {"specific": {"versions": [1, 3]}}}  exactly these
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

CONFIG_FILE = "config.json"


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
class ModelConfig:
    version_policy: VersionPolicy = VersionPolicy()


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
    unknown = set(raw) - {"version_policy"}
    if unknown:
        raise ModelConfigError(f"{path}: unknown settings {sorted(unknown)}")
    return ModelConfig(version_policy=_version_policy(raw.get("version_policy", {"latest": {"num_versions": 1}}), path))


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
