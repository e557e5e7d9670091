"""Content keys: a Merkle hash over the resolved configuration.

A mapping's digest hashes its children's digests in the order of their
canonical keys, so key order never matters and `0`/`"0"` keys are the same.
A point's key hashes the digest of `{"target": ..., "daq": ...}` with the
target identity, mode and repeat index.

`ScanHasher` gives the same keys as `point_key` on the fully resolved config
without materialising it: the base tree is hashed once, and per point only
the mappings on the paths a scan changes are hashed again. Subtrees that
depend on only some scan axes are memoised per value of those axes, so a
point usually costs one hash per chip plus three.
"""

from __future__ import annotations

import hashlib
import math
import operator
from typing import Any, Iterator, Sequence

from raffinerie.config.daqconfig import without_locations

# 2: location settings (hosts, ports, output folders) are no longer hashed
FORMAT_VERSION = 2
_POINT_TAG = b"raffinerie-point-v%d\0" % FORMAT_VERSION
_sha = hashlib.sha256


def key_bytes(key: Any) -> bytes:
    """Canonical, length-prefixed encoding of a mapping key (`0` ≡ `"0"`)."""
    raw = str(key).encode()
    return len(raw).to_bytes(4, "little") + raw


def _scalar_bytes(value: Any) -> bytes:
    if value is None:
        return b"n"
    if value is True or value is False:
        return b"b1" if value else b"b0"
    if isinstance(value, int):
        return b"i%d" % value
    if isinstance(value, float):
        return b"f" + repr(value).encode()
    if isinstance(value, str):
        return b"s" + value.encode()
    return b"x" + repr(value).encode()


def digest(value: Any) -> bytes:
    """Merkle digest of any YAML value."""
    if isinstance(value, dict):
        parts = sorted((key_bytes(k), digest(v)) for k, v in value.items())
        return _sha(b"M" + b"".join(k + d for k, d in parts)).digest()
    if isinstance(value, (list, tuple)):
        return _sha(b"L" + b"".join(digest(v) for v in value)).digest()
    return _sha(b"V" + _scalar_bytes(value)).digest()


def point_tail(identity: str, mode: str) -> bytes:
    return key_bytes(identity) + key_bytes(mode)


def finish_key(config_digest: bytes, tail: bytes, repeat: int) -> bytes:
    return _sha(_POINT_TAG + config_digest + tail + b"%d" % repeat).digest()


def point_key(target: dict, daq: dict, identity: str, mode: str, repeat: int = 0) -> bytes:
    """The key of a fully resolved point (the reference definition)."""
    config = digest(hashed_config({"target": target, "daq": daq}))
    return finish_key(config, point_tail(identity, mode), repeat)


def hashed_config(config: dict) -> dict:
    """What a key hashes of `{"target": ..., "daq": ...}`: all but where things are."""
    daq = config.get("daq")
    stripped = without_locations(daq)
    return config if stripped is daq else {**config, "daq": stripped}


# --- the fast path ---------------------------------------------------------

class _Node:
    """A mapping on the path of some scan place, or a place (leaf) itself."""

    __slots__ = ("children", "parts", "slots", "deps", "axis", "memo", "memo_key", "dep_list", "spine")

    def __init__(self):
        self.children: dict[bytes, _Node] = {}
        self.parts: list[bytes] = []      # [key, digest, key, digest, ...] sorted by key
        self.slots: dict[bytes, int] = {}  # child key -> index of its digest in parts
        self.deps: frozenset[int] = frozenset()
        self.axis = -1                    # for a leaf: the axis that sets it
        self.memo: dict | None = None
        self.memo_key: Any = None           # idx -> the memo's key (the values of its axes)
        self.dep_list: tuple[int, ...] = ()
        self.spine = False


