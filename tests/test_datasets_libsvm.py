"""LIBSVM loader: files written here line by line, compressed or not, and malformed ones."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from _formats import sparse_rows, svmlight_text, write_svmlight
from adabatch.datasets import (
    DatasetFormatError,
    DatasetNotFoundError,
    SparseDataset,
    libsvm_label_values,
    load_libsvm,
    load_libsvm_named,
)


@pytest.fixture(autouse=True)
def _isolated_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADABATCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def _dense(ds: SparseDataset) -> np.ndarray:
    return ds.features.to_dense().numpy()


@pytest.mark.parametrize("compress", [None, "gz", "bz2"])
def test_binary_file(tmp_path: Path, compress: str | None) -> None:
    features = sparse_rows(8, 6)
    features[:, 5] = 0
    features[2, 5] = 1.5  # the last column is used, so the width is known from the file
    labels = np.array([1, -1, -1, 1, 1, -1, 1, 1])
    path = write_svmlight(tmp_path / "a1a", svmlight_text(features, labels), compress=compress)
    ds = load_libsvm(path)
    assert isinstance(ds, SparseDataset)
    assert ds.features.layout == torch.sparse_csr
    assert ds.features.dtype == torch.float32
    assert ds.num_features == 6
    np.testing.assert_array_equal(_dense(ds), features)
    assert ds.targets.dtype == torch.int64
    assert ds.targets.tolist() == [1, 0, 0, 1, 1, 0, 1, 1]  # -1 → 0, +1 → 1
    assert ds.num_classes == 2
    assert ds.name == "a1a"  # without the compression suffix
    rows, targets = ds.gather(torch.tensor([3, 0]))
    np.testing.assert_array_equal(rows.to_dense().numpy(), features[[3, 0]])
    assert targets.tolist() == [1, 1]


def test_one_sided_binary_file_keeps_the_numbering(tmp_path: Path) -> None:
    features = sparse_rows(3, 4, density=1.0)
    path = write_svmlight(tmp_path / "pos", svmlight_text(features, np.array([1, 1, 1])))
    ds = load_libsvm(path)
    assert ds.targets.tolist() == [1, 1, 1] and ds.num_classes == 2


def test_zero_based_indices(tmp_path: Path) -> None:
    features = sparse_rows(5, 4, density=1.0)
    path = write_svmlight(
        tmp_path / "z", svmlight_text(features, np.array([0, 1, 1, 0, 1]), zero_based=True)
    )
    ds = load_libsvm(path)  # "auto" sees the index 0
    np.testing.assert_array_equal(_dense(ds), features)
    assert ds.targets.tolist() == [0, 1, 1, 0, 1]
    explicit = load_libsvm(path, zero_based=True, n_features=7)
    assert explicit.num_features == 7
    np.testing.assert_array_equal(_dense(explicit)[:, :4], features)


def test_comments_and_qid(tmp_path: Path) -> None:
    features = sparse_rows(4, 5, seed=3)
    text = svmlight_text(features, np.array([1, 2, 1, 2]), comments=True)
    text = text.replace("\n2 ", "\n2 qid:7 ", 1)
    ds = load_libsvm(write_svmlight(tmp_path / "c", text), n_features=5)
    np.testing.assert_array_equal(_dense(ds), features)
    assert ds.targets.tolist() == [0, 1, 0, 1]


def test_multiclass_labels_in_ascending_order(tmp_path: Path) -> None:
    features = sparse_rows(6, 3, density=1.0)
    path = write_svmlight(tmp_path / "m", svmlight_text(features, np.array([5, 1, 2, 5, 2, 1])))
    ds = load_libsvm(path)
    assert ds.targets.tolist() == [2, 0, 1, 2, 1, 0]
    assert ds.num_classes == 3
    # With the training file's label values, a file with fewer classes is numbered alike.
    again = load_libsvm(path, label_values=[1, 2, 3, 5])
    assert again.targets.tolist() == [3, 0, 1, 3, 1, 0] and again.num_classes == 4


def test_regression(tmp_path: Path) -> None:
    features = sparse_rows(4, 3, density=1.0)
    labels = np.array([0.5, -1.25, 3.0, 2.0])
    ds = load_libsvm(write_svmlight(tmp_path / "r", svmlight_text(features, labels)))
    assert ds.num_classes is None
    assert ds.targets.dtype == torch.float32
    assert ds.targets.tolist() == labels.tolist()
    ints = write_svmlight(tmp_path / "ages", svmlight_text(features, np.array([3, 9, 9, 12])))
    forced = load_libsvm(ints, task="regression")
    assert forced.num_classes is None and forced.targets.tolist() == [3.0, 9.0, 9.0, 12.0]


def test_label_values_rule() -> None:
    assert libsvm_label_values(np.array([-1.0, 1.0, 1.0])) == [-1.0, 1.0]
    assert libsvm_label_values(np.array([-1.0])) == [-1.0, 1.0]
    assert libsvm_label_values(np.array([1.0, 1.0])) == [-1.0, 1.0]
    assert libsvm_label_values(np.array([0.0, 0.0])) == [0.0, 1.0]
    assert libsvm_label_values(np.array([3.0, 1.0, 2.0])) == [1.0, 2.0, 3.0]
    assert libsvm_label_values(np.array([0.5, 1.0])) is None
    assert libsvm_label_values(np.array([0.5, 1.0]), task="classification") == [0.5, 1.0]
    with pytest.raises(ValueError, match="'clustering'"):
        libsvm_label_values(np.array([1.0]), task="clustering")  # type: ignore[arg-type]


def test_dense_gather(tmp_path: Path) -> None:
    features = sparse_rows(5, 4, density=1.0)
    path = write_svmlight(tmp_path / "d", svmlight_text(features, np.array([1, -1, 1, -1, 1])))
    rows, _ = load_libsvm(path, dense=True, name="mine").gather(torch.tensor([4, 1]))
    assert rows.layout == torch.strided
    np.testing.assert_array_equal(rows.numpy(), features[[4, 1]])


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1 1:0.5 3:x", "'3:x'"),
        ("cat 1:0.5", "label 'cat'"),
        ("1 4:1 2:1", "'2:1'"),  # decreasing indices
        ("1 1:1 1:2", "'1:2'"),  # repeated index
        ("1 1:1 word", "'word'"),
        ("1 a:1", "'a:1'"),
    ],
)
@pytest.mark.parametrize("compress", [None, "gz"])
def test_malformed_line(tmp_path: Path, line: str, message: str, compress: str | None) -> None:
    text = "1 1:0.5 2:1\n-1 2:0.25\n" + line + "\n1 3:1\n"
    path = write_svmlight(tmp_path / "bad", text, compress=compress)
    with pytest.raises(DatasetFormatError, match=f"line 3: .*{message}") as exc:
        load_libsvm(path)
    assert str(path) in str(exc.value)


def test_corrupted_gzip(tmp_path: Path) -> None:
    data = gzip.compress(svmlight_text(sparse_rows(50, 20), np.ones(50)).encode())
    path = tmp_path / "broken.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFormatError) as exc:
        load_libsvm(path)
    assert str(path) in str(exc.value)


def test_label_outside_label_values(tmp_path: Path) -> None:
    features = sparse_rows(3, 2, density=1.0)
    path = write_svmlight(tmp_path / "l", svmlight_text(features, np.array([1, 4, 2])))
    with pytest.raises(DatasetFormatError, match=r"label 4 \(sample 1") as exc:
        load_libsvm(path, label_values=[1, 2, 3])
    assert str(path) in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        load_libsvm(tmp_path / "nope")


# ------------------------------------------------------------------------------ named data sets


def test_named_splits_agree(tmp_path: Path) -> None:
    train_x = sparse_rows(6, 7, seed=1)
    train_x[0, 6] = 1.0  # the training file reaches column 7 ...
    test_x = sparse_rows(3, 7, seed=2)
    test_x[:, 5:] = 0  # ... the test file only column 5
    directory = tmp_path / "libsvm"
    write_svmlight(directory / "dna", svmlight_text(train_x, np.array([1, 2, 3, 1, 2, 3])))
    write_svmlight(directory / "dna.t", svmlight_text(test_x, np.array([3, 3, 2])), compress="bz2")
    train = load_libsvm_named("dna", tmp_path)
    test = load_libsvm_named("dna", tmp_path, split="test")
    assert train.name == "dna/train" and test.name == "dna/test"
    assert train.num_features == test.num_features == 7
    np.testing.assert_array_equal(_dense(test), test_x)
    assert test.targets.tolist() == [2, 2, 1]  # numbered as in the training file
    assert train.num_classes == test.num_classes == 3


def test_named_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def write(root: Path, n: int) -> None:
        write_svmlight(root / "libsvm" / "a9a", svmlight_text(sparse_rows(n, 3), np.ones(n)))

    write(tmp_path / "xdg" / "adabatch" / "data", 2)
    assert len(load_libsvm_named("a9a")) == 2
    write(tmp_path / "env", 3)
    monkeypatch.setenv("ADABATCH_DATA", str(tmp_path / "env"))
    assert len(load_libsvm_named("a9a")) == 3
    write(tmp_path / "mine", 4)
    assert len(load_libsvm_named("a9a", tmp_path / "mine")) == 4


def test_named_not_found(tmp_path: Path) -> None:
    write_svmlight(tmp_path / "libsvm" / "a9a", "1 1:1\n")
    with pytest.raises(DatasetNotFoundError) as exc:
        load_libsvm_named("a9a", tmp_path, split="test")
    assert "a9a.t" in str(exc.value)
    assert str(tmp_path / "libsvm") in str(exc.value)


def test_named_malformed_test_file_is_named(tmp_path: Path) -> None:
    write_svmlight(tmp_path / "libsvm" / "w1a", "1 1:1\n-1 2:1\n")
    test = write_svmlight(tmp_path / "libsvm" / "w1a.t", "1 1:1\n-1 2:oops\n")
    with pytest.raises(DatasetFormatError, match="line 2") as exc:
        load_libsvm_named("w1a", tmp_path)  # the train split, spoiled by its partner
    assert str(test) in str(exc.value)


def test_named_bad_split() -> None:
    with pytest.raises(ValueError, match="'validation'"):
        load_libsvm_named("a9a", split="validation")  # type: ignore[arg-type]
