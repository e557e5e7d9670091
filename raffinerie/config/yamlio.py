"""Reading YAML files, with places (line numbers) for error messages.

Documents are loaded with libyaml's C parser when it is there. Line numbers
are found only when a message needs one: the file is composed into nodes
again, once, and the node at a document path is looked up.

Configuration files come from users and from other sites, so reading one is
bounded: only regular files, at most MAX_FILE_BYTES, nesting at most
MAX_DEPTH deep, and aliases that would expand to more than MAX_NODES values
are refused (an "alias bomb" is a few lines that expand to billions). A key
given twice in one mapping is an error naming both lines: YAML would keep
the last one without a word.
"""

from __future__ import annotations

import os
import re
import stat
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from raffinerie import memo
from raffinerie.errors import RaffError, format_where, nearest
from raffinerie.inputs import record

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 200
MAX_NODES = 10_000_000
_MEMO_STEP = "config:" + memo.code_of(__file__)  # at import: the code that runs is the code named


class DuplicateKey(yaml.MarkedYAMLError):
    pass


class MissingFile(RaffError):
    """A file that is not there; `hint` names files of its folder with a close name."""

    def __init__(self, text: str, path: Path):
        self.text, self.hint = text, _close_files(path)
        super().__init__(text + self.hint, file=path)


def _close_files(path: Path) -> str:
    """` (did you mean 'x'?)` for a file beside `path` whose name is close to its own."""
    try:
        siblings = [p.name for p in path.parent.iterdir() if p.is_file()]
    except FileNotFoundError:
        return f" (there is no folder {path.parent})"
    except (OSError, ValueError):
        return ""
    close = nearest(path.name, siblings, n=3)
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"'{name}'" for name in close) + "?)"


class _Loader(_Base):
    """The safe loader, refusing a key that a mapping already has."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.get(key)
                    seen[key] = first or key_node.start_mark
                except TypeError:
                    continue
                if first is not None:
                    raise DuplicateKey(None, None, f"key {key!r} given twice (line {first.line + 1}, "
                                                   f"column {first.column + 1} and line "
                                                   f"{key_node.start_mark.line + 1}, column "
                                                   f"{key_node.start_mark.column + 1}); YAML would keep "
                                                   "the last one", key_node.start_mark)
        return super().construct_mapping(node, deep)


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)


def real_path(path: Path) -> Path:
    """`path` with links resolved; a link loop stays as it is (reading it then says so)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError, ValueError):  # a loop (RuntimeError before Python 3.13); NUL
        return path.absolute()


def read_text(path: Path, what: str = "file") -> str:
    record(path)  # an input of this command, for the no-op check
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(info.st_mode):
            raise RaffError(f"{what} is not a regular file (a device, FIFO or socket)", file=path)
        if info.st_size > MAX_FILE_BYTES:
            raise RaffError(f"{what} is {info.st_size / 2**20:.0f} MiB; configuration files are "
                            f"limited to {MAX_FILE_BYTES // 2**20} MiB", file=path)
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingFile(f"{what} not found", path) from None
    except IsADirectoryError:
        raise RaffError(f"{what} is a directory, not a file", file=path) from None
    except UnicodeDecodeError as exc:
        raise RaffError(f"not a UTF-8 text file ({exc.reason} at byte {exc.start})", file=path) from None
    except OSError as exc:
        raise RaffError(f"cannot read {what}: {exc.strerror or exc}", file=path) from None
    except ValueError:  # os.stat refuses a path with NUL in it: no file has such a name
        raise RaffError(f"{what} not found (its path holds a NUL character)",
                        file=str(path).replace("\0", "\\0")) from None


def load_yaml(path: Path, what: str = "file") -> Any:
    """The document in `path`; a syntax error names file:line:column."""
    return parse_yaml(read_text(path, what), path)


def parse_yaml(text: str, path: Path | None = None) -> Any:
    """The document in `text` (read from `path`, which errors name), with the bounds of a file."""
    if len(text) > MAX_FILE_BYTES:  # text made otherwise than read from a file (a template's)
        raise RaffError(f"YAML of {len(text) / 2**20:.0f} MiB; configuration is limited to "
                        f"{MAX_FILE_BYTES // 2**20} MiB", file=path)
    return memo.parsed(_MEMO_STEP, text, lambda: _parse(text, path))


def _parse(text: str, path: Path | None) -> Any:
    try:
        doc = yaml.load(text, Loader=_Loader)
    except RecursionError:
        raise RaffError(f"YAML nested too deeply (limit {MAX_DEPTH} levels)", file=path) from None
    except DuplicateKey as exc:
        raise RaffError(exc.problem, file=path, line=exc.problem_mark.line + 1) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if "nesting depth" in problem:  # PyYAML >= 6.0.4 stops deep documents in its parser
            where = f" at column {mark.column + 1}" if mark is not None else ""
            raise RaffError(f"YAML nested too deeply{where} (beyond the YAML parser's limit)", file=path,
                            line=mark.line + 1 if mark is not None else None) from None
        if mark is None:
            raise RaffError(f"YAML syntax error: {problem}", file=path) from None
        raise RaffError(f"YAML syntax error at column {mark.column + 1}: {problem}{_begun(exc, mark)}",
                        file=path, line=mark.line + 1) from None
    except yaml.YAMLError as exc:
        raise RaffError(f"YAML error: {exc}", file=path) from None
    _check_size(doc, path)
    if _NUL_ESCAPE.search(text):  # a literal NUL is refused by the parser; an escaped one is not
        place = _nul_place(doc)
        if place is not None:
            raise RaffError("a string holds a NUL character (\\0), which no path, name or setting can",
                            file=path, line=line_of(path, place) if path else None,
                            where=format_where(place))
    return doc


