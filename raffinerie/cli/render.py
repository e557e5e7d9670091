"""Plans as text for people and as JSON for CI.

JSON plan (stable; `raff plan NAME --json`):

    {"procedure": NAME, "kind": "daq" | "analysis" | "workflow",
     "identity": TARGET_IDENTITY, "todo": bool,
     "summary": {"total": N, "cached": C, "to_acquire": M, "waiting": W, "nodes_to_build": B},
     "points": [{"procedure": P, "index": I, "key": HEX | null, "coordinates": {AXIS: VALUE},
                 "repeat": R, "status": "cached" | "new point" | "waiting",
                 "why": REASON (new points only, when the last build says what differs)}],
     "nodes": [{"id": "points:P" | "dataset:P" | "analysis:P", "kind": ..., "name": ...,
                "key": HEX | null, "status": "cached" | "build" | "waiting",
                "reason": TEXT, "why": REASON, "depends_on": [ID]}],
     "searches": {P: {"measured": N, "next": N, "more": N, "done": bool,
                      "flagged": [{"cell": "roc_s0 ch 12", "status": TEXT, "at": {AXIS: VALUE}}]}}}

`searches` (present when a planned daq procedure searches a parameter): its probes cached
(`measured`), the round it would acquire next (`next`), the most points that can follow
(`more`), and the cells that ended without a crossing.

REASON is `Reason.as_dict()`: {"kind": KIND, "changes": [{"path", "before", "after"}],
"more": N, "files": [...], "new": N, "cached": N, "calibration": NAME, "cause": REASON},
fields present only when they say something (raffinerie.graph.reasons).

With several NAMEs (`raff plan A B --json`) it is one plan of their union,
as `raff build A B` builds it: `"procedures": [A, B]` and `"kinds": {A: KIND,
B: KIND}` stand for `procedure` and `kind`, and a node or point that several
of them share is listed once. `summary` counts distinct points, so a point
that several procedures share counts once; `shared` (present when not 0) says
how many of the points are in several procedures.

TARGET_IDENTITY is the identity in the keys of the plan's points: the board
an imported procedure names (`identity:`), else the backend's. When the
points of a workflow have several, it is the backend's, and `identities`
maps each daq procedure to its own.
"""

from __future__ import annotations

from pathlib import Path

from raffinerie.config.expand import Axis
from raffinerie.graph.nodes import BUILD, CACHED, WAITING, Node
from raffinerie.graph.plan import Plan
from raffinerie.graph.points import KEY_SIZE, PointSet
from raffinerie.graph.reasons import ReasonKind
from raffinerie.words import count, int_runs

__all__ = ["count", "compact_places", "human_bytes", "plan_dot", "plan_json", "render_plan"]

_MARK = {CACHED: "cached", BUILD: "BUILD", WAITING: "waiting"}


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def compact_places(places: tuple[tuple, ...]) -> str:
    """`{roc_s0,roc_s1}.ReferenceVoltage.{0,1}.Calib` when the places form a product."""
    paths = [p[1:] if p[0] == "target" else p for p in places]
    if len({len(p) for p in paths}) == 1:
        columns = [list(dict.fromkeys(p[i] for p in paths)) for i in range(len(paths[0]))]
        size = 1
        for col in columns:
            size *= len(col)
        if size == len(paths):
            return ".".join(str(c[0]) if len(c) == 1 else "{" + (int_runs(c) or ",".join(map(str, c))) + "}"
                            for c in columns)  # 72 channels are {0–71}, not 72 numbers
    shown = ", ".join(".".join(map(str, p)) for p in paths[:4])
    return shown + (", ..." if len(paths) > 4 else "")


def shown_axes(points: PointSet) -> list[tuple[Axis, object]]:
    """The procedure's own axes with the search spec of each (None: scanned), as plans and reports
    show them: a search's, not its probes so far (the dataset's search_step and tuples)."""
    proc = points.procedure
    axes = points.search.grid.axes if points.search is not None else points.scan.axes
    params = proc.parameters if len(proc.parameters) == len(axes) else [None] * len(axes)
    return [(axis, getattr(p, "search", None)) for axis, p in zip(axes, params)]


def values_text(axis: Axis, search=None) -> str:
    """`range(0, 64): 64 values`; for a search (a SearchSpec) also what it looks for."""
    values = axis.describe_values()
    if search is None:
        return values
    return (f"search over {values} ({search.mode}, {search.measure} {search.direction} to "
            f"{search.target:g}, resolution {search.resolution:g})")


def _axis_lines(axis: Axis, search=None) -> list[str]:
    n = len(axis.places)
    return [f"    axis {axis.name}: {values_text(axis, search)}",
            f"      sets {compact_places(axis.places)} ({count(n, 'place')})"]


