"""Where the cache is and what it holds, read without heavy imports.

Layout: `<root>/{measurements,datasets,analyses}/<key[:2]>/<key>/`, with
`tmp/` for entries being written and `locks/` for per-key locks. An entry
directory exists only once it is complete (it is renamed into place), so
listing the directories is listing what is cached.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

from raffinerie.errors import RaffError
from raffinerie.inputs import record
from raffinerie.store.manifest import HEX as _HEX
from raffinerie.store.manifest import MANIFEST, checked_file
from raffinerie.store.records import checked_record, record_rel

KINDS = ("measurements", "datasets", "analyses")
CACHE_DIRNAME = ".raffinerie-cache"


def cache_root(main_config: Path, override: str | Path | None = None) -> Path:
    """`--cache`, else `$RAFF_CACHE`, else `.raffinerie-cache/` beside the main config."""
    if override:
        return Path(override)
    env = os.environ.get("RAFF_CACHE")
    if env:
        return Path(env)
    return Path(main_config).resolve().parent / CACHE_DIRNAME


def entry_dir(root: Path, kind: str, key: str) -> Path:
    return root / kind / key[:2] / key


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")


def entry_rel(kind: str, key: str) -> str:
    """An entry's folder relative to a cache's root (a local or a remote one); the key checked."""
    if len(key) != 64 or not _HEX.issuperset(key):
        raise RaffError(f"not a cache key: {key!r}")
    return f"{kind}/{key[:2]}/{key}"


def iter_entries(root: Path, kind: str) -> Iterator[tuple[str, str]]:
    """(key, path) of every committed entry of `kind`, listed with scandir."""
    try:
        shards = sorted(os.scandir(Path(root) / kind), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for shard in shards:
        if not shard.is_dir() or len(shard.name) != 2:
            continue
        for entry in sorted(os.scandir(shard.path), key=lambda e: e.name):
            if len(entry.name) == 64 and _HEX.issuperset(entry.name) and entry.is_dir():
                yield entry.name, entry.path


class CacheIndex:
    """What a cache directory holds, listed once per kind."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._keys: dict[str, set[bytes]] = {}
        self.damaged: dict[str, str] = {}  # key -> problem of the entries quarantined while planning
        self._store = None   # the Store that reads a search's probes (`summary`), made when first needed

    def keys(self, kind: str) -> set[bytes]:
        if kind not in self._keys:
            self._keys[kind] = self._list(kind)
        return self._keys[kind]

    def has(self, kind: str, key: bytes) -> bool:
        return key in self.keys(kind)

    def _list(self, kind: str) -> set[bytes]:
        out: set[bytes] = set()
        for name, _ in iter_entries(self.root, kind):
            try:
                out.add(bytes.fromhex(name))
            except ValueError:
                continue
        return out

    def content(self, kind: str, keys) -> bytes | None:
        """One digest of the manifests of these entries (what they hold), None if one is unreadable.

        A dataset's key hashes this, so a measurement that was damaged and
        acquired again gives its dataset a new key.
        """
        h = hashlib.sha256()
        for key in keys:
            try:
                with open(entry_dir(self.root, kind, key.hex()) / MANIFEST, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
            except OSError:
                return None
        return h.digest()

    def calibration(self, key: bytes) -> dict | None:
        """The calibration overlay written by the analysis with this key.

        It changes every key and setting of the scans laid over it, so it is
        checked against the entry's manifest (size and SHA-256; it is small)
        before it is used. A damaged one is never used: the entry is moved to
        `quarantine/` and leaves this listing, so the plan makes it again
        (`damaged` holds what was found, for the plan to say).
        """
        folder = entry_dir(self.root, "analyses", key.hex())
        if not (folder / "calibration.yaml").is_file():
            return None
        from raffinerie.config.yamlio import parse_yaml

        record(folder / "calibration.yaml")  # an input of the no-op check, as load_yaml's files are
        found = checked_file(folder, "calibration.yaml")
        if isinstance(found, str):
            from raffinerie.store.store import Store  # only for a damaged entry: Store loads numpy

            Store(self.root).quarantine("analyses", key.hex(), found)
            self.keys("analyses").discard(key)
            self.damaged[key.hex()] = found
            return None
        try:  # the bytes that were checked, not the file read again
            text = found.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RaffError(f"not a UTF-8 text file ({exc.reason} at byte {exc.start})",
                            file=folder / "calibration.yaml") from None
        doc = parse_yaml(text, folder / "calibration.yaml")
        return doc if isinstance(doc, dict) else None

    def summary(self, key: bytes) -> dict | None:
        """The summary table of a measurement (a search's probe, replayed while planning), its
        CRCs checked; None when it is damaged: quarantined and out of this listing, so the
        plan acquires it again (`damaged` says what was found)."""
        from raffinerie.store.entries import DamagedEntry
        from raffinerie.store.store import Store  # a search's plan reads tables: numpy is needed

        if self._store is None:
            self._store = Store(self.root)
        try:
            return self._store.read_summary(key, check=True)
        except DamagedEntry as exc:
            self.keys("measurements").discard(key)
            self.damaged[key.hex()] = exc.problem
            return None

    def last_build(self, kind: str, name: str) -> dict | None:
        """The record of the last build of procedure `name` (its key and inputs)."""
        path = self.root / record_rel(kind, name)
        if kind == "takes":
            record(path)  # a new take (--force-acquire) changes the plan: an input of the no-op check
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return checked_record(doc, path)

