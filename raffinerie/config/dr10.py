"""The Datenraffinerie 1.0 configuration format: recognising it, and `raff migrate`.

Datenraffinerie 1.0 (PyPI `datenraffinerie` 1.0.x) describes a daq procedure
with `system_settings`:

- `default`: a file or a list of files, each rooted at `target:` and/or
  `daq:` (and `client:`), laid over each other in order;
- `init`: a file or list of files, laid over each other in order, then
  `override` (a mapping rooted the same way) over them; the result is laid
  over the defaults;
- its `daq` section is the daq server's configuration (with `menus` and
  `active_menu` in the menu generation), and `client` the daq-client's.
  A daq section already split into `server`/`client` (the 0.1.2 layout) is
  taken as it is.

Overlays follow 1.0's `update_dict`: mappings merge, lists of the same
length merge element by element (a mapping element merges, anything else
replaces), a value of another type replaces, lists of different lengths
are an error.

A parameter is either a `key` (a list of levels; a level that is a list
fans out; the first level `target` or `daq` says which config it sets, and a
key without either sets the target, as in 0.1.2) with `values` (a list, or
`{start, stop, step}`: Python's range, start 0 and step 1 by default), or a
jinja2 `template` with `values` and `default`. A template is rendered with
`value` for each value and read as YAML, giving that point's patch; the
`default` rendered for every value of every template parameter is laid
over every point first. `mode: full` (every event) is raffinerie's `events`
mode. Analyses name their class with `module_name`; `provides_calibration`
needs no counterpart (an analysis provides a calibration when its `output()`
names one). Workflows list their members under `tasks`.

How parameters and templates become places and points:
`raffinerie.config.dr10points`. `raff migrate MAIN -o DIR` writes the equivalent library in the 0.1.2 format
raffinerie reads: each procedure's merged defaults and initial settings as
files under `DIR/configs/` (one file per distinct content), its parameters
as `key` parameters, and template parameters as the 0.1.2 format's template
parameters (config/templated.py), but for templates rooted where 0.1.2 roots
otherwise (1.0's `daq:` is the server's section), which become explicit
places (`keys:`) with explicit `points:`. The points, and so the keys, are
those 1.0 would acquire.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from raffinerie.config.dr10points import KeyDim, TemplateDim, daq_layout, explicit, key_param, parameter_values, \
    place, render, rooted_places, template_values, values_field
from raffinerie.config.template import Renderer
from raffinerie.config.tree import normalize
from raffinerie.config.yamlio import load_yaml
from raffinerie.errors import RaffError

FORMAT_012 = "Datenraffinerie 0.1.2"
FORMAT_10 = "Datenraffinerie 1.0"
_DAQ_MARKERS = ("system_settings",)
_ANALYSIS_MARKERS = ("module_name", "provides_calibration", "compatible_modes")


def detect(doc: Any) -> str | None:
    """`FORMAT_10` if `doc` (a main or library document) is in the 1.0 format, else None."""
    entries: list = []
    if isinstance(doc, list):
        entries = doc
    elif isinstance(doc, dict):
        entries = list(doc.get("procedures") or []) if isinstance(doc.get("procedures"), list) else []
        flows = doc.get("workflows")
        if isinstance(flows, list) and any(isinstance(w, dict) and "tasks" in w for w in flows):
            return FORMAT_10
    for entry in entries:
        if isinstance(entry, dict) and (any(k in entry for k in _DAQ_MARKERS)
                                        or any(k in entry for k in _ANALYSIS_MARKERS)):
            return FORMAT_10
    return None


# -- overlays as 1.0 lays them --------------------------------------------------------

def update(original: Any, overlay: Any, where: str = "") -> Any:
    """`overlay` laid over `original` as 1.0's update_dict does (new objects; inputs untouched)."""
    if not isinstance(original, dict) or not isinstance(overlay, dict):
        return overlay
    out = dict(original)
    for key, value in overlay.items():
        old = out.get(key)
        here = f"{where}.{key}" if where else str(key)
        if key not in out or type(old) is not type(value):
            out[key] = value
        elif isinstance(value, dict):
            out[key] = update(old, value, here)
        elif isinstance(value, (list, tuple)):
            if len(old) != len(value):
                raise RaffError(f"{here}: a list of {len(value)} items cannot be laid over one of "
                                f"{len(old)} (Datenraffinerie 1.0 merges lists item by item)")
            out[key] = [update(o, u, here) if isinstance(o, dict) else u for o, u in zip(old, value)]
        else:
            out[key] = value
    return out


