"""Reading YAML files, with places (line numbers) for error messages.

Documents are loaded with libyaml's C loader when it is there. Line numbers
are found only when a message needs one: the file is composed into nodes
again, once, and the node at a document path is looked up.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from raffinerie.errors import RaffError

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_text(path: Path, what: str = "file") -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RaffError(f"{what} not found", file=path) from None
    except IsADirectoryError:
        raise RaffError(f"{what} is a directory, not a file", file=path) from None
    except UnicodeDecodeError as exc:
        raise RaffError(f"not a UTF-8 text file ({exc.reason} at byte {exc.start})", file=path) from None
    except OSError as exc:
        raise RaffError(f"cannot read {what}: {exc.strerror}", file=path) from None


def load_yaml(path: Path, what: str = "file") -> Any:
    """The document in `path`; a syntax error names file:line:column."""
    text = read_text(path, what)
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is None:
            raise RaffError(f"YAML syntax error: {problem}", file=path) from None
        raise RaffError(f"YAML syntax error at column {mark.column + 1}: {problem}",
                        file=path, line=mark.line + 1) from None
    except yaml.YAMLError as exc:
        raise RaffError(f"YAML error: {exc}", file=path) from None


@lru_cache(maxsize=64)
def _compose(path: Path, mtime_ns: int):
    try:
        return yaml.compose(path.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def line_of(path: Path, doc_path: tuple = ()) -> int | None:
    """1-based line of the deepest node of `doc_path` that exists in the file.

    For a path that ends at a mapping key, the line of the key itself.
    """
    try:
        node = _compose(path, path.stat().st_mtime_ns)
    except OSError:
        return None
    if node is None:
        return 1
    line = node.start_mark.line
    for part in doc_path:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if str(key_node.value) == str(part):
                    line, node = key_node.start_mark.line, value_node
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line
        else:
            break
    return line + 1
