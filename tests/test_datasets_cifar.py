"""CIFAR-10/100 loaders: Python-2-style pickles, the archive fallback, and refused pickles."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from _formats import as_images, make_tar_gz, py2_pickle, write_cifar10, write_cifar100
from adabatch.datasets import (
    DatasetFormatError,
    DatasetNotFoundError,
    load_cifar10,
    load_cifar100,
)


@pytest.fixture(autouse=True)
def _isolated_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADABATCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def _assert_equal(ds_inputs: torch.Tensor, data: np.ndarray) -> None:
    assert ds_inputs.dtype == torch.float32
    assert torch.allclose(ds_inputs, torch.from_numpy(as_images(data)), atol=1e-7)


@pytest.mark.parametrize("numpy1_names", [True, False])
def test_cifar10_train_and_test(tmp_path: Path, numpy1_names: bool) -> None:
    expected = write_cifar10(tmp_path / "cifar-10-batches-py")
    if not numpy1_names:  # the same batches as numpy 2 names its reconstruction function
        for f in (tmp_path / "cifar-10-batches-py").iterdir():
            f.write_bytes(f.read_bytes().replace(b"numpy.core.", b"numpy._core."))
    train = load_cifar10(tmp_path)
    assert train.inputs.shape == (20, 3, 32, 32)
    _assert_equal(train.inputs, expected["train"][0])
    assert train.targets.dtype == torch.int64
    assert torch.equal(train.targets, torch.from_numpy(expected["train"][1]))
    assert train.num_classes == 10
    assert train.classes == [f"class{k}" for k in range(10)]
    assert train.name == "cifar10/train"
    test = load_cifar10(tmp_path, train=False)
    assert test.name == "cifar10/test"
    _assert_equal(test.inputs, expected["test"][0])
    assert torch.equal(test.targets, torch.from_numpy(expected["test"][1]))


def test_cifar10_channel_layout(tmp_path: Path) -> None:
    # Row = 1024 red values, then green, then blue, each 32 rows of 32: check one pixel.
    write_cifar10(tmp_path / "cifar-10-batches-py")
    raw = pickle.loads(
        (tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes(), encoding="bytes"
    )
    ds = load_cifar10(tmp_path, train=False)
    row, col = 5, 17
    for channel in range(3):
        value = raw[b"data"][1, channel * 1024 + row * 32 + col]
        assert ds.inputs[1, channel, row, col] == pytest.approx(value / 255)


def test_cifar10_without_meta_has_no_class_names(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "cifar-10-batches-py", meta=False)
    assert load_cifar10(tmp_path, train=False).classes is None


def test_cifar10_python3_str_keys(tmp_path: Path) -> None:
    directory = tmp_path / "cifar-10-batches-py"
    write_cifar10(directory)
    data = np.full((2, 3072), 7, np.uint8)
    (directory / "test_batch").write_bytes(pickle.dumps({"data": data, "labels": [3, 4]}, 4))
    ds = load_cifar10(tmp_path, train=False)
    assert torch.equal(ds.targets, torch.tensor([3, 4]))


@pytest.mark.parametrize("labels", ["fine", "coarse"])
def test_cifar100(tmp_path: Path, labels: str) -> None:
    expected = write_cifar100(tmp_path / "cifar-100-python")
    ds = load_cifar100(tmp_path, labels=labels)  # type: ignore[arg-type]
    data, fine, coarse = expected["train"]
    _assert_equal(ds.inputs, data)
    assert torch.equal(ds.targets, torch.from_numpy(fine if labels == "fine" else coarse))
    assert ds.num_classes == (100 if labels == "fine" else 20)
    assert ds.classes is not None and ds.classes[3] == f"{labels}3"
    assert ds.name == ("cifar100/train" if labels == "fine" else "cifar100-coarse/train")
    test = load_cifar100(tmp_path, train=False, labels=labels)  # type: ignore[arg-type]
    _assert_equal(test.inputs, expected["test"][0])


def test_cifar100_bad_labels_argument() -> None:
    with pytest.raises(ValueError, match="'medium'"):
        load_cifar100(labels="medium")  # type: ignore[arg-type]


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env, xdg = tmp_path / "env", tmp_path / "xdg" / "adabatch" / "data"
    write_cifar10(env / "cifar-10-batches-py", n_test=2)
    write_cifar10(xdg / "cifar-10-batches-py", n_test=5)
    assert len(load_cifar10(train=False)) == 5
    monkeypatch.setenv("ADABATCH_DATA", str(env))
    assert len(load_cifar10(train=False)) == 2
    write_cifar10(tmp_path / "mine" / "cifar-10-batches-py", n_test=1)
    assert len(load_cifar10(tmp_path / "mine", train=False)) == 1


# ------------------------------------------------------------------------------------ archive


def test_extracts_the_archive(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    expected = write_cifar10(staging / "cifar-10-batches-py")
    root = tmp_path / "root"
    root.mkdir()
    make_tar_gz(staging / "cifar-10-batches-py", root / "cifar-10-python.tar.gz")
    ds = load_cifar10(root, train=False)
    _assert_equal(ds.inputs, expected["test"][0])
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    # Only the archive and the extracted directory: no temporary directory left behind.
    assert sorted(p.name for p in root.iterdir()) == [
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
    ]
    # The second load uses the extracted directory.
    (root / "cifar-10-python.tar.gz").unlink()
    assert len(load_cifar10(root)) == 20


def test_cifar100_archive(tmp_path: Path) -> None:
    expected = write_cifar100(tmp_path / "staging" / "cifar-100-python")
    make_tar_gz(tmp_path / "staging" / "cifar-100-python", tmp_path / "cifar-100-python.tar.gz")
    ds = load_cifar100(tmp_path, train=False)
    assert torch.equal(ds.targets, torch.from_numpy(expected["test"][1]))


def test_corrupted_archive_leaves_nothing(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "staging" / "cifar-10-batches-py")
    root = tmp_path / "root"
    root.mkdir()
    archive = make_tar_gz(tmp_path / "staging" / "cifar-10-batches-py", tmp_path / "a.tar.gz")
    data = archive.read_bytes()
    (root / "cifar-10-python.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFormatError) as exc:
        load_cifar10(root)
    assert str(root / "cifar-10-python.tar.gz") in str(exc.value)
    assert [p.name for p in root.iterdir()] == ["cifar-10-python.tar.gz"]


def test_archive_members_outside_the_directory_are_ignored(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "staging" / "cifar-10-batches-py")
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "staging" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        payload = b"should not be written"
        for name in ("cifar-10-batches-py/../escaped", "/tmp/absolute", "other/file"):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        link = tarfile.TarInfo("cifar-10-batches-py/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    assert len(load_cifar10(root, train=False)) == 3
    assert not (root / "escaped").exists() and not (root / "other").exists()
    assert not (root / "cifar-10-batches-py" / "link").exists()


# ------------------------------------------------------------------------------- bad files


def _batch(tmp_path: Path, name: str = "test_batch") -> Path:
    write_cifar10(tmp_path / "cifar-10-batches-py")
    return tmp_path / "cifar-10-batches-py" / name


def test_truncated_pickle(tmp_path: Path) -> None:
    path = _batch(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFormatError, match="truncated or corrupted") as exc:
        load_cifar10(tmp_path, train=False)
    assert str(path) in str(exc.value)


def test_not_a_pickle(tmp_path: Path) -> None:
    path = _batch(tmp_path)
    path.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(DatasetFormatError) as exc:
        load_cifar10(tmp_path, train=False)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize(
    ("module", "name"), [("os", "system"), ("posix", "system"), ("builtins", "eval")]
)
def test_forbidden_global_is_refused_not_run(tmp_path: Path, module: str, name: str) -> None:
    path = _batch(tmp_path)
    marker = tmp_path / "pwned"
    argument = f"open({str(marker)!r}, 'w')" if name == "eval" else f"touch {marker}"
    # GLOBAL module name, MARK, a string argument, TUPLE, REDUCE: calls module.name(argument).
    payload = f"c{module}\n{name}\n(S{argument!r}\ntR.".encode()
    path.write_bytes(payload)
    with pytest.raises(DatasetFormatError, match=rf"{module}\.{name}.*refused") as exc:
        load_cifar10(tmp_path, train=False)
    assert str(path) in str(exc.value)
    assert not marker.exists()


def test_forbidden_global_inside_a_valid_batch(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("this must not run",))

    path = _batch(tmp_path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [Evil()]}))
    with pytest.raises(DatasetFormatError, match=r"builtins\.print"):
        load_cifar10(tmp_path, train=False)


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    path = _batch(tmp_path)
    labels = np.array([1, "two"], dtype=object)
    path.write_bytes(py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": labels}))
    with pytest.raises(DatasetFormatError, match="dtype 'O8'") as exc:
        load_cifar10(tmp_path, train=False)
    assert str(path) in str(exc.value)


def test_dtype_flags_in_the_file_are_not_trusted(tmp_path: Path) -> None:
    # numpy.dtype.__setstate__ would take these flags (0x3F: "holds object pointers", ...) and
    # then treat the image bytes as pointers; the loader builds the dtype from its name only.
    reconstruct = np.ndarray.__reduce__(np.empty(0))[0]

    class CraftedDType:
        def __reduce__(self) -> tuple:
            return (np.dtype, ("u1", False, True), (3, "|", None, None, None, -1, -1, 0x3F))

    class CraftedArray:
        def __reduce__(self) -> tuple:
            state = (1, (2, 3072), CraftedDType(), False, bytes(range(256)) * 24)
            return (reconstruct, (np.ndarray, (0,), b"b"), state)

    path = _batch(tmp_path)
    path.write_bytes(py2_pickle({b"data": CraftedArray(), b"labels": [0, 1]}))
    ds = load_cifar10(tmp_path, train=False)
    assert torch.equal(ds.inputs.flatten()[:256] * 255, torch.arange(256).float())


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, r"N × 3072.*\(2, 3000\)"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "float32"),
        ({b"data": np.zeros(3072, np.uint8), b"labels": [0]}, r"shape \(3072,\)"),
        ({b"data": [[0] * 3072], b"labels": [0]}, "found list"),
        ({b"labels": [0, 1]}, "the key b'data'"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, "the key b'labels'"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "10 at index 1"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [b"cat"]}, "list of ints"),
        ([1, 2, 3], "a pickled dict, found a pickled list"),
    ],
)
def test_bad_batch_content(tmp_path: Path, batch: object, message: str) -> None:
    path = _batch(tmp_path)
    path.write_bytes(py2_pickle(batch))
    with pytest.raises(DatasetFormatError, match=message) as exc:
        load_cifar10(tmp_path, train=False)
    assert str(path) in str(exc.value)


def test_bad_meta(tmp_path: Path) -> None:
    path = _batch(tmp_path, "batches.meta")
    path.write_bytes(py2_pickle({b"label_names": [b"a", b"b"]}))
    with pytest.raises(DatasetFormatError, match="10 class names") as exc:
        load_cifar10(tmp_path, train=False)
    assert str(path) in str(exc.value)


def test_missing_batch_file(tmp_path: Path) -> None:
    (_batch(tmp_path, "data_batch_3")).unlink()
    assert len(load_cifar10(tmp_path, train=False)) == 3  # the test split is complete
    with pytest.raises(DatasetNotFoundError, match="lacks data_batch_3") as exc:
        load_cifar10(tmp_path)
    assert "adabatch data fetch cifar10" in str(exc.value)


def test_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as exc:
        load_cifar100(tmp_path)
    assert str(tmp_path / "cifar-100-python") in str(exc.value)
    assert "cifar-100-python.tar.gz" in str(exc.value)
