"""`raff report NAME`: one self-contained HTML page about a procedure or workflow.

Everything is inlined (plots as data URIs, styles, a few lines of script that
sort the tables), so the page opens anywhere, offline, and can be mailed or
archived as one file. It shows what the cache holds for NAME now:

- every analysis with its plots, notes and summary table (sortable; rows
  whose `flag` is not `ok`, or whose fit `status` failed, are highlighted);
- every dataset's shape and scan axes;
- the provenance of each node: its key, the reason and time of its last
  build, the board (or emulator) its points were acquired on, the raffinerie
  version, the code digests of analyses and the calibration chain.

A node that is out of date says so, with the plan's reason, and shows its
last build if the cache still has it.
"""

from __future__ import annotations

import contextlib
import csv
import html
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from raffinerie import __version__
from raffinerie.cli.entryfiles import EntryFiles
from raffinerie.cli.options import add_analysis_path, add_config_and_backend
from raffinerie.cli.render import shown_axes, values_text
from raffinerie.errors import RaffError
from raffinerie.graph.nodes import BUILD, CACHED, Node
from raffinerie.graph.reasons import Reason
from raffinerie.graph.reasons import describe_values
from raffinerie.words import count

if TYPE_CHECKING:  # the planner (and the config stack under it) only when a report is made:
    from raffinerie.graph.plan import Plan  # `raff emulator` and `raff raw` start without it

MAX_ROWS = 5000
REPORT_DESCRIPTION = ("One HTML page per procedure or workflow, with everything inlined (no network access): "
                      "every analysis with its plots and sortable summary table, flagged channels highlighted, "
                      "each dataset's shape and axes, and the provenance of each node (key, reason and time of "
                      "its last build, board, raffinerie version, code digests, calibration chain).")
_BAD_STATUS = {"fit failed", "unresolved", "fires below the scan"}


def report_command(args) -> int:
    path = write_report(args, args.output)
    print(f"report of {args.name}: {path}")
    return 0


def report_after_build(args, name: str) -> None:
    """`raff build --report`: the report of `name` beside the analysis outputs (-o DIR or raff-out/)."""
    path = write_report(args, args.output, name)
    print(f"report of {name}: {path}")


def write_report(args, folder: str | None, name: str | None = None) -> Path:
    name = name or args.name
    from raffinerie.analysis.code import code_provider
    from raffinerie.cli.workspace import load_valid, one_identity, open_store

    from raffinerie.builder.outputs import board_folder
    from raffinerie.config.network import boards

    lib, files = load_valid(args)
    store = open_store(args, lib)
    from raffinerie.graph.plan import make_plan

    plan = make_plan(lib, name, one_identity(args), store.index(), files,
                     code_provider(lib.main, getattr(args, "analysis_path", None)))
    out = Path(folder) if folder else lib.main.resolve().parent / "raff-out"
    board = board_folder(boards(getattr(args, "network", None), getattr(args, "seed", None))[0])
    path = out / (f"{name}.html" if board is None else f"{name}.{board}.html")  # boards' pages apart
    page = render_report(plan, store, lib)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:  # a full disk must not keep a partial page (nor fill up further)
        from raffinerie.analysis.runner import os_problem

        with contextlib.suppress(OSError):
            tmp.unlink()
        raise RaffError(f"cannot write the report of {name}: {os_problem(exc)}", file=path) from None
    return path


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report of a procedure or workflow",
                       description=REPORT_DESCRIPTION)
    p.add_argument("name", metavar="NAME", help="procedure or workflow")
    add_config_and_backend(p)
    p.add_argument("-o", "--output", metavar="DIR",
                   help="folder for NAME.html (default: raff-out/ beside MAIN)")
    add_analysis_path(p)
    p.set_defaults(func=report_command)


# -- the page ---------------------------------------------------------------------------

QC_MODULE = "builtin.qc"


