"""The model file: a round trip, memory-mapped parameters, and every corrupt file refused with its reason."""

from __future__ import annotations

import mmap
import pathlib
import zipfile

import numpy as np
import pytest

from tensorwire.server.repository.model_format import MANIFEST_KEY, ArraySpec, Manifest, ModelFormatError, TensorSpec, load_model, save_model


def manifest(**arrays: ArraySpec) -> Manifest:
    return Manifest(
        kind="linear_regressor",
        estimator="test",
        inputs=[TensorSpec("input", "FP64", [-1, 3])],
        outputs=[TensorSpec("predict", "FP64", [-1])],
        arrays=arrays or {"coef": ArraySpec([1, 3], "float64"), "intercept": ArraySpec([1], "float64")},
        params={"multi_target": False},
    )


def good_arrays() -> dict[str, np.ndarray]:
    return {"coef": np.array([[1.0, 2.0, 3.0]]), "intercept": np.array([0.5])}


def test_round_trip_maps_the_parameters_read_only(tmp_path: pathlib.Path) -> None:
    path = save_model(tmp_path / "m" / "1", manifest(), good_arrays())
    stored = load_model(path)
    assert stored.manifest == manifest()
    np.testing.assert_array_equal(stored.arrays["coef"], good_arrays()["coef"])
    coef = stored.arrays["coef"]
    assert not coef.flags.writeable
    base = coef
    while not isinstance(base, mmap.mmap) and getattr(base, "base", None) is not None:
        base = base.base
    assert isinstance(base, mmap.mmap), "parameters should be memory-mapped so workers share them"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def write_npz(path: pathlib.Path, text: str, **arrays: np.ndarray) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{MANIFEST_KEY: np.frombuffer(text.encode(), dtype=np.uint8)}, **arrays)
    return path


def hostile_files(tmp: pathlib.Path) -> dict[str, tuple[pathlib.Path, str]]:
    good = save_model(tmp / "good" / "1", manifest(), good_arrays())
    data = good.read_bytes()
    cases: dict[str, tuple[pathlib.Path, str]] = {}

    def case(name: str, content: bytes, reason: str) -> None:
        path = tmp / name / "model.npz"
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
        cases[name] = (path, reason)

    case("truncated", data[: len(data) // 2], "cannot be read")
    case("not_a_zip", b"hello", "cannot be read")
    case("empty", b"", "cannot be read")
    text = manifest().to_json()
    cases["nan_parameters"] = (write_npz(tmp / "nan" / "model.npz", text, coef=np.array([[1.0, np.nan, 3.0]]), intercept=np.array([0.5])), "NaN or infinite")
    cases["wrong_shape"] = (write_npz(tmp / "shape" / "model.npz", text, coef=np.zeros((2, 3)), intercept=np.array([0.5])), "the manifest says")
    cases["wrong_dtype"] = (write_npz(tmp / "dtype" / "model.npz", text, coef=np.zeros((1, 3), np.float32), intercept=np.array([0.5])), "the manifest says")
    cases["missing_array"] = (write_npz(tmp / "missing" / "model.npz", text, coef=np.zeros((1, 3))), "'intercept' is missing")
    cases["extra_array"] = (write_npz(tmp / "extra" / "model.npz", text, coef=np.zeros((1, 3)), intercept=np.zeros(1), payload=np.zeros(3)), "not in the manifest")
    cases["empty_manifest"] = (write_npz(tmp / "emptymanifest" / "model.npz", "{}"), "format_version")
    cases["bad_json"] = (write_npz(tmp / "json" / "model.npz", "{not json"), "malformed")
    cases["future_version"] = (write_npz(tmp / "future" / "model.npz", text.replace('"format_version": 1', '"format_version": 99')), "format_version 99")
    objects = tmp / "objects" / "model.npz"
    objects.parent.mkdir(parents=True)
    with zipfile.ZipFile(objects, "w") as archive:
        archive.writestr(MANIFEST_KEY + ".npy", _npy(np.frombuffer(text.encode(), dtype=np.uint8)))
        archive.writestr("coef.npy", _npy(np.array([[1, 2, 3]], dtype=object), allow_pickle=True))
        archive.writestr("intercept.npy", _npy(np.zeros(1)))
    cases["pickled_objects"] = (objects, "cannot be read")
    return cases


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "case",
    ["truncated", "not_a_zip", "empty", "nan_parameters", "wrong_shape", "wrong_dtype", "missing_array", "extra_array", "empty_manifest", "bad_json", "future_version", "pickled_objects"],
)
def test_corrupt_model_files_are_refused_with_their_reason(tmp_path: pathlib.Path, case: str) -> None:
    path, reason = hostile_files(tmp_path)[case]
    with pytest.raises(ModelFormatError) as info:
        load_model(path)
    assert str(path) in str(info.value)
    assert reason in str(info.value), str(info.value)