def _points_lines(points: PointSet) -> list[str]:
    proc = points.procedure
    origin = proc.origin
    lines = [f"  {proc.name}: daq procedure at {origin.file}:{origin.line}"]
    if proc.imported is not None:
        lines.append(f"    imported from {proc.imported.get('source')}; board {points.identity}")
    if proc.calibrations:
        order = " (applied in this order, a later one winning)" if len(proc.calibrations) > 1 else ""
        lines.append(f"    stands on calibration{'s' * (len(proc.calibrations) > 1)} "
                     f"{', '.join(proc.calibrations)}{order}")
    axes = shown_axes(points)
    if not axes:
        lines.append("    no scan parameters: a single point")
    for axis, search in axes:
        lines += _axis_lines(axis, search)
    events = points.events_per_point()
    lines.append(f"    mode {proc.mode}, repeat {proc.repeat}, {events} events per point")
    if points.base is None:
        lines.append(f"    points: {points.total} total, waiting for calibration {points.waiting_for}")
        return lines
    take = f"; take {points.take} (--force-acquire)" if points.take else ""
    lines.append(f"    points: {points.total} total, {points.n_cached} cached, "
                 f"{points.to_acquire} to acquire{take}")
    if points.search is not None:
        from raffinerie.graph.searchplan import describe

        lines.append(f"    {describe(points.search)}")
    raw, table = points.bytes_per_point()
    todo = points.to_acquire
    lines.append(f"    data to acquire: ~{human_bytes(raw * todo)} raw, "
                 f"~{human_bytes(table * todo)} tables "
                 f"(~{human_bytes(raw)} raw per point)")
    return lines


def _tree(plan: Plan) -> list[str]:
    """The dependency tree, from what was asked for down to the points."""
    nodes = plan.nodes
    needed = {d for n in nodes.values() for d in n.depends_on}
    rows: list[tuple[str, str]] = []
    shown: set[str] = set()

    def walk(node_id: str, prefix: str, last: bool, top: bool) -> None:
        node = nodes[node_id]
        branch = "" if top else ("└── " if last else "├── ")
        again = node_id in shown
        tail = "(see above)" if again else _status_text(node)
        rows.append((f"  {prefix}{branch}{node.kind} {node.name}", tail))
        if again:
            return
        shown.add(node_id)
        child_prefix = prefix + ("" if top else ("    " if last else "│   "))
        for i, dep in enumerate(node.depends_on):
            walk(dep, child_prefix, i == len(node.depends_on) - 1, False)

    for node in nodes.values():
        if node.id not in needed:
            walk(node.id, "", True, True)
    width = max((len(left) for left, _ in rows), default=0)
    return [f"{left:<{width}}  {tail}" for left, tail in rows]


def _status_text(node: Node) -> str:
    """`BUILD    new points`; a reason that only repeats the status is not said twice (`cached`)."""
    mark = _MARK[node.status]
    return mark if node.reason in ("", str(node.status), mark) else f"{mark:8} {node.reason}"


def _point_listing(points: PointSet) -> list[str]:
    """One aligned row per point: index, key, each axis's value, the repeat, then the status
    (the one column of varying width, last). Widths come from the axes' values, not the rows."""
    axes = points.scan.axes
    widths = [max(len(f"{a.name}={v}") for v in a.values) if len(a.values) else 0 for a in axes]
    index_width = max(len(str(points.total - 1)), 5)
    repeats = points.scan.repeat > 1
    lines = [f"  points of {points.procedure.name}:"]
    for i in range(points.total):
        coordinate, repeat = points.coordinate(i)
        coords = "  ".join(f"{f'{a.name}={v}':<{w}}" for a, v, w in zip(axes, coordinate, widths)) or "-"
        status, key = _point_status(points, i)
        rep = f"  repeat {repeat:<{len(str(points.scan.repeat - 1))}}" if repeats else ""
        lines.append(f"    {i:>{index_width}}  {(key or '')[:12]:12}  {coords}{rep}  {status}")
    return lines


def _point_status(points: PointSet, i: int) -> tuple[str, str | None]:
    if points.base is None:
        return "waiting", None
    return ("cached" if points.cached[i] else str(points.point_reason(i))), points.key(i).hex()


def identity_of(plan: Plan) -> str:
    """The identity in the keys of the plan's points (an imported board's, not the backend's)."""
    identities = {ps.identity for ps in plan.points.values()}
    return identities.pop() if len(identities) == 1 else plan.identity


def _identity_text(plan: Plan) -> str:
    imported = [ps for ps in plan.points.values() if ps.procedure.imported is not None]
    if imported and len({ps.identity for ps in plan.points.values()}) == 1:
        return f"board {imported[0].identity} (imported runs)"
    return f"backend {plan.identity}"


