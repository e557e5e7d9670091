"""The options several commands share: the main config, the cache and backend, the shared cache.

The parsers are built on every `raff` call (also for --help), so nothing here,
nor in any command module's top level, imports a layer that loads numpy.
"""

from __future__ import annotations

import argparse
import os

from raffinerie.cli.numbers import SEED, whole

DEFAULT_MAIN = "main_config.yaml"


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="MAIN",
                   default=os.environ.get("RAFF_CONFIG", DEFAULT_MAIN),
                   help=f"main configuration file (default: $RAFF_CONFIG or ./{DEFAULT_MAIN})")
    p.add_argument("--max-points", type=whole(1), metavar="N",  # a string default is parsed by the type
                   default=os.environ.get("RAFF_MAX_POINTS", "10000000"),
                   help="refuse procedures with more points than N (default: $RAFF_MAX_POINTS or "
                        "10,000,000)")


def add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", metavar="DIR",
                   help="cache directory (default: $RAFF_CACHE or .raffinerie-cache/ beside MAIN)")
    p.add_argument("--network", metavar="FILE", action="append",
                   help="network file naming a board's hosts (default: the embedded emulator); "
                        "repeat it to build on several boards at once")
    p.add_argument("--seed", type=SEED, action="append", metavar="S",
                   help="seed of the embedded emulator's board (default 0), part of every key; "
                        "repeat it for several emulated boards")


def add_remote(p: argparse.ArgumentParser) -> None:
    p.add_argument("--remote", metavar="URL",
                   help="a cache shared between test stands (a folder or root://host//path; default: "
                        "`remote:` of MAIN): what it already holds is pulled, not acquired or made again")


def add_analysis_path(p: argparse.ArgumentParser, text: str = "user analyses (as for build)") -> None:
    p.add_argument("-a", "--analysis-path", metavar="PATH", help=text)


def add_config_and_backend(p: argparse.ArgumentParser) -> None:
    """The options of a command that reads the library and works on the cache of a board."""
    add_config(p)
    add_backend(p)
