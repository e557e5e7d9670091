"""Readiness by countdown: each node waits on its inputs that are not yet cached, and a finished node
releases the nodes waiting on it (as Snakemake's DAG does), so no plan is made again to find
what is ready.

A node is ready when it is to build (`BUILD`) and waits on nothing. A node whose output changes
keys downstream (a calibration; acquired points, whose manifests key their dataset) has that
part planned again (`raffinerie.graph.plan.replan`), and the countdown starts again on the new
plan with `reset`.
"""

from __future__ import annotations

from raffinerie.graph.nodes import BUILD, CACHED, Node


class Countdown:
    def __init__(self, nodes: dict[str, Node]):
        self.reset(nodes)

    def reset(self, nodes: dict[str, Node]) -> None:
        """Count again on `nodes` (a plan's, in dependency order)."""
        self.nodes = nodes
        self.order = {node_id: i for i, node_id in enumerate(nodes)}
        self.waiting = {n.id: sum(nodes[d].status != CACHED for d in n.depends_on) for n in nodes.values()}
        self.users: dict[str, list[str]] = {node_id: [] for node_id in nodes}
        for node in nodes.values():
            for dep in node.depends_on:
                self.users[dep].append(node.id)
        self._ready = {n.id for n in nodes.values() if n.status == BUILD and not self.waiting[n.id]}

    def ready(self) -> list[Node]:
        """The nodes to build that wait on nothing, in plan order."""
        return [self.nodes[i] for i in sorted(self._ready, key=self.order.__getitem__)]

    def release(self, node: Node) -> None:
        """`node` is built (cached now): the nodes waiting on it wait on one input less."""
        node.status = CACHED
        self._ready.discard(node.id)
        for user in self.users[node.id]:
            self.waiting[user] -= 1
            if not self.waiting[user] and self.nodes[user].status == BUILD:
                self._ready.add(user)
