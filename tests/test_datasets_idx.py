"""The IDX reader and the MNIST / Fashion-MNIST loader, against files written from the format."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from _formats import idx_bytes, write_bytes, write_idx, write_mnist_split
from adabatch.datasets import (
    FASHION_MNIST_CLASSES,
    DatasetFormatError,
    DatasetNotFoundError,
    load_mnist,
    read_idx,
)


@pytest.fixture(autouse=True)
def _isolated_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No test may see a real data directory: $ADABATCH_DATA unset, the default cache in tmp.
    monkeypatch.delenv("ADABATCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def _names_file(exc: pytest.ExceptionInfo[BaseException], path: Path) -> None:
    assert str(path) in str(exc.value)


# ----------------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    ("dtype", "torch_dtype"),
    [
        (np.uint8, torch.uint8),
        (np.int8, torch.int8),
        (np.int16, torch.int16),
        (np.int32, torch.int32),
        (np.float32, torch.float32),
        (np.float64, torch.float64),
    ],
)
def test_read_idx_round_trip(
    tmp_path: Path, gz: bool, dtype: type, torch_dtype: torch.dtype
) -> None:
    rng = np.random.default_rng(1)
    # Values that use every byte of the wider types, so a byte-order mistake would show.
    array = (rng.standard_normal((3, 5, 7)) * 1000).astype(dtype)
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=(3, 5, 7), dtype=dtype, endpoint=True)
    path = write_idx(tmp_path / "a-idx3", array, gz=gz)
    assert path.name.endswith(".gz") == gz
    loaded = read_idx(path)
    assert loaded.dtype == torch_dtype
    assert loaded.shape == (3, 5, 7)
    assert torch.equal(loaded, torch.from_numpy(array))


def test_read_idx_one_and_zero_sized_dims(tmp_path: Path) -> None:
    labels = np.arange(10, dtype=np.uint8)
    assert torch.equal(read_idx(write_idx(tmp_path / "l", labels)), torch.arange(10).byte())
    empty = read_idx(write_idx(tmp_path / "e", np.zeros((0, 28, 28), np.uint8)))
    assert empty.shape == (0, 28, 28)


def test_read_idx_gzip_detected_by_content(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.int16).reshape(3, 4)
    # A decompressed file that kept its .gz name, and a compressed one without the suffix.
    plain_named_gz = write_bytes(tmp_path / "x.gz", idx_bytes(array))
    gz_named_plain = tmp_path / "y"
    gz_named_plain.write_bytes(gzip.compress(idx_bytes(array)))
    for path in (plain_named_gz, gz_named_plain):
        assert torch.equal(read_idx(path), torch.from_numpy(array))


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_data(tmp_path: Path, gz: bool) -> None:
    data = idx_bytes(np.zeros((6, 28, 28), np.uint8))[: 16 + 4000]
    path = write_bytes(tmp_path / "images", data, gz=gz)
    with pytest.raises(DatasetFormatError) as exc:
        read_idx(path)
    _names_file(exc, path)
    assert "expected 4704 data bytes for shape (6, 28, 28) uint8, found 4000" in str(exc.value)


def test_trailing_bytes(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "labels", idx_bytes(np.zeros(5, np.int32)) + b"\0\0\0")
    with pytest.raises(DatasetFormatError, match=r"expected 20 data bytes .* found 23") as exc:
        read_idx(path)
    _names_file(exc, path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x1f\x8a\x08\x03rest", "two zero bytes"),  # not IDX at all
        (b"PK\x03\x04" + b"\0" * 20, "two zero bytes"),  # a zip file
        (b"\x00\x00\x0a\x01\x00\x00\x00\x01x", "0x0A"),  # unknown type code
        (b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00", "12 bytes) after the magic"),  # header cut
        (b"\x00\x00", "truncated"),  # magic cut
        (b"", "a file of 0 bytes"),
    ],
)
def test_bad_header(tmp_path: Path, content: bytes, message: str) -> None:
    path = write_bytes(tmp_path / "bad-idx", content)
    with pytest.raises(DatasetFormatError, match=re.escape(message)) as exc:
        read_idx(path)
    _names_file(exc, path)


def test_corrupted_gzip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    compressed = gzip.compress(idx_bytes(rng.integers(0, 255, (50, 28, 28), dtype=np.uint8)))
    damaged = bytearray(compressed)
    damaged[len(damaged) // 2 : len(damaged) // 2 + 20] = b"\xff" * 20
    truncated = compressed[: len(compressed) // 2]
    bad_header = b"\x1f\x8b" + b"\x00" * 30
    for i, content in enumerate((bytes(damaged), truncated, bad_header)):
        path = write_bytes(tmp_path / f"c{i}.gz", content)
        with pytest.raises(DatasetFormatError) as exc:
            read_idx(path)
        _names_file(exc, path)


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


# ---------------------------------------------------------------------------------- load_mnist


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_load_mnist(tmp_path: Path, gz: bool, train: bool) -> None:
    images, labels = write_mnist_split(tmp_path / "mnist", train=train, n=7, gz=gz)
    ds = load_mnist(tmp_path, train=train)
    assert ds.inputs.shape == (7, 1, 28, 28)
    assert ds.inputs.dtype == torch.float32
    expected = torch.from_numpy(images.astype(np.float32) / 255).unsqueeze(1)
    assert torch.allclose(ds.inputs, expected, atol=1e-7)
    assert float(ds.inputs.min()) >= 0 and float(ds.inputs.max()) <= 1
    assert ds.targets.dtype == torch.int64
    assert torch.equal(ds.targets, torch.from_numpy(labels.astype(np.int64)))
    assert ds.num_classes == 10
    assert ds.classes == [str(d) for d in range(10)]
    assert ds.name == f"mnist/{'train' if train else 'test'}"
    _, y = ds.gather(torch.tensor([2, 0]))
    assert torch.equal(y, ds.targets[[2, 0]])


def test_load_fashion_mnist_from_raw_subfolder(tmp_path: Path) -> None:
    _, labels = write_mnist_split(tmp_path / "fashion-mnist" / "raw", train=False, n=4, gz=True)
    ds = load_mnist(tmp_path, train=False, kind="fashion-mnist")
    assert ds.name == "fashion-mnist/test"
    assert ds.classes == FASHION_MNIST_CLASSES
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert torch.equal(ds.targets, torch.from_numpy(labels.astype(np.int64)))


def test_only_the_requested_split_is_needed(tmp_path: Path) -> None:
    write_mnist_split(tmp_path / "mnist", train=False, n=3)
    assert len(load_mnist(tmp_path, train=False)) == 3
    with pytest.raises(DatasetNotFoundError):
        load_mnist(tmp_path, train=True)


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, env, xdg = tmp_path / "explicit", tmp_path / "env", tmp_path / "xdg"
    for n, r in ((3, explicit), (4, env), (5, xdg / "adabatch" / "data")):
        write_mnist_split(r / "mnist", train=True, n=n)
    monkeypatch.setenv("ADABATCH_DATA", str(env))
    assert len(load_mnist(explicit)) == 3  # the explicit root first
    assert len(load_mnist()) == 4  # then $ADABATCH_DATA
    assert len(load_mnist(tmp_path / "empty")) == 4  # an explicit root without it is skipped
    monkeypatch.delenv("ADABATCH_DATA")
    assert len(load_mnist()) == 5  # then $XDG_CACHE_HOME/adabatch/data


def test_not_found_lists_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADABATCH_DATA", str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError) as exc:
        load_mnist(tmp_path / "mine")
    message = str(exc.value)
    for directory in (tmp_path / "mine" / "mnist", tmp_path / "env" / "mnist"):
        assert str(directory) in message
    assert str(tmp_path / "xdg" / "adabatch" / "data" / "mnist") in message
    assert "adabatch data fetch mnist" in message
    assert "train-images-idx3-ubyte" in message


def test_half_present_split_is_reported(tmp_path: Path) -> None:
    write_mnist_split(tmp_path / "mnist", train=True, n=3)
    (tmp_path / "mnist" / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError, match="lacks train-labels-idx1-ubyte"):
        load_mnist(tmp_path)


def test_count_mismatch(tmp_path: Path) -> None:
    write_mnist_split(tmp_path / "mnist", train=True, n=5)
    labels = write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(DatasetFormatError, match="expected 5 labels") as exc:
        load_mnist(tmp_path)
    _names_file(exc, labels)


def test_label_out_of_range(tmp_path: Path) -> None:
    write_mnist_split(tmp_path / "mnist", train=True, n=3)
    labels = write_idx(
        tmp_path / "mnist" / "train-labels-idx1-ubyte", np.array([1, 10, 2], np.uint8)
    )
    with pytest.raises(DatasetFormatError, match="label 10 at index 1") as exc:
        load_mnist(tmp_path)
    _names_file(exc, labels)


def test_wrong_image_shape(tmp_path: Path) -> None:
    write_mnist_split(tmp_path / "mnist", train=True, n=2)
    images = write_idx(
        tmp_path / "mnist" / "train-images-idx3-ubyte", np.zeros((2, 27, 28), np.uint8)
    )
    with pytest.raises(DatasetFormatError, match=r"N × 28 × 28.*\(2, 27, 28\)") as exc:
        load_mnist(tmp_path)
    _names_file(exc, images)


def test_bad_kind() -> None:
    with pytest.raises(ValueError, match="'kmnist'"):
        load_mnist(kind="kmnist")  # type: ignore[arg-type]