def render_report(plan: Plan, store, lib, warn=None) -> str:
    """The page. `warn(line)` hears of every file a cache record names that the page leaves out
    (default: a warning on stderr)."""
    files = EntryFiles(warn or (lambda line: print(f"warning: {line}", file=sys.stderr, flush=True)))
    e = html.escape
    s = plan.summary()
    verdict = "up to date" if not plan.todo else f"{count(s['nodes_to_build'], 'node')} to build"
    said = _built_reasons(store)
    parts = [_HEAD.replace("{title}", e(f"raff report: {plan.target}")),
             f"<h1>{e(plan.target)} <small>({e(plan.kind)})</small></h1>",
             f"<p class=meta>Written {e(time.strftime('%Y-%m-%d %H:%M:%S'))} by raffinerie {e(__version__)}; "
             f"backend {e(plan.identity)}; cache <code>{e(str(store.root))}</code>.<br>"
             f"{count(s['total'], 'point')}: {s['cached']} cached, {s['to_acquire']} to acquire"
             f"{', %d waiting for a calibration' % s['waiting'] if s['waiting'] else ''}; <b>{e(verdict)}</b>.</p>"]
    # the board's verdict and its hexmaps are what a test stand reads first; then the analysis
    # asked for (hexaboard_tuning's one-page summary), then the rest in plan order
    analyses = sorted((n for n in plan.nodes.values() if n.kind == "analysis"),
                      key=lambda n: (getattr(lib.procedures.get(n.name), "module", None) != QC_MODULE,
                                     n.name != plan.target))
    datasets = [n for n in plan.nodes.values() if n.kind == "dataset"]
    parts.append("<nav><b>Contents</b>: " + " · ".join(
        f'<a href="#{e(n.id)}">{e(n.kind)} {e(n.name)}</a>' for n in analyses + datasets) + "</nav>")
    for node in analyses:
        parts.append(_analysis(plan, node, store, lib, files, said))
    for node in datasets:
        parts.append(_dataset(plan, node, store, files, said))
    parts.append(_SCRIPT + "</body></html>\n")
    return "\n".join(parts)


def _status(node: Node) -> str:
    e = html.escape
    cls = {CACHED: "ok", BUILD: "todo"}.get(node.status, "wait")
    reason = "" if node.reason == str(node.status) else f" {e(node.reason)}"
    return f'<span class="status {cls}">{e(str(node.status))}</span>{reason}'


def _entry_key(node: Node, store, kind: str) -> tuple[str | None, bool]:
    """(key of the entry to show, whether it is the current one): the node's, else its last build's."""
    if node.key and node.status == CACHED:
        return node.key, True
    last = store.index().last_build(kind, node.name)
    if last and _is_key(last.get("key")) and store.has(kind, last["key"]):
        return last["key"], False
    return None, False


def _shown_entry(node: Node, store, kind: str, out: list[str], not_built: str) -> str | None:
    """The key of the entry a section shows, or None (the section is closed); `out` gets the note
    that says it is not built, or that it is the last build of an out-of-date node."""
    key, current = _entry_key(node, store, kind)
    if key is None:
        out.append(f"<p class=note>{not_built}</p></section>")
    elif not current:
        out.append("<p class=note>Out of date: this is its last build.</p>")
    return key


def _is_key(key) -> bool:
    """A cache key (64 hex digits): nothing else read from a record becomes a path."""
    return isinstance(key, str) and len(key) == 64 and all(c in "0123456789abcdef" for c in key)