# -- reading a 1.0 library -------------------------------------------------------------

class _Reader:
    def __init__(self):
        self.procedures: list[tuple[dict, Path]] = []
        self.workflows: list[dict] = []

    def main(self, path: Path) -> None:
        doc = load_yaml(path, "main config")
        if not isinstance(doc, dict):
            raise RaffError("a Datenraffinerie 1.0 main config is a mapping (libraries, procedures, "
                            "workflows)", file=path)
        for entry in _strings(doc.get("libraries"), "libraries", path):
            lib = path.parent / entry
            entries = load_yaml(lib, "library file")
            if not isinstance(entries, list):
                raise RaffError("a Datenraffinerie 1.0 library is a list of procedures", file=lib)
            self.procedures += [(e, lib) for e in entries]
        for key in ("procedures", "workflows"):
            if not isinstance(doc.get(key) or [], list):
                raise RaffError(f"{key} is a list, not {type(doc[key]).__name__}", file=path)
        self.procedures += [(e, path) for e in doc.get("procedures") or []]
        self.workflows += list(doc.get("workflows") or [])


def _strings(spec: Any, what: str, source: Path) -> list[str]:
    """A file name or a list of file names (non-empty strings)."""
    items = [] if spec is None else [spec] if isinstance(spec, str) else spec
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise RaffError(f"{what} is a file name or a list of file names, got {spec!r}"[:300], file=source)
    return items


def _mapping(value: Any, what: str) -> dict:
    if value is not None and not isinstance(value, dict):
        raise RaffError(f"{what} is a mapping, not {type(value).__name__}")
    return value or {}


def _files(spec: Any, base: Path, what: str) -> list[Path]:
    return [base.parent / item for item in _strings(spec, what, base)]


def _load_merged(paths: list[Path], what: str, start: dict | None = None) -> dict:
    config: dict = dict(start or {})
    for path in paths:
        doc = _normalized(path, what)
        if doc is not None:
            config = update(config, doc)
    return config


_NORMALIZED: dict[tuple, Any] = {}


def _normalized(path: Path, what: str) -> dict | None:
    """The normalised mapping in `path`, once per content: the procedures of a library share
    their default files (a power-on default of 167 kB normalised per procedure is ~20 ms each).
    `update` never changes its inputs, so the one copy is never changed."""
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    except OSError:
        key = None  # load_yaml says what is wrong with it
    if key is not None and key in _NORMALIZED:
        return _NORMALIZED[key]
    doc = load_yaml(path, what)
    if doc is not None and not isinstance(doc, dict):
        raise RaffError(f"{what} holds a {type(doc).__name__}, not a mapping", file=path)
    doc = normalize(doc) if doc is not None else None
    if key is not None:
        _NORMALIZED[key] = doc
    return doc


def _split(full: dict) -> tuple[dict, dict]:
    """(target, daq as {server, client}) of a 1.0 configuration."""
    target = dict(full.get("target") or {})
    for key, value in full.items():  # roc sections written without `target:`
        if key not in ("target", "daq", "client"):
            target[key] = value
    daq = full.get("daq") or {}
    client = full.get("client") or {}
    if isinstance(daq, dict) and ("server" in daq or "client" in daq) and "menus" not in daq:
        out = {"server": daq.get("server") or {}, "client": update(daq.get("client") or {}, client)}
        out.update({k: v for k, v in daq.items() if k not in ("server", "client")})
        return target, out
    return target, {"server": daq, "client": client}


