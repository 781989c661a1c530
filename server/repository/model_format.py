"""tensorwire's model file: numpy arrays plus a JSON manifest in one `model.npz`.

Loading never unpickles (`allow_pickle=False`) and checks every array against
the manifest, so a model file can be trusted as data, never as code.
"""

from __future__ import annotations

import json
import os
import pathlib
import struct
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tensorwire.protos.codec import DATATYPES
from tensorwire.server.repository.layout import MODEL_FILE
from tensorwire.server.repository.model_config import parse_json

FORMAT_VERSION = 1
MANIFEST_KEY = "__manifest__"
MAX_MANIFEST_BYTES = 16 << 20  # names, shapes and labels: the parameters themselves are arrays
INPUT_NAME = "input"
# Outputs a model lists but computes only for a request that names them (they cost a multiple of a prediction).
ON_REQUEST_OUTPUTS = frozenset({"contributions"})
ARRAY_DTYPES = frozenset({"float32", "float64", "int8", "int32", "int64", "uint8", "uint32", "bool"})


class ModelFormatError(ValueError):
    """A model file is missing, corrupt, or disagrees with its manifest."""

    def __init__(self, path: os.PathLike[str] | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the protocol describes it (-1 marks the batch dimension)."""

    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True)
class ArraySpec:
    shape: list[int]
    dtype: str


@dataclass(frozen=True)
class Manifest:
    """What a model is: its scorer kind, its tensors, its arrays and its kind-specific parameters."""

    kind: str  # key into the scorer registry, e.g. "linear_classifier"
    estimator: str  # the scikit-learn class it was exported from, for people to read
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    arrays: dict[str, ArraySpec]
    params: dict[str, Any] = field(default_factory=dict)  # JSON values only, e.g. class labels
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, path: os.PathLike[str] | str) -> Manifest:
        try:
            raw = parse_json(text.encode() if isinstance(text, str) else text)
            if not isinstance(raw, dict):
                raise TypeError("the manifest is not a JSON object")
            version = raw.get("format_version")
            if version != FORMAT_VERSION:
                raise ModelFormatError(path, f"format_version {version!r} is not supported (expected {FORMAT_VERSION})")
            manifest = cls(
                kind=str(raw["kind"]),
                estimator=str(raw.get("estimator", "")),
                inputs=[TensorSpec(str(t["name"]), str(t["datatype"]), [int(d) for d in t["shape"]]) for t in raw["inputs"]],
                outputs=[TensorSpec(str(t["name"]), str(t["datatype"]), [int(d) for d in t["shape"]]) for t in raw["outputs"]],
                arrays={str(k): ArraySpec([int(d) for d in v["shape"]], str(v["dtype"])) for k, v in raw["arrays"].items()},
                params=dict(raw.get("params", {})),
            )
        except ModelFormatError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ModelFormatError(path, f"manifest is malformed: {exc!r}") from None
        manifest.check(path)
        return manifest

    def check(self, path: os.PathLike[str] | str) -> None:
        """Raise ModelFormatError unless the manifest is self-consistent."""
        if len(self.inputs) != 1 or self.inputs[0].name != INPUT_NAME:
            raise ModelFormatError(path, f"a model has exactly one input named '{INPUT_NAME}'")
        spec = self.inputs[0]
        if spec.datatype not in ("FP32", "FP64") or len(spec.shape) != 2 or spec.shape[0] != -1 or spec.shape[1] < 1:
            raise ModelFormatError(path, f"input must be FP32 or FP64 of shape [-1, n_features], not {spec}")
        if not self.outputs:
            raise ModelFormatError(path, "the manifest lists no outputs")
        names = [o.name for o in self.outputs]
        if len(set(names)) != len(names):
            raise ModelFormatError(path, f"output names repeat: {names}")
        for out in self.outputs:
            if out.datatype not in DATATYPES:
                raise ModelFormatError(path, f"output '{out.name}' has unknown datatype '{out.datatype}'")
        for name, array in self.arrays.items():
            if array.dtype not in ARRAY_DTYPES or any(d < 0 for d in array.shape):
                raise ModelFormatError(path, f"array '{name}' has unsupported dtype or shape {array}")

    @property
    def n_features(self) -> int:
        return self.inputs[0].shape[1]

    @property
    def input_datatype(self) -> str:
        return self.inputs[0].datatype


@dataclass(frozen=True)
class StoredModel:
    manifest: Manifest
    arrays: dict[str, np.ndarray]


def save_model(version_dir: os.PathLike[str] | str, manifest: Manifest, arrays: dict[str, np.ndarray]) -> pathlib.Path:
    """Write model.npz into version_dir atomically (a reader never sees half a file)."""
    version_dir = pathlib.Path(version_dir)
    manifest.check(version_dir / MODEL_FILE)
    _check_arrays(version_dir / MODEL_FILE, manifest, arrays)
    version_dir.mkdir(parents=True, exist_ok=True)
    payload = {MANIFEST_KEY: np.frombuffer(manifest.to_json().encode(), dtype=np.uint8)}
    payload.update({name: np.ascontiguousarray(a) for name, a in arrays.items()})
    fd, tmp = tempfile.mkstemp(dir=version_dir, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **payload)  # type: ignore[arg-type]
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a server running as another user must read it
        os.replace(tmp, version_dir / MODEL_FILE)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return version_dir / MODEL_FILE


def load_model(path: os.PathLike[str] | str) -> StoredModel:
    """Read and validate a model.npz; any problem raises ModelFormatError naming the file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelFormatError(path, "no such model file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if MANIFEST_KEY not in npz.files:
                raise ModelFormatError(path, f"no {MANIFEST_KEY} entry; not a tensorwire model")
            manifest = _read_manifest(path, npz.zip)
            extra = set(npz.files) - set(manifest.arrays) - {MANIFEST_KEY}
            if extra:
                raise ModelFormatError(path, f"arrays not in the manifest: {sorted(extra)}")
            arrays = {name: _map_array(path, npz.zip, name) for name in manifest.arrays if name in npz.files}
    except ModelFormatError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, KeyError) as exc:
        raise ModelFormatError(path, f"cannot be read as a model file ({type(exc).__name__}: {exc})") from None
    _check_arrays(path, manifest, arrays)
    return StoredModel(manifest, arrays)


def _read_manifest(path: pathlib.Path, archive: zipfile.ZipFile) -> Manifest:
    """The manifest entry, its size checked in the zip directory before a byte of it is read."""
    info = archive.getinfo(f"{MANIFEST_KEY}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        # np.savez stores it; a compressed entry could inflate to any size (a zip bomb)
        raise ModelFormatError(path, "the manifest entry is compressed; tensorwire model files store every entry uncompressed")
    size = max(info.file_size, info.compress_size)
    if size > MAX_MANIFEST_BYTES:
        raise ModelFormatError(path, f"the manifest entry is {size} bytes, more than the limit of {MAX_MANIFEST_BYTES}")
    with archive.open(info) as entry:
        text = np.lib.format.read_array(entry, allow_pickle=False).tobytes()
    return Manifest.from_json(text, path)


def _map_array(path: pathlib.Path, archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """A read-only memory map of one stored (uncompressed) array of the archive.

    Every worker process maps the same file, so the page cache holds one copy of
    the parameters however many workers serve them. The header's shape must fit
    in the file: np.memmap refuses one that claims more bytes than there are.
    """
    info = archive.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        # tensorwire writes stored entries; a compressed one could inflate without bound
        raise ValueError(f"array '{name}' is compressed; tensorwire model files store arrays uncompressed")
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local_header = fh.read(_LOCAL_HEADER.size)
        name_length, extra_length = _LOCAL_HEADER.unpack(local_header)[-2:]
        fh.seek(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
        version = np.lib.format.read_magic(fh)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"array '{name}' has unsupported .npy version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(fh)
        offset = fh.tell()
    if dtype.hasobject:
        raise ValueError(f"array '{name}' holds Python objects")
    if int(np.prod(shape)) == 0:
        return np.empty(shape, dtype=dtype)
    mapped = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran_order else "C")
    return np.asarray(mapped)  # a plain ndarray view: numba does not type np.memmap


# zip local file header: signature, version, flags, method, time, date, crc, sizes, name and extra lengths
_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")


def _check_arrays(path: os.PathLike[str] | str, manifest: Manifest, arrays: dict[str, np.ndarray]) -> None:
    for name, spec in manifest.arrays.items():
        if name not in arrays:
            raise ModelFormatError(path, f"array '{name}' is missing")
        array = arrays[name]
        if list(array.shape) != spec.shape or array.dtype != np.dtype(spec.dtype):
            raise ModelFormatError(
                path, f"array '{name}' is {array.dtype}{list(array.shape)}, the manifest says {spec.dtype}{spec.shape}"
            )
        if array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
            raise ModelFormatError(path, f"array '{name}' holds NaN or infinite values")
    extra = set(arrays) - set(manifest.arrays)
    if extra:
        raise ModelFormatError(path, f"arrays not in the manifest: {sorted(extra)}")


def array_spec(array: np.ndarray) -> ArraySpec:
    """The manifest entry describing an array."""
    return ArraySpec(list(array.shape), str(array.dtype))
