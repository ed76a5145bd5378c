"""The integrations are optional: nothing heavy at `import adabatch`, clear errors without them."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from adabatch.integrations._require import require


def test_import_adabatch_loads_neither_framework() -> None:
    code = (
        "import sys, adabatch, adabatch.integrations\n"
        "heavy = [m for m in ('pytorch_lightning', 'lightning', 'transformers', 'accelerate')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_missing_framework_names_the_extra() -> None:
    with pytest.raises(ImportError, match=r"pip install adabatch\[lightning\]"):
        require(("no_such_lightning",), minimum="2.2", extra="lightning", what="here")


def test_a_too_old_framework_names_its_version_and_the_extra(monkeypatch) -> None:
    old = types.ModuleType("fake_transformers")
    old.__version__ = "4.30.2"
    monkeypatch.setitem(sys.modules, "fake_transformers", old)
    with pytest.raises(
        ImportError, match=r"found fake_transformers 4\.30\.2.*adabatch\[huggingface\]"
    ):
        require(("fake_transformers",), minimum="4.46", extra="huggingface", what="here")


def test_a_recent_enough_framework_is_returned(monkeypatch) -> None:
    new = types.ModuleType("fake_lightning")
    new.__version__ = "2.6.0rc1"
    monkeypatch.setitem(sys.modules, "fake_lightning", new)
    assert require(("fake_lightning",), minimum="2.2", extra="lightning", what="here") is new
