"""Where an analysis's code is, and a digest of it that ignores comments and layout.

The digest of an analysis is taken over its module and every project-local
module it imports, transitively. Each file is normalised through its syntax
tree (comments, blank lines, formatting and docstrings drop out), written out
the same way by every Python version, so only a change of behaviour changes
the key. Digests are computed once per file per
`CodeIndex`, i.e. once per build, however many nodes share them, and kept
by the file's text between builds (raffinerie/memo.py: 10-50 ms a module).

Light on purpose: `raff plan` uses it.
"""

from __future__ import annotations

import ast
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from raffinerie import memo
from raffinerie.errors import RaffError, did_you_mean, nearest
from raffinerie.inputs import record

_MEMO_STEP = "analysis-code:" + memo.code_of(__file__)  # at import: the code that runs is the code named

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
# raffinerie's own modules an analysis imports (`from raffinerie.analysis.hexmap import hexmap`)
# are part of its code: a new hexmap redraws its plots. Named from the package's parent.
PACKAGE_PARENT = Path(__file__).resolve().parents[2]
BUILTIN_PREFIX = "builtin."


@dataclass(frozen=True)
class Source:
    """Where a distillery class lives."""

    file: Path          # the module file
    root: Path          # imports resolve under here (the analysis path, or the built-ins)
    class_name: str | None
    module: str         # importable name under `root` ("" for a single .py file)
    builtin: bool = False


def locate(module: str, analysis: str, analysis_path: Path | None, where) -> Source:
    """The file and class of `module` (a procedure's `module:` or name)."""
    if module.startswith(BUILTIN_PREFIX):
        name = module[len(BUILTIN_PREFIX):]
        file = BUILTIN_DIR / f"{name}.py"
        if not file.is_file() or name.startswith("_"):
            raise RaffError(f"analysis '{analysis}': no built-in analysis '{module}'{_builtins(name)}",
                            file=where.file, line=where.line)
        return Source(file, BUILTIN_DIR, None, name, builtin=True)
    if analysis_path is None:  # where user modules are looked for, as the README says
        raise RaffError(f"analysis '{analysis}': module '{module}' not found{_given(module, analysis)}: "
                        f"there is no analyses/ folder beside the main config to look for {module}.py in "
                        f"(or give -a PATH, or $RAFF_ANALYSIS_PATH){_builtins(module)}",
                        file=where.file, line=where.line)
    path = Path(analysis_path)
    if path.is_file() and path.suffix == ".py":
        return Source(path, path.parent, module, path.stem)
    if path.is_dir():
        candidate = path / f"{module}.py"
        record(candidate)  # looked for: one that appears later is a change
        record(path / "__init__.py")
        if candidate.is_file():
            return Source(candidate, path, module, module)
        if (path / "__init__.py").is_file():
            return Source(path / "__init__.py", path.parent, module, path.name)
        raise RaffError(f"analysis '{analysis}': module '{module}' not found{_given(module, analysis)}: "
                        f"no {candidate.name} in {path}{_builtins(module)}", file=where.file, line=where.line)
    raise RaffError(f"analysis path {path} is neither a .py file nor a folder", file=where.file,
                    line=where.line)


def _given(module: str, analysis: str) -> str:
    return " (no `module:`, so its name)" if module == analysis else ""


def _builtins(name: str) -> str:
    """`; built-ins: ...` and the nearest one, for a module that is not there."""
    # the analyses, not the modules they share (common, thresholds, trims): those name no DISTILLERY
    known = sorted(p.stem for p in BUILTIN_DIR.glob("[!_]*.py") if "\nDISTILLERY = " in p.read_text())
    close = nearest(name, known)
    hint = f" (did you mean '{BUILTIN_PREFIX}{close[0]}'?)" if close else ""
    return f"; built-ins: {', '.join(BUILTIN_PREFIX + k for k in known)}{hint}"


# Parameters of a built-in whose value names an analysis the procedure must `use` (its summary
# is read): `raff validate` checks them without importing the analysis. Each class says the same
# in `naming_parameters`, and tests/test_tuned_config.py holds the two together.
NAMING_PARAMETERS: dict[str, tuple[str, ...]] = {"tuned_config": ("before", "gain")}


def module_check(main: Path, given: Path | str | None):
    """`check(analysis)` for `raff validate`: raises the RaffError a build would if the
    analysis's code cannot be found, and returns the problems of its parameters that name
    analyses, as (place in the procedure, message) (nothing is imported)."""
    path = analysis_path_for(main, given)

    def check(proc) -> list[tuple[tuple, str]]:
        locate(proc.module, proc.name, path, proc.origin)
        return naming_problems(proc)
    return check


def naming_problems(proc) -> list[tuple[tuple, str]]:
    """A parameter of a built-in that names an analysis the procedure does not `use`: the build
    would fail only when the analysis runs, after everything it stands on."""
    if not proc.module.startswith(BUILTIN_PREFIX):
        return []
    out = []
    for parameter in NAMING_PARAMETERS.get(proc.module[len(BUILTIN_PREFIX):], ()):
        name = proc.parameters.get(parameter)
        if name is None or name in proc.uses:
            continue
        uses = ", ".join(proc.uses[:6]) + (f" and {len(proc.uses) - 6} more" if len(proc.uses) > 6 else "")
        out.append((("parameters", parameter),
                    f"'{name}' is not an analysis '{proc.name}' uses"
                    f"{did_you_mean(str(name), proc.uses)}: add it to `uses:` (it uses {uses or 'none'})"))
    return out


