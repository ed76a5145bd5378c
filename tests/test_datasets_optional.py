"""The format loaders import numpy, scikit-learn and Pillow only when called."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import adabatch.datasets
from adabatch.datasets import load_cifar10, load_libsvm, load_tiny_imagenet

OPTIONAL = {"numpy", "sklearn", "scipy", "PIL"}
LOADERS = ["idx", "mnist", "cifar", "tiny_imagenet", "libsvm", "_safe_pickle", "_archive"]


@pytest.mark.parametrize("module", LOADERS)
def test_no_module_level_import_of_optional_dependencies(module: str) -> None:
    source = Path(adabatch.datasets.__file__).with_name(f"{module}.py").read_text()
    for node in ast.parse(source).body:  # module level only; imports inside functions are fine
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        assert not {n.split(".")[0] for n in names} & OPTIONAL, (module, names)


@pytest.mark.parametrize(
    ("missing", "call"),
    [
        ("sklearn.datasets", lambda p: load_libsvm(p / "x")),
        ("PIL.Image", lambda p: load_tiny_imagenet(p)),
        ("numpy", lambda p: load_cifar10(p)),
    ],
)
def test_missing_dependency_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str, call: object
) -> None:
    from _formats import write_cifar10, write_svmlight, write_tiny_imagenet

    write_svmlight(tmp_path / "x", "1 1:1\n")
    write_tiny_imagenet(tmp_path, wnids=["n01"], per_class=1, val_per_class=0)
    write_cifar10(tmp_path / "cifar-10-batches-py", per_batch=1, n_test=1)
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` fail
    with pytest.raises(ImportError, match=r'pip install "adabatch\[data\]"'):
        call(tmp_path)  # type: ignore[operator]
