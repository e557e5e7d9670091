"""The nodes of a plan: their kinds, statuses and the `Node` itself.

A `NodeKind` carries what the rest of raffinerie needs to know of a kind:
the cache kind its entries are stored under (`store_kind`), and whether
a node of it has a key of its own (the points of a procedure have one per
point, kept in their `PointSet`). Both are StrEnums, so a node's JSON (`raff
plan --json`) and every comparison with the old strings are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from raffinerie.graph.reasons import Reason


class Status(StrEnum):
    """A node's status (compares equal to its text)."""

    CACHED = "cached"
    BUILD = "build"
    WAITING = "waiting"


CACHED, BUILD, WAITING = Status.CACHED, Status.BUILD, Status.WAITING


class NodeKind(StrEnum):
    """What a node makes: the measurements of a daq procedure, its dataset, or an analysis."""

    POINTS = "points"
    DATASET = "dataset"
    ANALYSIS = "analysis"

    @property
    def store_kind(self) -> str:
        """The cache kind of what a node of this kind makes (`<cache>/<store_kind>/`)."""
        return _STORE_KINDS[self]

    @property
    def keyed(self) -> bool:
        """Whether a node of this kind is one cache entry, under the node's own key."""
        return self is not NodeKind.POINTS


_STORE_KINDS = {NodeKind.POINTS: "measurements", NodeKind.DATASET: "datasets", NodeKind.ANALYSIS: "analyses"}
KEYED_KINDS = tuple(k for k in NodeKind if k.keyed)   # dataset, analysis: what --force builds again


@dataclass
class Node:
    id: str
    kind: NodeKind
    name: str
    key: str | None
    status: Status
    why: Reason
    depends_on: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        """The reason as text (for people, and the JSON plan's `reason`)."""
        return str(self.why)

    def as_dict(self) -> dict:
        return {"id": self.id, "kind": str(self.kind), "name": self.name, "key": self.key,
                "status": str(self.status), "reason": self.reason, "why": self.why.as_dict(),
                "depends_on": self.depends_on}


def node_id(kind: NodeKind, name: str) -> str:
    """`points:NAME`, `dataset:NAME`, `analysis:NAME`."""
    return f"{kind}:{name}"


def downstream(nodes: dict[str, Node], start: str) -> set[str]:
    """The ids of the nodes that depend on node `start`, directly or not (`nodes` in dependency
    order, as a plan keeps them)."""
    out: set[str] = set()
    for node in nodes.values():
        if any(d == start or d in out for d in node.depends_on):
            out.add(node.id)
    return out


def is_calibration(nodes: dict[str, Node], node: Node) -> bool:
    """Whether `node` calibrates a daq procedure (its points depend on it): its output changes keys."""
    return any(n.kind is NodeKind.POINTS and node.id in n.depends_on for n in nodes.values())