# the escapes of a double-quoted YAML string that give NUL: \0, \x00, \u0000, \U00000000
_NUL_ESCAPE = re.compile(r"\\(?:0|x00|u0000|U00000000)")


def _nul_place(doc: Any) -> tuple | None:
    """The document path of the first key or string holding a NUL character, or None."""
    seen: set[int] = set()
    stack: list[tuple[Any, tuple]] = [(doc, ())]
    while stack:
        value, place = stack.pop()
        if isinstance(value, str):
            if "\0" in value:
                return place
        elif isinstance(value, (dict, list)) and id(value) not in seen:
            seen.add(id(value))  # aliases: each shared node once
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                if isinstance(key, str) and "\0" in key:  # a list's keys are its indices
                    return place + (key,)
                stack.append((child, place + (key,)))
    return None


def _check_size(doc: Any, path: Path) -> None:
    """Refuse documents nested deeper than MAX_DEPTH or expanding to more than MAX_NODES values.

    Aliases share one object, so sizes are memoised per object: an alias
    bomb costs as many steps as it has distinct nodes, not as it expands to.
    """
    sizes: dict[int, int] = {}
    stack = [(doc, 0, False)]
    while stack:
        value, depth, done = stack.pop()
        if not isinstance(value, (dict, list)) or (id(value) in sizes and not done):
            continue
        if depth > MAX_DEPTH:
            raise RaffError(f"YAML nested too deeply (more than {MAX_DEPTH} levels)", file=path)
        children = list(value.values()) if isinstance(value, dict) else value
        if done:
            total = 1 + sum(sizes.get(id(c), 1) for c in children)
            if total > MAX_NODES:
                raise RaffError(f"YAML expands to more than {MAX_NODES:,} values (aliases repeated "
                                "within aliases?)", file=path)
            sizes[id(value)] = total
            continue
        sizes[id(value)] = 0  # in progress: a self-referencing alias counts once
        stack.append((value, depth, True))
        stack.extend((c, depth + 1, False) for c in children if isinstance(c, (dict, list)))


EVENT_LOOKUPS = 3
_LOOKUPS: dict[tuple[Path, int], int] = {}


class _ThroughAlias(Exception):
    """The path goes through an alias, which composing follows to its anchor (or counts
    from a sequence's end): left to composing."""


def _line_from_events(path: Path, doc_path: tuple) -> int:
    """`line_of` from the event stream (0-based marks), stopping at the place."""
    with open(path, encoding="utf-8") as stream:
        events = yaml.parse(stream, Loader=_Base)
        next(events)  # stream start
        event = next(events)
        if isinstance(event, yaml.StreamEndEvent):
            return 1  # an empty file
        node = next(events)  # the root, after the document start
        line = node.start_mark.line
        for part in doc_path:
            if isinstance(node, yaml.AliasEvent):
                raise _ThroughAlias
            found = _child(events, node, part)
            if found is None:
                break
            line, node = found
        return line + 1


def _child(events, node, part) -> tuple[int, object] | None:
    """(line, start event) of `part` in the mapping or sequence that `node` starts; None if absent."""
    if isinstance(node, yaml.MappingStartEvent):
        while not isinstance(key := next(events), yaml.MappingEndEvent):
            if isinstance(key, yaml.ScalarEvent) and str(key.value) == str(part):
                return key.start_mark.line, next(events)
            _skip(events, key)
            _skip(events, next(events))
    elif isinstance(node, yaml.SequenceStartEvent) and isinstance(part, int):
        if part < 0:
            raise _ThroughAlias  # composing counts from the end
        index = 0
        while not isinstance(item := next(events), yaml.SequenceEndEvent):
            if index == part:
                if isinstance(item, yaml.AliasEvent):
                    raise _ThroughAlias  # composing gives its anchor's line
                return item.start_mark.line, item
            _skip(events, item)
            index += 1
    return None


def _skip(events, event) -> None:
    """Consume the rest of the node that `event` starts."""
    depth = int(isinstance(event, yaml.CollectionStartEvent))
    while depth:
        event = next(events)
        depth += isinstance(event, yaml.CollectionStartEvent) - isinstance(event, yaml.CollectionEndEvent)


@lru_cache(maxsize=64)
def _compose(path: Path, mtime_ns: int):
    try:
        return yaml.compose(path.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def line_of(path: Path, doc_path: tuple = ()) -> int | None:
    """1-based line of the deepest node of `doc_path` that exists in the file.

    For a path that ends at a mapping key, the line of the key itself. The first
    few look-ups in a file walk libyaml's event stream up to the place and stop
    there (a 3.7 MB library's first procedure: milliseconds; its whole stream:
    about 0.6 s); composing the file into nodes, as the later ones use, costs
    3 s for it, almost all in resolving every scalar's tag.
    """
    try:
        stamp = path.stat().st_mtime_ns
    except (OSError, ValueError):
        return None
    _LOOKUPS[path, stamp] = looked = _LOOKUPS.get((path, stamp), 0) + 1
    if looked <= EVENT_LOOKUPS:
        try:
            return _line_from_events(path, doc_path)
        except _ThroughAlias:
            pass
        except (OSError, UnicodeDecodeError, yaml.YAMLError, StopIteration):
            return 1  # as composing does: a file that does not parse has its problems on line 1
    node = _compose(path, stamp)
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


def _begun(exc: yaml.MarkedYAMLError, mark) -> str:
    """Where the construct that is left open began: an unclosed `{` is found lines later, at
    the next line that cannot belong to it, so the line of the `{` itself is what to look at."""
    begun = exc.context_mark
    if not exc.context or begun is None or begun.line == mark.line:
        return ""
    return f" ({exc.context.removeprefix('while ')} begun at line {begun.line + 1}, column {begun.column + 1})"
