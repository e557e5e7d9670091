"""What a command works on: the main config and its library, the cache, the board.

Imported when the parsers are built, so the layers it reads are imported in
the functions that use them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from raffinerie.cli.options import DEFAULT_MAIN
from raffinerie.errors import RaffError
from raffinerie.words import count, word


def main_path(args) -> Path:
    path = Path(args.config)
    if not path.is_file():
        hint = "" if args.config != DEFAULT_MAIN else " (name one with -c MAIN)"
        raise RaffError(f"main config not found{hint}", file=path)
    return path


def load_valid(args):
    """(library, config files) of `-c MAIN`, or ConfigErrors with every error in it that
    stops the command: for a command on NAMEs, only those of what they need (the other
    procedures with errors are one warning line)."""
    from raffinerie.config.checks import blocking, validate
    from raffinerie.config.library import load_library
    from raffinerie.config.resolve import ConfigFiles
    from raffinerie.errors import ERROR, ConfigErrors

    lib = load_library(main_path(args))
    files = ConfigFiles()
    module = None
    if hasattr(args, "analysis_path"):  # a command that runs or plans analyses: their code must be there
        from raffinerie.analysis.code import module_check

        module = module_check(lib.main, args.analysis_path)
    names = _names(args)
    diags = validate(lib, files=files, max_points=args.max_points, module=module, names=names)
    if names is None:
        errors, others = [d for d in diags if d.severity == ERROR], []
    else:
        errors, others = blocking(diags, lib, names)
    if errors:
        raise ConfigErrors(errors)
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        print(f"warning: {count(len(others), 'other procedure')} {word(len(others), 'has', 'have')} "
              f"errors ({shown}); raff validate lists them", file=sys.stderr)
    return lib, files


def _names(args) -> list[str] | None:
    """The procedures a command works on (None: the whole library)."""
    if getattr(args, "names", None):
        return list(args.names)
    return [args.name] if isinstance(getattr(args, "name", None), str) else None


def open_store(args, lib):
    """The cache of the library `lib` (or of --cache)."""
    from raffinerie.store.layout import cache_root
    from raffinerie.store.store import Store

    return Store(cache_root(lib.main, args.cache))


def one_identity(args) -> str:
    """The identity of the one board a command works on (its network file is read once)."""
    from raffinerie.config.network import boards

    found = boards(getattr(args, "network", None), getattr(args, "seed", None))
    if len(found) > 1:
        raise RaffError(f"`raff {args.command}` works on one board; name one --network (or --seed)")
    return found[0].identity