def _analysis(plan: Plan, node: Node, store, lib, files: EntryFiles, said: dict) -> str:
    e = html.escape
    out = [f'<section id="{e(node.id)}"><h2>analysis {e(node.name)}</h2><p>{_status(node)}</p>']
    key = _shown_entry(node, store, "analyses", out, "Not built yet: nothing to show.")
    if key is None:
        return "\n".join(out)
    folder = store.path("analyses", key)
    meta = files.json(folder, "meta.json")
    outputs = meta.get("outputs") if isinstance(meta.get("outputs"), dict) else {}
    verdict = files.json(folder, "verdict.json", quiet=True)
    if verdict.get("verdict") in ("pass", "fail"):
        out.append(_verdict(verdict))
    notes = files.file(folder, "notes.txt")
    text = files.text(notes) if notes else ""
    if text.strip():
        out.append("<h3>Notes</h3><pre class=notes>" + e(text.strip()) + "</pre>")
    declared = outputs.get("plots") if isinstance(outputs.get("plots"), list) else []
    plots = [(name, path) for i, name in enumerate(declared)
             if (path := files.file(folder, name, f"outputs.plots[{i}]")) is not None]
    if plots:
        out.append("<h3>Plots</h3><div class=plots>")
        for name, path in plots:
            out.append(f'<figure><img alt="{e(name)}" src="{files.data_uri(path)}">'
                       f"<figcaption>{e(name)}</figcaption></figure>")
        out.append("</div>")
    summary = outputs.get("summary")
    summary_path = files.file(folder, summary, "outputs.summary") if summary else None
    if summary_path is not None:
        out.append(_table(summary_path, folder, files))
    calibration = files.file(folder, "calibration.yaml")
    if calibration is not None:
        text = files.text(calibration)
        shown = text if len(text) < 4000 else text[:4000] + "\n..."
        out.append(f"<details><summary>calibration it writes ({len(text)} bytes)</summary>"
                   f"<pre>{e(shown)}</pre></details>")
    inputs = meta.get("inputs") or {}
    proc = lib.procedures.get(node.name)
    reason = said[key] if key in said else _analysis_reason(store, node.name, key, meta, files)
    rows = [("key", key), ("reason of its last build", reason),
            ("built", _when(meta.get("time"))), ("took", f"{meta.get('seconds', '?')} s"),
            ("module", inputs.get("module") or (proc.module if proc else "?")),
            ("parameters", json.dumps(inputs.get("parameter_values", "?"))),
            ("code digests", ", ".join(f"{f} {d}" for f, d in (inputs.get("code") or {}).items()) or "-"),
            ("input dataset", inputs.get("dataset", "?")),
            ("calibration chain", _chain(plan, node.depends_on[0] if node.depends_on else None))]
    out.append(_provenance(rows))
    out.append("</section>")
    return "\n".join(out)


def _verdict(doc: dict) -> str:
    """A QC verdict (the `qc` analysis's verdict.json) as the first thing of its section."""
    e = html.escape
    passed = doc["verdict"] == "pass"
    lines = [f'<p class="verdict {"ok" if passed else "bad"}">QC verdict: {"PASS" if passed else "FAIL"}'
             f' <small>readout grade {e(str(doc.get("grade", "?")))}, {e(str(doc.get("geometry", "")))}, '
             f'{e(str(doc.get("kind", "")))}</small></p><ul class=verdict>']
    lines += [f"<li>fails: {e(str(r))}</li>" for r in doc.get("reasons") or []]
    for key, name in (("dead_pads", "dead pads"), ("noisy_pads", "noisy pads"),
                      ("untunable_pads", "untunable pads"), ("no_noise_pads", "undecided pads (no noise)")):
        pads = doc.get(key) or []
        if pads or key in ("dead_pads", "noisy_pads"):
            lines.append(f"<li>{name}: {e(', '.join(map(str, pads))) or 'none'}</li>")
    return "".join(lines) + "</ul>"


def _analysis_reason(store, name: str, key: str, meta: dict, files: EntryFiles) -> str:
    """Why that build ran: its inputs against those of the build of `name` before it."""
    earlier = []
    for other, folder in store.entries("analyses"):
        if other == key:
            continue
        doc = files.json(Path(folder), "meta.json", quiet=True)
        if doc.get("procedure") == name and (doc.get("time") or 0) < (meta.get("time") or 0):
            earlier.append(doc)
    if not earlier:
        return "first build"
    previous = max(earlier, key=lambda d: d.get("time") or 0)
    from raffinerie.graph.plan import changed

    return str(changed({"inputs": previous.get("inputs") or {}}, meta.get("inputs") or {}))


def _axis_item(axis, search) -> str:
    """One axis of a dataset's procedure; a search's as the plan shows it, not its probes."""
    values = values_text(axis, search) if search else f"{describe_values(axis.values)}, {len(axis.values)} values"
    return f"<li><b>{html.escape(axis.name)}</b>: {html.escape(values)}</li>"


