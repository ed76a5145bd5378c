"""Writers of small files in the real data set formats, for the loader tests.

Each writer builds the bytes from the format's definition (not with the loader's code, nor
with scikit-learn's svmlight writer), so a test checks the loader against the format itself.
"""

from __future__ import annotations

import bz2
import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

# ---------------------------------------------------------------------------------------- IDX

IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding: 00 00 code ndim, big-endian uint32 sizes, big-endian items."""
    code = IDX_CODES[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_bytes(path: Path, data: bytes, *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    return write_bytes(path, idx_bytes(array), gz=gz)


def write_mnist_split(
    directory: Path, *, train: bool, n: int, seed: int = 0, gz: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The two IDX files of one MNIST split with random content; returns (images, labels)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    prefix = "train" if train else "t10k"
    write_idx(directory / f"{prefix}-images-idx3-ubyte", images, gz=gz)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
    return images, labels


# ------------------------------------------------------------------------------------- CIFAR


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler lets us change one opcode
    """Pickles like Python 2's cPickle did for the CIFAR files: strings as BINSTRING.

    Python 3's protocol 2 writes bytes through ``_codecs.encode``; Python 2 had no such
    detour, and a loader must not need it. Loaded with ``encoding="bytes"`` these strings
    come back as bytes, as in the real files.
    """

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: bytes | str) -> None:
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def py2_pickle(obj: object, *, numpy1_names: bool = True) -> bytes:
    """``obj`` pickled (protocol 2) as Python 2 with numpy 1 did (``numpy.core`` names)."""
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    data = buffer.getvalue()
    if numpy1_names:
        data = data.replace(
            b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n"
        )
    return data


def cifar_images(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(
    directory: Path, *, per_batch: int = 4, n_test: int = 3, seed: int = 0, meta: bool = True
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A ``cifar-10-batches-py`` directory; returns split → (N × 3072 data, labels)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(1, 6):
        data, labels = cifar_images(per_batch, rng), rng.integers(0, 10, per_batch).tolist()
        batch = {
            b"batch_label": f"training batch {i} of 5".encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{i}_{j}.png".encode() for j in range(per_batch)],
        }
        (directory / f"data_batch_{i}").write_bytes(py2_pickle(batch))
        parts.append((data, np.array(labels)))
    test_data, test_labels = cifar_images(n_test, rng), rng.integers(0, 10, n_test).tolist()
    test = {b"batch_label": b"testing batch 1 of 1", b"labels": test_labels, b"data": test_data}
    (directory / "test_batch").write_bytes(py2_pickle(test))
    if meta:
        names = [f"class{k}".encode() for k in range(10)]
        meta_dict = {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}
        (directory / "batches.meta").write_bytes(py2_pickle(meta_dict))
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return {"train": train, "test": (test_data, np.array(test_labels))}


def write_cifar100(
    directory: Path, *, n_train: int = 6, n_test: int = 3, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A ``cifar-100-python`` directory; returns split → (data, fine labels, coarse labels)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = cifar_images(n, rng)
        fine, coarse = rng.integers(0, 100, n).tolist(), rng.integers(0, 20, n).tolist()
        batch = {
            b"filenames": [f"{split}_{j}.png".encode() for j in range(n)],
            b"batch_label": f"{split}ing batch 1 of 1".encode(),
            b"fine_labels": fine,
            b"coarse_labels": coarse,
            b"data": data,
        }
        (directory / split).write_bytes(py2_pickle(batch))
        out[split] = (data, np.array(fine), np.array(coarse))
    meta = {
        b"fine_label_names": [f"fine{k}".encode() for k in range(100)],
        b"coarse_label_names": [f"coarse{k}".encode() for k in range(20)],
    }
    (directory / "meta").write_bytes(py2_pickle(meta))
    return out


def make_tar_gz(directory: Path, archive: Path) -> Path:
    """Archive ``directory`` with its name as the top-level entry, as the CIFAR tarballs."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(directory, arcname=directory.name)
    return archive


def as_images(data: np.ndarray) -> np.ndarray:
    """CIFAR rows as N × 3 × 32 × 32 floats in [0, 1]: the expected loader output."""
    return data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0


# ------------------------------------------------------------------------------ Tiny-ImageNet


