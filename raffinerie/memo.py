"""Work on configuration done once and kept by content between raff processes: large YAML
parsed and written, analysis code digested, documents found valid (a leaf: imports
nothing of raffinerie).

A hexaboard's power-on default is 170 kB of YAML. Every `raff` command that
reads the library parses it (0.14 s), a build writes it again for the slow
control (0.12 s) and the embedded emulator parses what it receives (0.14 s):
about a fifth of a one-point build's CPU. An analysis's code digest comes
from its syntax tree (analysis/code.py, 10-50 ms a module), and a schema
check imports jsonschema (0.1 s) and takes 0.5 s for a 3.7 MB library
(config/schema.py). Here the result of each such step is kept in a file
named by the SHA-256 of its whole input and of the step (with the digest of
the step's own source file), so unchanged input costs a hash and a
`marshal` read instead.

The memo can only ever be bypassed, never serve something else: its key
covers the whole input, the step, the YAML library's and Python's versions
and this format's; each file carries a BLAKE2 digest of its content, checked
on every read (a damaged or truncated file is removed and the step is done
again); it is written to a temporary name and renamed in one step. Documents
marshal cannot hold (YAML timestamps) are simply not kept, and errors are
never kept: a file that fails to parse or to validate is checked again, and
reported, every time.

Anyone who can write to the memo's folder can make it answer what they like,
as with any cache of parsed files (Python's own `__pycache__`): it must be
writable by its user alone, as `~/.cache` is.

Where: `$RAFF_MEMO_DIR`, else `$XDG_CACHE_HOME/raffinerie/memo`, else
`~/.cache/raffinerie/memo`; about MAX_FILES files at most, the least recently
used removed first. `RAFF_MEMO_DIR=off` turns it off; a folder that cannot be
written only costs the time it would have saved.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import random
import re
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

FORMAT = "raff-memo-1"
MIN_CHARS = 16_384       # smaller documents parse faster than a file is found and read
MAX_FILES = 512          # ~70 MB at most: the oldest used files go beyond this (a full
KEEP_FILES = 384         # configuration of each board and calibration a stand has used lately)
TRIM_CHANCE = 1 / 16     # a write looks at the folder's size this often: listing it costs a few ms
_DIGEST = 32             # BLAKE2b-256 of the content, in front of it
_KEY = re.compile(r"[0-9a-f]{64}")   # a memo file's name; trimming touches nothing else
_HEX2 = re.compile(r"[0-9a-f]{2}")
_TMP_PREFIX = ".tmp-raff-memo-"
_RANDOM = random.Random()  # not the global one, which user code may have seeded
_MISSING = object()


def _folder() -> Path | None:
    given = os.environ.get("RAFF_MEMO_DIR")
    if given is not None:
        return None if given.strip().lower() in ("", "off", "0", "no") else Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "raffinerie" / "memo"


@lru_cache(maxsize=None)
def code_of(module_file: str) -> str:
    """A digest of the source file that does a step, for its name: a step whose code
    changed (a new check in the YAML loader, say) is never answered by the old one's memo."""
    try:
        return hashlib.sha256(Path(module_file).read_bytes()).hexdigest()[:16]
    except OSError:
        return f"unreadable-{os.getpid()}-{id(module_file)}"  # no memo shared with anyone


def _key(step: str, data: bytes) -> str:
    import yaml  # the YAML library's version changes what a step gives

    head = f"{FORMAT}\0{step}\0{yaml.__version__}\0{yaml.__with_libyaml__}\0{sys.version_info[:2]}\0".encode()
    return hashlib.sha256(head + data).hexdigest()


def _read(key: str) -> Any:
    folder = _folder()
    if folder is None:
        return _MISSING
    path = folder / key[:2] / key
    try:
        blob = path.read_bytes()
    except OSError:
        return _MISSING
    body = blob[_DIGEST:]
    if len(blob) <= _DIGEST or hashlib.blake2b(body, digest_size=_DIGEST).digest() != blob[:_DIGEST]:
        _forget(path)  # damaged or cut short: done again, and kept again below
        return _MISSING
    try:
        value = marshal.loads(body)
    except (EOFError, ValueError, TypeError):
        _forget(path)
        return _MISSING
    try:
        os.utime(path)  # used: the last to go when the folder is trimmed
    except OSError:
        pass
    return value