def analysis_path_for(main: Path, given: Path | str | None) -> Path | None:
    """-a PATH, else $RAFF_ANALYSIS_PATH, else analyses/ beside the main config."""
    if given:
        return Path(given)
    env = os.environ.get("RAFF_ANALYSIS_PATH")
    if env:
        return Path(env)
    default = Path(main).resolve().parent / "analyses"
    return default if default.is_dir() else None


def code_provider(main: Path, given: Path | str | None):
    """`code(procedure)` for the planner: digests of each analysis's code."""
    index = CodeIndex(analysis_path_for(main, given))
    return lambda proc: index.digests(locate(proc.module, proc.name, index.analysis_path, proc.origin))


def normalised(source: str) -> str:
    """The module's syntax tree without docstrings, written out in a version-proof way.

    Comments, blank lines, layout and redundant parentheses drop out. Not
    `ast.dump`: its text differs between Python versions (3.12 added empty
    `type_params` fields, 3.13 leaves out empty ones), so an interpreter
    upgrade would rerun every analysis. Here every node is its class name and
    its non-empty fields in name order, which is the same in 3.11, 3.12, 3.13.
    """
    return _normalised_tree(ast.parse(source))


def _normalised_tree(tree: ast.AST) -> str:
    """`normalised` of a parsed module (its docstrings are taken out of `tree`)."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    out: list[str] = []
    _write(tree, out)
    return "".join(out)


def _write(value, out: list[str]) -> None:
    if isinstance(value, ast.AST):
        out.append(type(value).__name__ + "(")
        for name in sorted(value._fields):
            field = getattr(value, name, None)
            if field is None or field == [] or name in _VERSION_FIELDS:
                continue
            out.append(name + "=")
            _write(field, out)
            out.append(",")
        out.append(")")
    elif isinstance(value, list):
        out.append("[")
        for item in value:
            _write(item, out)
            out.append(",")
        out.append("]")
    else:
        out.append(repr(value))


_VERSION_FIELDS = {"type_comment", "kind"}  # None almost always; `kind` is the u"" prefix


class CodeIndex:
    """Digests of analysis code, each file read and parsed once."""

    def __init__(self, analysis_path: Path | None = None):
        self.analysis_path = Path(analysis_path) if analysis_path else None
        self._files: dict[Path, tuple[str, list[Path]]] = {}

    def digests(self, source: Source) -> dict[str, str]:
        """{file name relative to its root: digest} of the module and its local imports."""
        out: dict[str, str] = {}
        todo = [source.file]
        while todo:
            file = todo.pop()
            name = _relative(file, source.root)
            if name in out:
                continue
            digest, imports = self._file(file, source.root)
            out[name] = digest
            todo.extend(imports)
        return dict(sorted(out.items()))

    def _file(self, file: Path, root: Path) -> tuple[str, list[Path]]:
        if file not in self._files:
            record(file)
            try:
                text = file.read_text(encoding="utf-8")
                digest, specs = memo.parsed(_MEMO_STEP, text,
                                            lambda: _digest_and_imports(text), min_chars=0)
                imports = _local_imports(specs, file, root)
            except SyntaxError as exc:
                raise RaffError(f"syntax error in analysis code: {exc.msg}", file=file,
                                line=exc.lineno) from None
            except OSError as exc:
                raise RaffError(f"cannot read analysis code: {exc.strerror}", file=file) from None
            self._files[file] = (digest, imports)
        return self._files[file]


def _digest_and_imports(text: str) -> tuple[str, list]:
    """The digest of the module's normalised tree, and its imports as (level, module, names)."""
    tree = ast.parse(text)
    specs = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            specs.append((0, None, [alias.name for alias in node.names]))
        elif isinstance(node, ast.ImportFrom):
            specs.append((node.level, node.module, [alias.name for alias in node.names]))
    return hashlib.sha256(_normalised_tree(tree).encode()).hexdigest()[:16], specs


def _relative(file: Path, root: Path) -> str:
    for base in (root, PACKAGE_PARENT):
        try:
            return file.relative_to(base).as_posix()
        except ValueError:
            continue
    return file.name


def _local_imports(specs: list, file: Path, root: Path) -> list[Path]:
    """Files under `root` that the module imports: `specs` are its imports as (level, module, names),
    `import a.b` as (0, None, ['a.b'])."""
    found = []
    for level, module, aliases in specs:
        if level:  # from . import x, from ..pkg import y
            base = file.parent
            for _ in range(level - 1):
                base = base.parent
            target = base.joinpath(*module.split(".")) if module else base
            found += _module_files(target) + [f for a in aliases for f in _module_files(target / a)]
            continue
        names = list(aliases) if module is None else [module] + [f"{module}.{a}" for a in aliases]
        for name in names:
            base = PACKAGE_PARENT if name.split(".")[0] == "raffinerie" else root
            found += _module_files(base.joinpath(*name.split(".")))
    return [f for f in found if f != file]


def _module_files(stem: Path) -> list[Path]:
    if stem.with_suffix(".py").is_file():
        return [stem.with_suffix(".py")]
    if (stem / "__init__.py").is_file():
        return [stem / "__init__.py"]
    return []