def smooth_image(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """An ``size × size × 3`` uint8 image that JPEG keeps nearly exactly: base + ramps.

    Red grows with the column and green with the row, so a transposed image would not match.
    """
    base = rng.integers(20, 100, size=3)
    y, x = np.mgrid[0:size, 0:size]
    image = np.stack([base[0] + 2 * x, base[1] + 2 * y, np.full_like(x, base[2])], axis=-1)
    return image.astype(np.uint8)


def save_jpeg(path: Path, image: np.ndarray, *, gray: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(image[..., 0] if gray else image, mode="L" if gray else "RGB")
    pil.save(path, format="JPEG", quality=100, subsampling=0)


def write_tiny_imagenet(
    root: Path,
    *,
    wnids: list[str],
    per_class: int = 2,
    val_per_class: int = 1,
    seed: int = 0,
    words: bool = True,
    gray: tuple[str, ...] = (),
) -> dict[str, tuple[list[np.ndarray], list[int]]]:
    """A ``tiny-imagenet-200`` directory under ``root``; returns split → (images, labels).

    Images named in ``gray`` are saved single-channel (the expected RGB image repeats it).
    """
    rng = np.random.default_rng(seed)
    top = root / "tiny-imagenet-200"
    top.mkdir(parents=True, exist_ok=True)
    (top / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    if words:
        lines = [f"{w}\tthing {i}, stuff {i}\n" for i, w in enumerate(wnids)]
        (top / "words.txt").write_text("n00000001\tentity\n" + "".join(lines))
    expected: dict[str, tuple[list[np.ndarray], list[int]]] = {"train": ([], []), "val": ([], [])}
    for label, wnid in enumerate(wnids):
        (top / "train" / wnid).mkdir(parents=True, exist_ok=True)
        (top / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for j in range(per_class):
            name = f"{wnid}_{j}.JPEG"
            image = smooth_image(rng)
            is_gray = name in gray
            if is_gray:
                image = np.repeat(image[..., :1], 3, axis=-1)
            save_jpeg(top / "train" / wnid / "images" / name, image, gray=is_gray)
            expected["train"][0].append(image)
            expected["train"][1].append(label)
    annotations = []
    k = 0
    # Validation images of the classes interleaved, as in the real annotations file.
    for j in range(val_per_class):
        for label, wnid in enumerate(wnids):
            name = f"val_{k}.JPEG"
            image = smooth_image(rng)
            save_jpeg(top / "val" / "images" / name, image)
            annotations.append(f"{name}\t{wnid}\t0\t{j}\t62\t63\n")
            expected["val"][0].append(image)
            expected["val"][1].append(label)
            k += 1
    (top / "val" / "images").mkdir(parents=True, exist_ok=True)
    (top / "val" / "val_annotations.txt").write_text("".join(annotations))
    return expected


# -------------------------------------------------------------------------------------- LIBSVM


def svmlight_text(
    features: np.ndarray, labels: np.ndarray, *, zero_based: bool = False, comments: bool = False
) -> str:
    """LIBSVM lines ``<label> <index>:<value> ...`` for the non-zero entries of each row."""
    lines = ["# written by the adabatch tests\n"] if comments else []
    offset = 0 if zero_based else 1
    for row, label in zip(features, labels, strict=True):
        entries = " ".join(f"{j + offset}:{float(row[j])!r}" for j in np.flatnonzero(row))
        tail = "  # a comment" if comments else ""
        lines.append(f"{label:g} {entries}{tail}".rstrip() + "\n")
    return "".join(lines)


def write_svmlight(path: Path, text: str, *, compress: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    if compress == "gz":
        path, data = path.with_name(path.name + ".gz"), gzip.compress(data)
    elif compress == "bz2":
        path, data = path.with_name(path.name + ".bz2"), bz2.compress(data)
    path.write_bytes(data)
    return path


def sparse_rows(n: int, d: int, seed: int = 0, density: float = 0.3) -> np.ndarray:
    """An n × d float32 matrix with about ``density`` non-zeros, exactly representable."""
    rng = np.random.default_rng(seed)
    values = rng.integers(-8, 9, size=(n, d)).astype(np.float32) / 4  # exact in decimal
    return np.where(rng.random((n, d)) < density, values, 0).astype(np.float32)
