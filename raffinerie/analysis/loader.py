"""Finding and importing distillery classes (user modules and built-ins)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys

from raffinerie.analysis.code import Source
from raffinerie.errors import RaffError


def _is_distillery(obj) -> bool:
    return inspect.isclass(obj) and callable(getattr(obj, "run", None)) \
        and callable(getattr(obj, "output", None))


def load_class(source: Source, analysis: str):
    """The distillery class at `source`; one clear error if it is not there."""
    module = _import(source, analysis)
    if source.builtin:
        cls = getattr(module, "DISTILLERY", None)
    else:
        cls = getattr(module, source.class_name, None) if source.class_name else None
    if not _is_distillery(cls):
        raise RaffError(f"analysis '{analysis}': no distillery class '{source.class_name}' (a class with "
                        "run() and output()) in this module", file=source.file)
    return cls


def _import(source: Source, analysis: str):
    try:
        if source.builtin:
            return importlib.import_module(f"raffinerie.analysis.builtin.{source.module}")
        root = str(source.root)
        if root not in sys.path:
            sys.path.insert(0, root)
        if source.module in sys.modules:  # a fresh import: the code may have changed
            del sys.modules[source.module]
        return importlib.import_module(source.module)
    except RaffError:
        raise
    except Exception as exc:  # the user's module failed to import
        raise RaffError(f"analysis '{analysis}': importing its module failed: "
                        f"{type(exc).__name__}: {exc}{_where(exc, source)}", file=source.file) from None


def _where(exc: BaseException, source: Source) -> str:
    """' (at file:line)' of the deepest frame in the user's code, if any."""
    tb, found = exc.__traceback__, None
    root = str(source.root)
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(root):
            found = tb
        tb = tb.tb_next
    if found is None:
        return ""
    return f" (at {found.tb_frame.f_code.co_filename}:{found.tb_lineno})"
