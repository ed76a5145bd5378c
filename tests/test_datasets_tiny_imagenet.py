"""Tiny-ImageNet loader: real JPEG files in the standard directory layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from _formats import save_jpeg, smooth_image, write_tiny_imagenet
from adabatch.datasets import DatasetFormatError, DatasetNotFoundError, load_tiny_imagenet

WNIDS = ["n01443537", "n01629819", "n01641577"]
# JPEG at quality 100 without chroma subsampling changes the smooth test images by a few levels.
JPEG_TOLERANCE = 6


@pytest.fixture(autouse=True)
def _isolated_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADABATCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def written(tmp_path: Path) -> dict[str, tuple[list[np.ndarray], list[int]]]:
    return write_tiny_imagenet(
        tmp_path, wnids=WNIDS, per_class=3, val_per_class=2, gray=(f"{WNIDS[1]}_1.JPEG",)
    )


def _close(inputs: torch.Tensor, images: list[np.ndarray]) -> None:
    expected = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(torch.int32)
    assert inputs.shape == expected.shape
    assert int((inputs.to(torch.int32) - expected).abs().max()) <= JPEG_TOLERANCE


def test_train_split(tmp_path: Path, written: dict) -> None:
    ds = load_tiny_imagenet(tmp_path)
    assert ds.inputs.shape == (9, 3, 64, 64)
    assert ds.inputs.dtype == torch.uint8
    _close(ds.inputs, written["train"][0])
    # Class i is line i of wnids.txt; images class by class.
    assert ds.targets.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] == written["train"][1]
    assert ds.targets.dtype == torch.int64
    assert ds.num_classes == 3
    assert ds.classes == ["thing 0, stuff 0", "thing 1, stuff 1", "thing 2, stuff 2"]
    assert ds.name == "tiny-imagenet/train"


def test_grayscale_images_become_rgb(tmp_path: Path, written: dict) -> None:
    ds = load_tiny_imagenet(tmp_path)
    gray = ds.inputs[4]  # class 1, image 1
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_val_split_in_annotation_order(tmp_path: Path, written: dict) -> None:
    ds = load_tiny_imagenet(tmp_path, split="val")
    assert ds.targets.tolist() == [0, 1, 2, 0, 1, 2] == written["val"][1]
    _close(ds.inputs, written["val"][0])
    assert ds.name == "tiny-imagenet/val"


def test_float_dtype_scales_to_unit_interval(tmp_path: Path, written: dict) -> None:
    as_bytes = load_tiny_imagenet(tmp_path, split="val")
    as_float = load_tiny_imagenet(tmp_path, split="val", dtype=torch.float32)
    assert as_float.inputs.dtype == torch.float32
    assert torch.allclose(as_float.inputs, as_bytes.inputs.float() / 255)


def test_max_per_class(tmp_path: Path, written: dict) -> None:
    assert load_tiny_imagenet(tmp_path, max_per_class=2).targets.tolist() == [0, 0, 1, 1, 2, 2]
    assert load_tiny_imagenet(tmp_path, split="val", max_per_class=1).targets.tolist() == [0, 1, 2]


def test_without_words_the_classes_are_the_wnids(tmp_path: Path) -> None:
    write_tiny_imagenet(tmp_path, wnids=WNIDS, per_class=1, val_per_class=1, words=False)
    assert load_tiny_imagenet(tmp_path, split="val").classes == WNIDS


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tiny_imagenet(tmp_path / "xdg" / "adabatch" / "data", wnids=WNIDS[:1], per_class=1)
    assert len(load_tiny_imagenet()) == 1
    write_tiny_imagenet(tmp_path / "env", wnids=WNIDS[:2], per_class=1)
    monkeypatch.setenv("ADABATCH_DATA", str(tmp_path / "env"))
    assert len(load_tiny_imagenet()) == 2
    write_tiny_imagenet(tmp_path / "mine", wnids=WNIDS, per_class=1)
    assert len(load_tiny_imagenet(tmp_path / "mine")) == 3


def test_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as exc:
        load_tiny_imagenet(tmp_path)
    assert str(tmp_path / "tiny-imagenet-200") in str(exc.value)
    assert "adabatch data fetch tiny-imagenet" in str(exc.value)


def test_unknown_wnid_in_annotations(tmp_path: Path, written: dict) -> None:
    annotations = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    with annotations.open("a") as f:
        f.write("val_99.JPEG\tn99999999\t0\t0\t63\t63\n")
    with pytest.raises(DatasetFormatError, match="'n99999999' at line 7") as exc:
        load_tiny_imagenet(tmp_path, split="val")
    assert str(annotations) in str(exc.value)


def test_malformed_annotation_line(tmp_path: Path, written: dict) -> None:
    annotations = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text("val_0.JPEG n01443537 0 0 63 63\n")  # spaces, not tabs
    with pytest.raises(DatasetFormatError, match="line 1") as exc:
        load_tiny_imagenet(tmp_path, split="val")
    assert str(annotations) in str(exc.value)


def test_listed_file_missing(tmp_path: Path, written: dict) -> None:
    missing = tmp_path / "tiny-imagenet-200" / "val" / "images" / "val_4.JPEG"
    missing.unlink()
    with pytest.raises(DatasetFormatError, match="no such file") as exc:
        load_tiny_imagenet(tmp_path, split="val")
    assert str(missing) in str(exc.value)


def test_class_directory_missing(tmp_path: Path, written: dict) -> None:
    images = tmp_path / "tiny-imagenet-200" / "train" / WNIDS[2] / "images"
    for f in images.iterdir():
        f.unlink()
    images.rmdir()
    with pytest.raises(DatasetFormatError, match=WNIDS[2]) as exc:
        load_tiny_imagenet(tmp_path)
    assert str(images) in str(exc.value)


@pytest.mark.parametrize("content", [b"not a jpeg at all", b"\xff\xd8\xff\xe0" + b"\0" * 10])
def test_unreadable_image(tmp_path: Path, written: dict, content: bytes) -> None:
    bad = tmp_path / "tiny-imagenet-200" / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_2.JPEG"
    bad.write_bytes(content)
    with pytest.raises(DatasetFormatError, match="readable JPEG") as exc:
        load_tiny_imagenet(tmp_path)
    assert str(bad) in str(exc.value)


def test_truncated_jpeg(tmp_path: Path, written: dict) -> None:
    bad = tmp_path / "tiny-imagenet-200" / "val" / "images" / "val_2.JPEG"
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(DatasetFormatError) as exc:
        load_tiny_imagenet(tmp_path, split="val")
    assert str(bad) in str(exc.value)


def test_wrong_image_size(tmp_path: Path, written: dict) -> None:
    bad = tmp_path / "tiny-imagenet-200" / "val" / "images" / "val_1.JPEG"
    save_jpeg(bad, smooth_image(np.random.default_rng(0), size=32))
    with pytest.raises(DatasetFormatError, match="64×64 image, found 32×32") as exc:
        load_tiny_imagenet(tmp_path, split="val")
    assert str(bad) in str(exc.value)


def test_duplicate_wnid(tmp_path: Path, written: dict) -> None:
    wnids = tmp_path / "tiny-imagenet-200" / "wnids.txt"
    wnids.write_text("\n".join([*WNIDS, WNIDS[0]]) + "\n")
    with pytest.raises(DatasetFormatError, match="again at line 4") as exc:
        load_tiny_imagenet(tmp_path)
    assert str(wnids) in str(exc.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "test"}, "no labels"),
        ({"dtype": torch.int64}, "torch.int64"),
        ({"max_per_class": 0}, "max_per_class"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_tiny_imagenet(**kwargs)
