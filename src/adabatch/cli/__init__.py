"""The ``adabatch`` command line: ``adabatch COMMAND ...`` (also ``python -m adabatch``).

Each command lives in its own module, listed once in `COMMANDS`. A command module provides

- ``HELP``: one line for ``adabatch --help``;
- ``add_arguments(parser)``: its options and sub-commands on the given argparse parser;
- ``run(args) -> int``: do the work and return the exit status;
- optionally ``OVERRIDES = True``: the command takes configuration overrides
  (``--policy.delta=0.1``), which argparse cannot declare; they arrive as ``args.overrides``.

Exit statuses: 0 success, 1 failure (the message on stderr, without a traceback for the expected
errors: missing or corrupted data, failed downloads, file system errors), 2 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from types import ModuleType

from adabatch import __version__
from adabatch.errors import DatasetFormatError, RankMismatchError, ReportError, RunError
from adabatch.experiments.config import ConfigError, join_override_values

__all__ = [
    "COMMANDS",
    "DISTRIBUTED_COMMANDS",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "main",
]

#: Command name → module. Adding a command is one line here plus its module.
COMMANDS: dict[str, str] = {
    "run": "adabatch.cli.run",
    "compare": "adabatch.cli.compare",
    "list": "adabatch.cli.list",
    "report": "adabatch.cli.report",
    "data": "adabatch.cli.data",
}

#: The commands that train, and so run on every rank under torchrun (the others: rank 0 only).
DISTRIBUTED_COMMANDS = frozenset({"run", "compare"})

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """An expected failure of a command: its message is shown as is, without a traceback."""


def _command(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser, with one sub-parser per entry of `COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="adabatch",
        description="Adaptive batch sizes for PyTorch: data sets and experiments.",
    )
    parser.add_argument("--version", action="version", version=f"adabatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = _command(name)
        # No abbreviations: an override such as --n=3000 or --out_dim=8 must never be taken
        # for a prefix of one of the command's own options (--no-progress, --out).
        sub = commands.add_parser(
            name, help=module.HELP, description=module.HELP, allow_abbrev=False
        )
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    Usage errors return 2 after argparse's message; expected failures print
    ``adabatch: error: ...`` on stderr and return 1; unexpected exceptions propagate (a bug
    deserves its traceback).
    """
    parser = build_parser()
    try:
        # `--policy.delta 0.1` (space form) must not let argparse take 0.1 as a positional.
        argv = join_override_values(sys.argv[1:] if argv is None else argv)
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(_command(args.command), "OVERRIDES", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = extra
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    with _one_speaker() as rank:
        if rank != 0 and args.command not in DISTRIBUTED_COMMANDS:
            return EXIT_OK  # nothing to share: rank 0 does it alone (one writer)
        return _run_command(args, rank)


@contextlib.contextmanager
def _one_speaker() -> Iterator[int]:
    """Under torchrun, ranks other than 0 print nothing on stdout and show no warnings.

    Rank 0 speaks for the whole run (the others would repeat it line for line); errors still
    reach stderr from every rank, tagged with the rank. Yields this process's rank, and
    shuts down the process group a command started.
    """
    from adabatch.distributed.launch import launched_by_torchrun, shutdown

    rank = int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0
    saved = sys.stdout
    try:
        with warnings.catch_warnings():
            if rank != 0:
                warnings.simplefilter("ignore")
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (closed below)
            yield rank
    finally:
        if sys.stdout is not saved:
            sys.stdout.close()
            sys.stdout = saved
        shutdown()


def _run_command(args: argparse.Namespace, rank: int) -> int:
    tag = "" if rank == 0 else f" (rank {rank})"
    try:
        status = int(args._run(args))
        sys.stdout.flush()  # a closed pipe raises here, not at interpreter exit
        return status
    except BrokenPipeError:
        # The reader went away (`adabatch list | head`): stop quietly, and keep Python's exit
        # flush from raising again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    # The errors a user can cause or fix; anything else is a bug and keeps its traceback.
    except (
        CommandError,
        ConfigError,
        DatasetFormatError,
        RankMismatchError,
        ReportError,
        RunError,
        OSError,
    ) as exc:
        print(f"adabatch: error{tag}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"adabatch: interrupted{tag}", file=sys.stderr)
        return 130