def _dataset(plan: Plan, node: Node, store, files: EntryFiles, said: dict) -> str:
    e = html.escape
    out = [f'<section id="{e(node.id)}"><h2>dataset {e(node.name)}</h2><p>{_status(node)}</p>']
    points = plan.points.get(node.name)
    if points is not None:
        axes = "".join(_axis_item(a, search) for a, search in shown_axes(points)) \
            or "<li>no scan parameters: a single point</li>"
        out.append(f"<p>{count(points.total, 'point')} ({points.n_cached} cached), mode {e(points.procedure.mode)}, "
                   f"repeat {points.procedure.repeat}</p><ul>{axes}</ul>")
    key = _shown_entry(node, store, "datasets", out, "Not built yet.")
    if key is None:
        return "\n".join(out)
    meta = files.json(store.path("datasets", key), "meta.json")
    out.append(f"<p>Shape: <b>{meta.get('rows', '?')} rows × {len(meta.get('columns') or [])} columns</b> "
               f"from {_points_of(meta.get('points'))}.</p>")
    out.append("<details><summary>columns</summary><p class=cols>"
               + e(", ".join(meta.get("columns") or [])) + "</p></details>")
    record = store.index().last_build("datasets", node.name) or {}
    why = Reason.from_dict((record.get("inputs") or {}).get("reason")) if record.get("key") == key else None
    acquired = _acquisition(store, meta.get("point_keys") or [])
    if key in said:
        reason = said[key]
    else:  # a cache of a raffinerie before the journal said why (or pulled): the build record's
        reason = "-" if why is None else ("first build" if why.kind == "not_built" else str(why))
    rows = [("key", key), ("reason of its last build", reason),
            ("built", _when(record.get("time")) if record.get("key") == key else "-"),
            ("acquired on", acquired.get("identity", "?")),
            ("acquired", acquired.get("when", "?")),
            ("raffinerie version", f"{meta.get('raffinerie', '?')} (points: {acquired.get('version', '?')})"),
            ("calibration chain", _chain(plan, node.id))]
    out.append(_provenance(rows))
    out.append("</section>")
    return "\n".join(out)


def _built_reasons(store) -> dict[str, str]:
    """Entry key -> why it was built, as the plan of that build said it (the journal's `built`
    events; the last one of a key wins). Lines are filtered as bytes first: the journal holds one
    line per acquired point, and only these few are parsed."""
    out: dict[str, str] = {}
    try:
        with open(Path(store.root) / "journal.jsonl", "rb") as f:
            for line in f:
                if b'"event": "built"' not in line:
                    continue
                try:
                    doc = json.loads(line)
                    why = Reason.from_dict(doc["reason"])
                    if why is not None:
                        out[str(doc["key"])] = str(why)
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue  # a line cut short or not of this form: its entry falls back below
    except OSError:
        pass
    return out


def _points_of(n) -> str:
    return count(n, "point") if isinstance(n, int) else f"{n if n is not None else '?'} points"


def _acquisition(store, keys: list[str]) -> dict:
    """Board, time span and version of the measurements (the first and last point)."""
    if not keys or not _is_key(keys[0]) or not _is_key(keys[-1]):
        return {}
    try:
        first, last = store.meta("measurements", keys[0]), store.meta("measurements", keys[-1])
    except Exception:  # noqa: BLE001 - damaged or gone: the report says it does not know
        return {}
    span = f"{_when(first.get('start'))} to {_when(last.get('end'))}"
    return {"identity": str(first.get("identity", "?")), "when": span,
            "version": str(first.get("raffinerie", "?"))}


def _chain(plan: Plan, node_id: str | None) -> str:
    """`calibration trim (key…) ← calibration vref (key…)`: every calibration a node stands on,
    directly or through the data of another, the nearest first."""
    upstream, todo = set(), [node_id] if node_id else []
    while todo:
        node = plan.nodes.get(todo.pop())
        if node is not None and node.id not in upstream:
            upstream.add(node.id)
            todo += node.depends_on
    calibrations = {d for i in upstream if plan.nodes[i].kind == "points" for d in plan.nodes[i].depends_on}
    order = [i for i in reversed(plan.nodes) if i in calibrations]   # plans list inputs first
    return " ← ".join(f"calibration {plan.nodes[i].name} ({(plan.nodes[i].key or 'not built')[:12]})"
                      for i in order) or "none"


def _provenance(rows) -> str:
    e = html.escape
    body = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    return f"<h3>Provenance</h3><table class=prov>{body}</table>"


