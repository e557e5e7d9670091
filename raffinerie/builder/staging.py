"""The library of a `raff import` and MAIN's entry for it, written so that a failure or a kill
changes nothing.

The new library is written under a temporary name, with a copy of MAIN that
includes it (`Staged`); loading that copy checks the library with everything
MAIN has. `publish()` renames the library into place and edits MAIN, at the
places the YAML parser gives (comments and layout stay), checked to load as
the same document with one more library, written in one rename under a lock.
Temporaries a killed import left are removed by the next.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import yaml

from raffinerie.config.library import load_library
from raffinerie.config.yamlio import load_yaml, read_text, real_path
from raffinerie.errors import RaffError

_SafeLoader = yaml.SafeLoader  # the pure-Python one: its marks index characters of the text, as edits need

class Staged:
    """The new library under a temporary name, and a copy of MAIN that includes it.

    The copy lies beside MAIN (relative paths resolve alike), so loading it
    checks the new library together with everything MAIN has, and gives the
    points' keys, while MAIN itself and the library it may already include
    are untouched. `publish()` then renames the library into place and edits
    MAIN, under a lock on MAIN.
    """

    def __init__(self, main: Path, library: Path, entry: str, text: str, side_files: dict[Path, str]):
        self.main, self.library, self.entry, self.side_files = main, library, entry, side_files
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.temp_library = library.with_name(f".{library.name}.{tag}.tmp")
        self.temp_main = main.with_name(f".{main.name}.{tag}.import.yaml")
        library.parent.mkdir(parents=True, exist_ok=True)
        for path in (main, real_path(main), library):  # what a killed import left (kill -9 runs no finally)
            _remove_dead_temporaries(path)
        for path, content in side_files.items():
            _ensure(path, content)
        _write_atomically(self.temp_library, text)
        main_text = _main_text(main)
        temp_entry = f"./imported/{self.temp_library.name}"
        at = _included_at(main, main_text, library)
        _write_atomically(self.temp_main, _with_library(main_text, temp_entry, main, replace=at))

    def load(self):
        lib = load_library(self.temp_main)
        if lib.diagnostics:
            problem = lib.diagnostics[0].format().replace(str(self.temp_main), str(self.main)) \
                .replace(str(self.temp_library), str(self.library))
            raise RaffError(f"the imported library does not load with {self.main.name}, which was left as "
                            f"it was: {problem}", file=self.library)
        return lib

    def publish(self) -> None:
        real = real_path(self.main)
        with _locked(real):
            for path, content in self.side_files.items():  # a concurrent import may have cleaned them up
                _ensure(path, content)
            os.replace(self.temp_library, self.library)
            _remove_stale(self.library.parent / self.library.stem, set(self.side_files))
            text = _main_text(real)
            if _included_at(self.main, text, self.library) is None:
                try:
                    new = _with_library(text, self.entry, self.main)
                except RaffError as exc:
                    raise RaffError(f"the runs are imported and the library written to {self.library}, but "
                                    f"{exc.diagnostic.message}", file=self.main) from None
                _write_atomically(real, new, like=real)

    def discard(self) -> None:
        for path in (self.temp_main, self.temp_library):
            try:
                path.unlink()
            except FileNotFoundError:
                pass


@contextmanager
def staged(main: Path, library: Path, entry: str, text: str, side_files: dict[Path, str]):
    staged = None
    try:
        staged = Staged(main, library, entry, text, side_files)
        yield staged
    finally:
        if staged is not None:
            staged.discard()
        else:  # staging itself failed: leave no temporary behind
            for path in main.parent.glob(f".{main.name}.{os.getpid()}-*.import.yaml"):
                path.unlink(missing_ok=True)
            for path in library.parent.glob(f".{library.name}.{os.getpid()}-*.tmp"):
                path.unlink(missing_ok=True)


def _main_text(main: Path) -> str:
    """MAIN's text, once its document is known to be within the YAML bounds (depth, aliases,
    duplicate keys: `load_yaml`), so that parsing and comparing it again here is bounded too."""
    real = real_path(main)
    load_yaml(real, "main config")
    return read_text(real, "main config")


def plan_include(main: Path, library: Path, entry: str) -> None:
    """Refuse now, before anything is written, a MAIN that cannot take the library."""
    text = _main_text(main)
    if _included_at(main, text, library) is None:
        _with_library(text, entry, main)


def _included_at(main: Path, text: str, library: Path) -> int | None:
    """Index of the `libraries:` item of MAIN that is `library`, if any."""
    try:
        doc = yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError:
        return None
    libraries = doc.get("libraries") if isinstance(doc, dict) else None
    target = real_path(library)
    for i, item in enumerate(libraries if isinstance(libraries, list) else []):
        if isinstance(item, str) and item and real_path(main.parent / item) == target:
            return i
    return None


def _with_library(text: str, entry: str, main: Path, replace: int | None = None) -> str:
    """MAIN's text with `entry` appended to `libraries:` (or in place of item `replace`).

    The text is edited where the YAML parser says the list and its items
    are, so comments and layout stay; the result must load as MAIN's
    document with only that change, or the edit is refused (add it by hand).
    """
    try:
        root = yaml.compose(text, Loader=_SafeLoader)
        doc = yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError:
        root = doc = None
        edited = None
    else:
        edited = _edit_libraries(text, root, entry, replace)
    expected = dict(doc) if isinstance(doc, dict) else {}
    libraries = list(expected.get("libraries") or [])
    if replace is None:
        libraries.append(entry)
    else:
        libraries[replace] = entry
    expected["libraries"] = libraries
    if edited is not None and (doc is None or isinstance(doc, dict)):
        try:
            if yaml.load(edited, Loader=_SafeLoader) == expected:
                return edited
        except yaml.YAMLError:
            pass
    raise RaffError(f"cannot add {entry} to `libraries:` of this file without changing anything else "
                    "(its layout does not allow it); add it by hand, then import again", file=main)


def _edit_libraries(text: str, root, entry: str, replace: int | None) -> str | None:
    """The edited text, or None where no place for the entry is known."""
    if root is None:  # an empty MAIN
        return _append_line(text, f"libraries:\n  - {entry}\n")
    if not isinstance(root, yaml.MappingNode):
        return None
    value = next((v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "libraries"), None)
    if value is None:
        if root.flow_style:
            return None
        indent = " " * root.start_mark.column
        return _append_line(text, f"{indent}libraries:\n{indent}  - {entry}\n")
    if isinstance(value, yaml.ScalarNode):
        if value.tag != "tag:yaml.org,2002:null" or value.style is not None or replace is not None:
            return None
        start, end = value.start_mark.index, value.end_mark.index
        return text[:start] + (" " if start == end else "") + f"[{entry}]" + text[end:]
    if not isinstance(value, yaml.SequenceNode):
        return None
    items = value.value
    if replace is not None:
        item = items[replace]
        if not isinstance(item, yaml.ScalarNode) or item.start_mark.line != item.end_mark.line:
            return None
        return text[:item.start_mark.index] + entry + text[item.end_mark.index:]
    if value.flow_style:
        if items:
            at = items[-1].end_mark.index
            return text[:at] + f", {entry}" + text[at:]
        at = value.end_mark.index - 1
        return text[:at] + entry + text[at:] if text[at:at + 1] == "]" else None
    first, last = items[0].start_mark, items[-1].end_mark
    prefix = text[text.rfind("\n", 0, first.index) + 1:first.index]
    if not re.fullmatch(r" *- +", prefix):
        return None
    if last.column == 0 and last.index > 0:
        at = last.index  # the item ends at a line break already (a block scalar)
    else:
        newline = text.find("\n", last.index)
        if newline < 0:
            return text + "\n" + prefix + entry + "\n"
        at = newline + 1
    return text[:at] + prefix + entry + "\n" + text[at:]


def _append_line(text: str, lines: str) -> str:
    return text + ("\n" if text and not text.endswith("\n") else "") + lines


@contextmanager
def _locked(path: Path, wait: float = 60.0):
    """An exclusive lock on the file `path` (flock), for read-modify-write of MAIN by several imports.

    MAIN is replaced by a rename, so a lock taken on a file that is no
    longer MAIN is dropped and taken again on the new one. Bounded: after
    `wait` seconds (a minute; an edit takes milliseconds) it gives up.
    """
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise RaffError(f"another process has held a lock on this file for {wait:.0f} s; "
                                        "nothing was changed", file=path) from None
                    time.sleep(0.01)
            held, now = os.fstat(fd), os.stat(path)
            if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                yield
                return
        finally:
            os.close(fd)


def _write_atomically(path: Path, text: str, like: Path | None = None) -> None:
    """Write `path` in one step: a reader (or a crash) sees the old file or the new one.

    With `like`, the new file keeps that file's permission bits.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if like is not None:
            os.chmod(tmp, stat.S_IMODE(os.stat(like).st_mode))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.(?:part|tmp|import\.yaml)")


def _remove_dead_temporaries(path: Path) -> None:
    """Temporary copies of `path` (this module's names: `.NAME.PID-XXXXXXXX.*`) whose process is gone."""
    for candidate in path.parent.glob(f".{path.name}.*"):
        m = _TEMPORARY.fullmatch(candidate.name)
        if m and m["name"] == path.name and not _alive(int(m["pid"])):
            candidate.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or a name not made here): leave its file alone
    return True


def _ensure(path: Path, text: str) -> None:
    """A content-named file: written once (atomically), then left as it is."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, text)


def _remove_stale(folder: Path, keep: set[Path]) -> None:
    """Side files of earlier imports of this procedure that the library no longer reads."""
    for path in list(folder.glob("target-*.yaml")) + list(folder.glob("daq-*.yaml")):
        if path not in keep:
            path.unlink(missing_ok=True)
