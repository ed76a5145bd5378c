"""The ``adabatch`` command line: ``data fetch`` / ``data list``, exit codes and messages.

No network: data sets are either made present in tmp_path (LIBSVM sets count as present when
their files exist) or every download goes to a closed local proxy port and fails at once.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from _offline import offline  # noqa: F401  (a fixture)
from adabatch.cli import COMMANDS, main

# Every test runs offline, with private data roots (see _offline.py).
pytestmark = pytest.mark.usefixtures("offline")


def put_a9a(root: Path) -> Path:
    (root / "libsvm").mkdir(parents=True)
    (root / "libsvm" / "a9a").write_text("+1 1:1\n")
    (root / "libsvm" / "a9a.t").write_text("-1 2:1\n")
    return root / "libsvm" / "a9a"


def test_fetch_present_prints_path_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = put_a9a(tmp_path / "d")
    assert main(["data", "fetch", "a9a", "--dir", str(tmp_path / "d")]) == 0
    out, err = capsys.readouterr()
    assert out == f"{expected}\n"
    assert "already present" in err


def test_dir_beats_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    in_env = put_a9a(tmp_path / "env")
    in_dir = put_a9a(tmp_path / "dir")
    monkeypatch.setenv("ADABATCH_DATA", str(tmp_path / "env"))
    assert main(["data", "fetch", "a9a", "-q"]) == 0
    assert capsys.readouterr().out == f"{in_env}\n"
    assert main(["data", "fetch", "a9a", "-q", "--dir", str(tmp_path / "dir")]) == 0
    assert capsys.readouterr().out == f"{in_dir}\n"


def test_fetch_failure_exits_1_with_the_routes_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "fetch", "cifar10", "--dir", str(tmp_path / "d"), "--timeout", "5"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    last = err.strip().splitlines()
    message = "\n".join(last[last.index(next(x for x in last if x.startswith("adabatch:"))) :])
    assert message.startswith("adabatch: error: data set 'cifar10' not found")
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz: cannot connect" in message
    assert f"so that {tmp_path / 'd' / 'cifar-10-batches-py'}/ holds data_batch_1" in message
    assert "Traceback" not in err
    assert not (tmp_path / "d").exists()  # nothing left behind


def test_fetch_into_an_impossible_directory_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    assert main(["data", "fetch", "a9a", "-q", "--dir", str(tmp_path / "file" / "sub")]) == 1
    assert capsys.readouterr().err.startswith("adabatch: error: [Errno 20] Not a directory")


@pytest.mark.parametrize(
    "argv",
    [[], ["data"], ["data", "fetch"], ["data", "fetch", "nope"], ["nope"], ["data", "list", "-x"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: adabatch" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "fetch", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--dir DIR" in help_text
    assert "fashion-mnist" in help_text
    assert "$ADABATCH_DATA" in help_text


def test_list_shows_roots_presence_and_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a9a = put_a9a(tmp_path / "d")
    assert main(["data", "list", "--dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    roots = out.split("\n\n")[0]
    assert str(tmp_path / "d") in roots
    assert str(tmp_path / "cache" / "adabatch" / "data") in roots
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line[:1].isalnum()}
    assert lines["a9a"][1:] == ["present", str(a9a)]
    assert lines["mnist"][1:] == ["missing", "-"]
    assert "tiny-imagenet" in lines


def test_python_dash_m(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["adabatch", "--version"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("adabatch", run_name="__main__")
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("adabatch ")


def test_every_registered_command_is_a_module_with_the_protocol() -> None:
    import importlib

    for module in map(importlib.import_module, COMMANDS.values()):
        assert isinstance(module.HELP, str)
        assert callable(module.add_arguments)
        assert callable(module.run)
