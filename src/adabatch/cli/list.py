"""``adabatch list``: the suites and their experiments, one line each.

``--verbose`` adds what each suite mirrors and the outcome to expect.
"""

from __future__ import annotations

import argparse
import textwrap

from adabatch.experiments.suites import SUITES

__all__ = ["HELP", "add_arguments", "run"]

HELP = "list the suites (adabatch compare SUITE) and experiments (adabatch run SUITE/METHOD)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``adabatch list``."""
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also what each suite mirrors and expects"
    )


def run(args: argparse.Namespace) -> int:
    """Print the list."""
    width = max(len(name) for name in SUITES)
    for suite in SUITES.values():
        tag = "" if suite.hardware == "cpu" else f" [{suite.hardware}]"
        print(f"{suite.name:<{width}}  {suite.description}{tag}")
        if args.verbose:
            for label, text in (("mirrors", suite.mirrors), ("expects", suite.expected)):
                wrapped = textwrap.fill(
                    text,
                    96,
                    initial_indent=" " * (width + 2) + f"{label}: ",
                    subsequent_indent=" " * (width + 4),
                    break_on_hyphens=False,  # "large-model" stays one word
                )
                print(wrapped)
        for method in suite.methods:
            print(f"{'':<{width}}    {suite.name}/{method.label}: {method.description}")
    print(
        "\nadabatch compare SUITE [--seeds N] runs every method of a suite and reports; "
        "adabatch run SUITE/METHOD runs one."
    )
    return 0