def render_plan(plan: Plan, cache_dir: Path, list_points: bool = False) -> str:
    s = plan.summary()
    lines = [f"plan for {plan.target} ({plan.kind}); {_identity_text(plan)}; cache {cache_dir}", ""]
    lines += _tree(plan)
    for points in plan.points.values():
        lines.append("")
        lines += _points_lines(points)
        if list_points:
            lines += _point_listing(points)
    lines.append("")
    verdict = "up to date" if not plan.todo else f"{count(s['nodes_to_build'], 'node')} to build"
    waiting = f", {s['waiting']} waiting for a calibration" if s["waiting"] else ""
    shared = f" ({s['shared']} of them in several procedures, acquired once)" if s.get("shared") else ""
    lines.append(f"{count(s['total'], 'point')}{shared}: {s['cached']} cached, {s['to_acquire']} to acquire"
                 f"{waiting}; {verdict}")
    return "\n".join(lines)


def plan_json(plan: Plan) -> dict:
    points = []
    for name, ps in plan.points.items():
        names = [a.name for a in ps.scan.axes]
        keys = ps.keys.hex() if ps.base is not None else ""
        for i in range(ps.total):
            coordinate, repeat = ps.coordinate(i)
            status = "waiting" if ps.base is None else ("cached" if ps.cached[i] else "new point")
            point = {"procedure": name, "index": i,
                     "key": keys[2 * KEY_SIZE * i:2 * KEY_SIZE * (i + 1)] or None,
                     "coordinates": dict(zip(names, coordinate)),
                     "repeat": repeat, "status": status}
            if status == "new point" and ps.comparison is not None:
                why = ps.point_reason(i)
                if why.kind == ReasonKind.NEW_POINT and why.changes:
                    point["why"] = why.as_dict()
            points.append(point)
    identities = {name: ps.identity for name, ps in plan.points.items()}
    asked = ({"procedure": plan.target, "kind": plan.kind} if len(plan.targets) <= 1 else
             {"procedures": list(plan.targets), "kinds": dict(zip(plan.targets, plan.kinds))})
    takes = {name: ps.take for name, ps in plan.points.items() if ps.take}
    searches = {name: search_json(ps) for name, ps in plan.points.items() if ps.search is not None}
    return {**asked, "identity": identity_of(plan), **({"takes": takes} if takes else {}),
            **({"searches": searches} if searches else {}),
            **({"identities": identities} if len(set(identities.values())) > 1 else {}),
            "todo": plan.todo, "summary": plan.summary(), "points": points,
            "nodes": [n.as_dict() for n in plan.nodes.values()]}


def search_json(points: PointSet) -> dict:
    """A search's progress as the JSON plan gives it (`searches`); a flagged cell's `at`: the
    values of the other axes where it was flagged (when there are others)."""
    from raffinerie.graph.searchplan import outer_values

    progress = points.search
    flagged = [{"cell": cell.name, "status": str(status), **({"at": at} if (at := outer_values(points, outer))
                                                              else {})}
               for outer, cell, status in progress.flagged()]
    return {"measured": len(progress.measured), "next": len(progress.pending), "more": progress.more,
            "done": progress.done, "flagged": flagged}


_DOT_COLOURS = {CACHED: "#b8e0a8", BUILD: "#f6c26b", WAITING: "#d0d0d0"}


def _dot_text(text: str, limit: int = 70) -> str:
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("\\", "\\\\").replace('"', '\\"')


def plan_dot(plan: Plan) -> str:
    """The dependency graph in Graphviz DOT: an edge from each input to what uses it,
    nodes filled by status (cached green, build orange, waiting grey)."""
    lines = [f'digraph "{_dot_text(plan.target)}" {{',
             "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [color="#606060"];',
             f'  label="{_dot_text(f"raff plan {plan.target}: cached (green), build (orange), waiting (grey)", 200)}";',
             "  labelloc=t; fontname=\"Helvetica\";"]
    asked = {n.id for n in (plan.final_node(t) for t in plan.targets) if n is not None} \
        if len(plan.targets) > 1 else set()
    for node in plan.nodes.values():
        said = node.reason in ("", str(node.status))  # `cached`, not `cached: cached`
        label = f"{node.kind} {node.name}\\n{node.status}" + ("" if said else f": {_dot_text(node.reason)}")
        if node.kind == "points" and node.name in plan.points:
            label += f"\\n{count(plan.points[node.name].total, 'point')}"
        outline = ", penwidth=2.5" if node.id in asked else ""  # several NAMEs: what was asked for
        lines.append(f'  "{_dot_text(node.id, 200)}" [label="{label}", fillcolor="{_DOT_COLOURS[node.status]}", '
                     f'tooltip="{_dot_text(node.key or node.id, 80)}"{outline}];')
    for node in plan.nodes.values():
        for dep in node.depends_on:
            lines.append(f'  "{_dot_text(dep, 200)}" -> "{_dot_text(node.id, 200)}";')
    lines.append("}")
    return "\n".join(lines) + "\n"