def _write(key: str, value: Any) -> None:
    folder = _folder()
    if folder is None:
        return
    try:
        body = marshal.dumps(value)
    except ValueError:  # a type marshal cannot hold (a YAML timestamp): not kept
        return
    blob = hashlib.blake2b(body, digest_size=_DIGEST).digest() + body
    target = folder / key[:2] / key
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=_TMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, target)
        except BaseException:
            _forget(Path(tmp))
            raise
        if _RANDOM.random() < TRIM_CHANCE:
            _trim(folder)
    except OSError:
        pass  # a read-only or full cache folder: the memo is only a saving


def _trim(folder: Path) -> None:
    """Beyond MAX_FILES, remove the least recently used files down to KEEP_FILES (after a write)."""
    files = []
    for path in folder.glob("??/*"):
        if not _HEX2.fullmatch(path.parent.name):
            continue  # not a folder of the memo's: RAFF_MEMO_DIR may be a shared one
        if _KEY.fullmatch(path.name) and path.name[:2] == path.parent.name:
            files.append(path)
        elif path.name.startswith(_TMP_PREFIX):
            try:  # a write whose process was killed before its rename
                if path.stat().st_mtime < time.time() - 3600:
                    _forget(path)
            except OSError:
                pass
    if len(files) <= MAX_FILES:
        return
    used = []
    for path in files:
        try:
            used.append((path.stat().st_mtime, path))
        except OSError:
            continue  # removed by another process meanwhile
    for _, path in sorted(used)[:len(used) - KEEP_FILES]:
        _forget(path)


def _forget(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def parsed(step: str, text: str | bytes, parse: Callable[[], Any], min_chars: int = MIN_CHARS) -> Any:
    """`parse()`, the document of `text`; from the memo when `step` has parsed this text before.

    `step` names the parser (its loader and checks). The document returned is
    always a fresh object: callers may change it. `min_chars`: below it, `text`
    is parsed each time (a YAML parser beats the memo file's read there).
    """
    if len(text) < min_chars:
        return parse()
    key = _key("parse:" + step, text.encode() if isinstance(text, str) else text)
    doc = _read(key)
    if doc is _MISSING:
        doc = parse()
        _write(key, doc)
    return doc


def dumped(step: str, doc: Any, dump: Callable[[], str]) -> str:
    """`dump()`, the text of `doc`; from the memo when `step` has written an equal document before.

    Documents are compared by `_exact`.
    """
    shown = _exact(doc)
    if shown is None or len(shown) < MIN_CHARS:
        return dump()
    key = _key("dump:" + step, shown)
    text = _read(key)
    if not isinstance(text, str):
        text = dump()
        _write(key, text)
    return text


def _exact(doc: Any) -> bytes | None:
    """`repr(doc)`, when it tells this document from every other: it tells 1 from 1.0, True
    and "1", and keeps the order of mapping keys, but not types of other libraries (numpy
    scalars print as plain numbers) nor shared objects (a dumper writes anchors for them).
    None for such a document, and for one repr refuses (an int of more than 4,300 digits)."""
    seen: set[int] = set()
    stack = [doc]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind not in (dict, list) or id(value) in seen:
            return None
        seen.add(id(value))
        if kind is list:
            stack.extend(value)
        elif any(type(k) not in _SCALARS for k in value):
            return None
        else:
            stack.extend(value.values())
    try:
        return repr(doc).encode()
    except ValueError:
        return None


_SCALARS = {str, int, float, bool, type(None)}


def document_key(step: str, doc: Any) -> str | None:
    """The key of what `step` (a schema check) finds of a document loaded from YAML, by its
    `repr` (60 ms for a 3.7 MB library); None where repr refuses (a huge int). Such documents
    hold no foreign types, and sharing does not change what a schema says of values, so
    `_exact`'s walk (0.3 s there) is not needed. Any size is worth it: a schema check
    imports jsonschema (0.1 s), unless every document is known."""
    try:
        return _key("document:" + step, repr(doc).encode())
    except ValueError:
        return None


def known_valid(key: str | None) -> bool:
    """Whether the document of `key` (from `document_key`) was found valid before."""
    return key is not None and _read(key) is True


def remember_valid(key: str | None) -> None:
    if key is not None:
        _write(key, True)