def convert_daq(entry: dict, source: Path, write, renderer: Renderer | None = None,
                sources: list[tuple[int, str]] | None = None, indices: list | None = None,
                as_text: bool = False) -> dict:
    """A 0.1.2-format daq procedure for the 1.0 entry; `write(kind, mapping)` stores a config file.

    Templates are rendered by `renderer` (by one of its own without it). `sources`, if given,
    receives the index of the 1.0 parameter each 0.1.2 parameter comes from; `indices`, if given,
    the explicit points of a procedure with templates, as `dr10points.explicit` says. With
    `as_text`, templates whose renderings are rooted as the 0.1.2 format roots them are written
    as `template` parameters (config/templated.py), the others as explicit points.
    """
    if renderer is None:
        with Renderer() as own:
            return convert_daq(entry, source, write, own, sources, indices, as_text)
    name = entry.get("name", "?")
    settings = _mapping(entry.get("system_settings"), "system_settings")
    defaults = _load_merged(_files(settings.get("default"), source, "default"), "default config")
    init = _load_merged(_files(settings.get("init"), source, "init"), "init config")
    init = update(init, normalize(_mapping(settings.get("override"), "system_settings.override")))
    if not isinstance(entry.get("parameters") or [], list):
        raise RaffError("parameters is a list of parameters")
    full = update(defaults, init)
    layout = daq_layout(full)
    params = list(entry.get("parameters") or [])
    templates = [p for p in params if isinstance(p, dict) and "template" in p]
    default_patch: dict = {}
    for p in templates:  # 1.0 lays the defaults of every value of every template under every point
        what = f"the default of parameter {params.index(p)}"
        for value in template_values(p.get("values"), what):
            default_patch = update(default_patch, render(renderer, p.get("default") or "{}", value, what))
    if default_patch:
        full = update(full, default_patch)
        init = update(init, default_patch)
    default_target, _ = _split(defaults)
    full_target, full_daq = _split(full)
    out: dict[str, Any] = {"name": name, "type": "daq"}
    if entry.get("calibration"):
        out["calibration"] = entry["calibration"]
    out["mode"] = "events" if entry.get("mode") == "full" else "summary"
    repeat = entry.get("repeat", 1) or 1
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise RaffError(f"repeat is a whole number from 1, got {repeat!r}"[:200])
    if repeat != 1:
        out["repeat"] = repeat
    if entry.get("data_columns"):  # anything but a list goes as it is, for the schema check to name
        columns = entry["data_columns"]
        out["data_columns"] = list(columns) if isinstance(columns, list) else columns
    # the target: the defaults, then what init and override change (raffinerie's overlay gives
    # the same config as 1.0's, or else the whole resolved target is the default and nothing overlays it)
    from raffinerie.config.tree import merge

    init_target, _ = _split(init)
    if merge(default_target, init_target) == full_target:
        out["target_settings"] = {"power_on_default": write("target", default_target)}
        if init_target:
            out["target_settings"]["initial_config"] = write("init", init_target)
    else:
        out["target_settings"] = {"power_on_default": write("target", full_target)}
    out["daq_settings"] = {"default": write("daq", full_daq)}

    dims: list[KeyDim | TemplateDim] = []     # per 1.0 parameter
    as_written = []   # per 1.0 parameter, its 0.1.2 form (a template's when written as text)
    roots = {"target", "daq"} if layout == "split" else {"target"}   # what 0.1.2 roots as 1.0 does
    for i, p in enumerate(params):
        if not isinstance(p, dict):
            raise RaffError(f"procedure '{name}': parameter {i} is not a mapping", file=source)
        what = f"the template of parameter {i}" if "template" in p else f"parameter {i}"
        if "template" in p:
            values = template_values(p.get("values"), what)
            patches = [render(renderer, p["template"], v, what) for v in values]
            dims.append(TemplateDim([rooted_places(patch, layout) for patch in patches]))
            as_text = as_text and all(set(patch) <= roots for patch in patches)
            as_written.append({"template": p["template"], **values_field(values)})
            continue
        values = parameter_values(p.get("values"), what)
        key = p.get("key")
        levels = place(list(key) if isinstance(key, list) else [key], layout)
        dims.append(KeyDim(levels, values))
        as_written.append(key_param(levels, values))
    if not templates or as_text:
        out["parameters"] = as_written
        if sources is not None and not templates:
            sources += [(i, "key") for i in range(len(params))]
        return out
    return explicit(out, dims, full_target, full_daq, repeat, name, source, sources, indices)


def convert_analysis(entry: dict) -> dict:
    out = {"name": entry.get("name"), "type": "analysis", "daq": entry.get("daq")}
    module = entry.get("module_name") or entry.get("module")
    if module:
        out["module"] = module
    if entry.get("parameters"):  # anything but a mapping goes as it is, for the schema check to name
        parameters = entry["parameters"]
        out["parameters"] = dict(parameters) if isinstance(parameters, dict) else parameters
    return out