class ScanHasher:
    """Keys of every point of a scan, in scan order (first axis slowest).

    `base` is the resolved `{"target": ..., "daq": ...}` without the scan;
    `axes` is a list of (places, values): every place (a path into `base`) of
    an axis takes that axis' value. Repeats are innermost.
    """

    def __init__(self, base: dict, axes: Sequence[tuple[Sequence[tuple], Sequence]],
                 identity: str, mode: str, repeat: int = 1,
                 explicit: Sequence[tuple[int, ...]] | None = None,
                 explicit_repeats: Sequence[int] | None = None):
        base = hashed_config(base)
        self.sizes = [len(values) for _, values in axes]
        self.total = math.prod(self.sizes)
        self.explicit, self.explicit_repeats = explicit, explicit_repeats
        self.repeat = repeat
        self.tail = point_tail(identity, mode)
        self.root = _Node()
        self.leaf_digests = [[digest(v) for v in values] for _, values in axes]
        for axis, (places, _) in enumerate(axes):
            for place in places:
                self._insert(place, axis)
        self.base_digest = digest(base) if not axes else b""
        if axes:
            self._fill(self.root, base)
            self._mark(self.root)
        self.plan = [self._updates(j) for j in range(len(axes))]

    def _insert(self, place: tuple, axis: int) -> None:
        node = self.root
        for part in place:
            node = node.children.setdefault(key_bytes(part), _Node())
        node.axis = axis

    def _fill(self, node: _Node, base: Any) -> frozenset[int]:
        """Base digests of the untouched children; deps of every node."""
        if not node.children:
            node.deps = frozenset([node.axis])
            return node.deps
        base = base if isinstance(base, dict) else {}
        entries = {key_bytes(k): v for k, v in base.items()}
        deps: set[int] = set()
        order = sorted(set(entries) | set(node.children))
        for kb in order:
            child = node.children.get(kb)
            if child is None:
                d = digest(entries[kb])
            else:
                deps |= self._fill(child, entries.get(kb))
                d = b""
            node.slots[kb] = len(node.parts) + 1
            node.parts += [kb, d]
        node.deps = frozenset(deps)
        node.dep_list = tuple(sorted(deps))
        return node.deps

    def _mark(self, node: _Node) -> None:
        """Memoise nodes whose inputs repeat; the rest form the spine."""
        combos = math.prod(self.sizes[a] for a in node.deps)
        if node is self.root or combos >= self.total:
            node.spine = True
            for child in node.children.values():
                if child.children:
                    self._mark(child)
        else:
            node.memo = {}
            # one C call per look-up, not a generator: this runs several times per point
            node.memo_key = operator.itemgetter(*node.dep_list)

    def _updates(self, j: int) -> list:
        """Post-order spine work when axes j.. changed.

        Each step is (node, updates, parent parts, slot in them); an update
        is (slot, child) for a leaf or memoised child whose axes changed.
        """
        out = []

        def walk(node: _Node, parent: _Node | None, slot: int) -> None:
            ups = []
            for kb, child in node.children.items():
                if max(child.deps) < j:
                    continue
                if child.spine:
                    walk(child, node, node.slots[kb])
                else:
                    ups.append((node.slots[kb], child))
            out.append((node, ups, parent.parts if parent else None, slot))

        walk(self.root, None, 0)
        return out

    def _subtree(self, node: _Node, idx: Sequence[int]) -> bytes:
        if not node.children:
            return self.leaf_digests[node.axis][idx[node.axis]]
        for kb, child in node.children.items():
            node.parts[node.slots[kb]] = self._subtree(child, idx)
        return _sha(b"M" + b"".join(node.parts)).digest()

    def _step(self, idx: list[int], j: int) -> bytes:
        leaf = self.leaf_digests
        d = b""
        for node, ups, parent_parts, parent_slot in self.plan[j]:
            parts = node.parts
            for slot, child in ups:
                memo = child.memo
                if memo is not None:  # inlined: the per-point hot path
                    mkey = child.memo_key(idx)
                    sub = memo.get(mkey)
                    if sub is None:
                        sub = memo[mkey] = self._subtree(child, idx)
                    parts[slot] = sub
                else:
                    parts[slot] = leaf[child.axis][idx[child.axis]]
            d = _sha(b"M" + b"".join(parts)).digest()
            if parent_parts is not None:
                parent_parts[parent_slot] = d
        return d

    def config_digests(self) -> Iterator[bytes]:
        """Digest of the resolved config of each coordinate, in scan order."""
        n = len(self.sizes)
        if n == 0:
            yield self.base_digest
            return
        if self.explicit is not None:
            prev: tuple | None = None
            for idx in self.explicit:
                j = 0 if prev is None else next((a for a in range(n) if idx[a] != prev[a]), n)
                if j < n or prev is None:
                    digest_now = self._step(list(idx), j)
                prev = idx
                yield digest_now
            return
        if self.total == 0:
            return
        sizes, idx, j = self.sizes, [0] * n, 0
        while True:
            yield self._step(idx, j)
            k = n - 1
            while k >= 0:  # odometer: the last axis runs fastest
                idx[k] += 1
                if idx[k] < sizes[k]:
                    break
                idx[k] = 0
                k -= 1
            if k < 0:
                return
            j = k

    def keys(self) -> Iterator[bytes]:
        tail, repeat = self.tail, self.repeat
        if self.explicit is not None:
            for config, r in zip(self.config_digests(), self.explicit_repeats):
                yield finish_key(config, tail, r)
            return
        for config in self.config_digests():
            for r in range(repeat):
                yield finish_key(config, tail, r)