def _table(path: Path, folder: Path, files: EntryFiles) -> str:
    e = html.escape
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            rows = [row for _, row in zip(range(MAX_ROWS + 1), reader)]
    except (OSError, csv.Error) as exc:  # a field over csv's limit (128 kB), a file gone
        files.warn(f"{path}: cannot read this summary table ({exc}); left out of the report")
        return ""
    cut = len(rows) > MAX_ROWS
    rows = rows[:MAX_ROWS]
    flag = header.index("flag") if "flag" in header else None
    status = header.index("status") if "status" in header else None
    flagged = 0
    body = []
    for row in rows:
        bad = (flag is not None and flag < len(row) and row[flag] not in ("", "ok")) or \
              (status is not None and status < len(row) and row[status] in _BAD_STATUS)
        flagged += bad
        cells = "".join(f"<td>{e(_short(c))}</td>" for c in row)
        body.append(f'<tr class="flagged">{cells}</tr>' if bad else f"<tr>{cells}</tr>")
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    note = (f"{len(rows)} rows{' (the first %d)' % MAX_ROWS if cut else ''}; "
            f"<span class=flagcount>{flagged} flagged</span> (highlighted); click a column to sort")
    return (f"<h3>Summary <small>{e(path.relative_to(folder).as_posix())}</small></h3><p class=meta>{note}</p>"
            f'<div class=tablewrap><table class="sortable summary"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _short(cell: str) -> str:
    try:
        value = float(cell)
    except ValueError:
        return cell
    if cell.lstrip("-").isdigit():
        return cell
    return f"{value:.4g}"


def _when(t) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(t)))
    except (TypeError, ValueError):
        return "?"


_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1300px;
padding:0 1.5em 3em;color:#1d2329;background:#fbfbfa}
h1{margin:.8em 0 .2em}h1 small,h3 small{color:#6b7280;font-weight:normal}
h2{border-bottom:2px solid #d6dde5;padding-bottom:.2em;margin-top:2em}
section{background:#fff;border:1px solid #e3e7eb;border-radius:8px;padding:0 1.2em 1em;margin:1.2em 0}
nav{background:#eef2f6;padding:.5em .8em;border-radius:6px}nav a{color:#24527a}
.meta{color:#4b5563}.note{color:#8a5a00}code{font-size:90%}
.status{display:inline-block;padding:0 .5em;border-radius:4px;font-weight:600}
.status.ok{background:#b8e0a8}.status.todo{background:#f6c26b}.status.wait{background:#d0d0d0}
.plots{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;max-width:100%}
figure img{max-width:100%;border:1px solid #e3e7eb;background:#fff}figcaption{color:#6b7280;font-size:90%}
.tablewrap{max-height:32em;overflow:auto;border:1px solid #e3e7eb}
table{border-collapse:collapse;font-size:12.5px}td,th{padding:.2em .6em;border-bottom:1px solid #eef0f2;text-align:right}
table.summary th{position:sticky;top:0;background:#eef2f6;cursor:pointer;white-space:nowrap}
table.summary th:hover{background:#dde6ef}th.asc:after{content:" ▲"}th.desc:after{content:" ▼"}
tr.flagged td{background:#fde2e1;color:#8b1a1a;font-weight:600}.flagcount{color:#8b1a1a;font-weight:600}
table.prov th{text-align:left;color:#4b5563;font-weight:600;vertical-align:top;white-space:nowrap}
table.prov td{text-align:left;font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.verdict{font-size:1.25em;font-weight:700;padding:.3em .6em;border-radius:6px;display:inline-block}
.verdict.ok{background:#b8e0a8}.verdict.bad{background:#f8b4b0}ul.verdict{font-size:1em;font-weight:normal;
display:block;background:none}
pre{background:#f4f6f8;padding:.6em;overflow:auto;max-height:20em}.cols{font-size:12px;color:#4b5563}
</style></head><body>"""

_SCRIPT = """<script>
// click a column header to sort its table (numbers as numbers); click again to reverse
document.querySelectorAll("table.sortable th").forEach(function (th, col) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], rows = Array.from(body.rows);
    var up = !th.classList.contains("asc");
    table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
    th.classList.add(up ? "asc" : "desc");
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    rows.sort(function (a, b) {
      var x = a.cells[index].textContent, y = b.cells[index].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return up ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
</script>"""