# -- raff migrate ----------------------------------------------------------------------

def migrate(main: Path, folder: Path) -> dict:
    """Write the 0.1.2-format twin of the 1.0 library `main` into `folder`; what was written."""
    import yaml

    reader = _Reader()
    reader.main(main)
    written: dict[str, Path] = {}
    configs = folder / "configs"

    def write(kind: str, mapping: dict) -> str:
        text = yaml.safe_dump(mapping, sort_keys=False, default_flow_style=False)
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        name = f"{kind}-{digest}.yaml"
        if name not in written:
            configs.mkdir(parents=True, exist_ok=True)
            (configs / name).write_text(text, encoding="utf-8")
            written[name] = configs / name
        return f"./configs/{name}"

    procedures = []
    with Renderer() as renderer:  # one sandboxed child renders every template of the library
        for entry, source in reader.procedures:
            if not isinstance(entry, dict):
                raise RaffError("a procedure is not a mapping", file=source)
            try:
                if entry.get("type") == "analysis":
                    procedures.append(convert_analysis(entry))
                else:
                    procedures.append(convert_daq(entry, source, write, renderer, as_text=True))
            except RaffError as exc:
                if exc.diagnostic.file is None:
                    raise RaffError(f"procedure '{entry.get('name')}': {exc.diagnostic.message}",
                                    file=source) from None
                raise
    workflows = [{"name": w.get("name"), "procedures": list(w.get("tasks") or w.get("procedures") or [])}
                 for w in reader.workflows if isinstance(w, dict)]
    header = (f"# Written by `raff migrate` from the {FORMAT_10} library {main.resolve()}\n"
              f"# in the {FORMAT_012} format that raffinerie reads.\n")
    (folder / "procedures.yaml").write_text(
        header + yaml.dump(procedures, Dumper=_Dumper(), sort_keys=False, width=110), encoding="utf-8")
    doc: dict[str, Any] = {"libraries": ["./procedures.yaml"]}
    if workflows:
        doc["workflows"] = workflows
    (folder / "main_config.yaml").write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return {"procedures": len(procedures), "workflows": len(workflows), "configs": len(written),
            "templates": sum(1 for p in procedures if any("template" in q for q in p.get("parameters") or [])),
            "explicit": sum(1 for p in procedures if "points" in p)}


def _Dumper():
    """yaml's SafeDumper, writing text of several lines (a template) as a literal block, as
    people write it, and not as one quoted line of escapes."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value: str):
        block = "\n" in value and not any(line != line.rstrip() for line in value.splitlines())
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if block else None)

    Dumper.add_representer(str, text)
    return Dumper


def migrate_command(args) -> int:
    main, folder = Path(args.main), Path(args.output)
    if not main.is_file():
        raise RaffError("main config not found", file=main)
    if folder.exists() and any(folder.iterdir()):
        raise RaffError("already exists and is not empty; choose a new folder", file=folder)
    if folder.resolve() == main.resolve().parent:
        raise RaffError("would write beside the original; choose another folder", file=folder)
    doc = load_yaml(main, "main config")
    libs = [load_yaml(main.parent / p, "library file")
            for p in _strings(doc.get("libraries"), "libraries", main)] if isinstance(doc, dict) else []
    if detect(doc) is None and not any(detect(lib) for lib in libs):
        raise RaffError(f"not a {FORMAT_10} library (no system_settings, tasks or module_name); "
                        "raff reads it as it is", file=main)
    folder.mkdir(parents=True, exist_ok=True)
    done = migrate(main, folder)

    def n(k: int, word: str) -> str:
        return f"{k} {word}{'s' * (k != 1)}"

    templates = f"; {n(done['templates'], 'procedure')} with template parameters" if done["templates"] else ""
    if done["explicit"]:  # templates that set the daq server, which 0.1.2 roots as daq.server
        templates += f"; {n(done['explicit'], 'procedure')} with templates written as explicit points"
    print(f"{folder / 'main_config.yaml'}: {n(done['procedures'], 'procedure')} and "
          f"{n(done['workflows'], 'workflow')} in the {FORMAT_012} format, {n(done['configs'], 'config file')} "
          f"in {folder / 'configs'}{templates}")
    print(f"{main} is unchanged; user analyses are found with -a PATH (or copy analyses/ beside the new main)")
    return 0
