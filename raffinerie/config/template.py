"""Rendering Datenraffinerie 1.0 `template` parameters: sandboxed, bounded, in a child process.

A template is text from a library file, which may come from anyone. A
plain `jinja2.Template` runs whatever it is given (`{{ cycler.__init__
.__globals__.os.system(...) }}` is a shell command) and loops as long as it
is told. So templates are rendered

- in jinja2's `ImmutableSandboxedEnvironment` (no attribute that starts
  with `_`, no methods that modify, no `lipsum`), with `StrictUndefined`
  (a misspelt name is an error, not an empty string);
- with a `range` whose lengths add up to at most MAX_RANGE per rendering
  (jinja2's sandbox bounds each range by that number, but not ten nested
  ones), `*` and `**` that refuse results beyond MAX_OUTPUT characters or
  MAX_INT_BITS bits, and output cut at MAX_OUTPUT characters;
- in a child process (`python -I` running this file) with at most
  CHILD_MEMORY of address space, whose every rendering must answer within
  RENDER_SECONDS: whatever a template does, it ends, and the child is
  killed when it does not (and by the kernel when raff ends).

The child gets the template and the value as YAML text and answers one
JSON line holding the rendered text, which the parent reads back as YAML
with the bounds of any configuration file.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from functools import lru_cache
from typing import Any

MAX_RANGE = 100_000          # jinja2.sandbox.MAX_RANGE: the items one rendering may loop over by range()
MAX_OUTPUT = 4 * 1024 * 1024  # characters of one rendering: ten times a whole HD hexaboard config (~340 kB)
MAX_INT_BITS = 4096          # an integer a template computes (a register is at most 32 bits)
MAX_REPLY = 8 * MAX_OUTPUT   # bytes of one JSON reply (escapes may lengthen the text)
RENDER_SECONDS = 10.0        # one rendering; a real template takes milliseconds
CHILD_MEMORY = 1 << 30       # address space of the child: a CPython with jinja2 uses ~30 MB
CHILD_CPU_SECONDS = 600      # the child's whole CPU time, should it outlive its parent while busy


class TemplateProblem(Exception):
    """A template that cannot be rendered (in the child: becomes the `error` of the reply)."""


class Renderer:
    """Renders templates in one child process, started on first use; a context manager."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None

    def render(self, template: str, value: Any) -> str:
        """`template` rendered with `value`; raises TemplateProblem with a one-line reason."""
        import yaml

        request = json.dumps({"template": template, "value": yaml.safe_dump(value)}) + "\n"
        proc = self._child()
        try:
            proc.stdin.write(request.encode())
            proc.stdin.flush()
        except OSError:
            raise TemplateProblem(self._death("before it was given the template")) from None
        reply = self._reply(time.monotonic() + RENDER_SECONDS)
        if "error" in reply:
            raise TemplateProblem(str(reply["error"]))
        text = reply.get("text")
        if not isinstance(text, str):
            raise TemplateProblem("the template renderer answered without a text")
        return text

    def _child(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.close()
            # -I: this file alone, with neither the current folder nor $PYTHONPATH on the path,
            # so that nothing beside the library can stand in for the renderer
            command = [sys.executable, "-I", os.path.abspath(__file__), str(os.getpid())]
            self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, cwd="/")
        return self.proc

    def _reply(self, deadline: float) -> dict:
        fd, buf = self.proc.stdout.fileno(), b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.close()
                raise TemplateProblem(f"rendering took more than {RENDER_SECONDS:g} s (stopped)")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise TemplateProblem(self._death("while rendering"))
            buf += chunk
            if len(buf) > MAX_REPLY:
                self.close()
                raise TemplateProblem(f"the rendering is longer than {MAX_OUTPUT:,} characters")
        try:
            reply = json.loads(buf.split(b"\n", 1)[0])
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            self.close()
            raise TemplateProblem("the template renderer answered something that is not its reply")
        return reply

    def _death(self, when: str) -> str:
        code = self.proc.wait() if self.proc is not None else None
        self.close()
        if code is not None and code < 0:
            return (f"the template renderer was killed {when} (signal {-code}; a template may use at "
                    f"most {CHILD_MEMORY >> 20} MiB and {CHILD_CPU_SECONDS} s of CPU)")
        return f"the template renderer ended {when} (status {code})"

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.proc = None

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- the child ----------------------------------------------------------------------------

def _environment():
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

    class Bounded(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**"])

        def call_binop(self, context, operator, left, right):
            _check_binop(operator, left, right, SecurityError)
            return super().call_binop(context, operator, left, right)

    env = Bounded(undefined=StrictUndefined, autoescape=False, cache_size=0)
    env.globals.pop("lipsum", None)  # lipsum(n) makes n paragraphs in one call
    return env


def _check_binop(operator: str, left: Any, right: Any, error: type) -> None:
    """Refuse `*` and `**` whose result would be huge, before Python computes it."""
    ints = all(isinstance(x, int) and not isinstance(x, bool) for x in (left, right))
    if operator == "**" and ints and right > 0 and abs(left) > 1:
        if (abs(left).bit_length() - 1) * right > MAX_INT_BITS:
            raise error(f"{left} ** {right} has more than {MAX_INT_BITS} bits")
    elif operator == "*" and ints:
        if abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS + 1:
            raise error(f"a product of more than {MAX_INT_BITS} bits")
    elif operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(times, int) \
                    and len(seq) * max(times, 0) > MAX_OUTPUT:
                raise error(f"repeating {type(seq).__name__} of {len(seq):,} items {times:,} times "
                            f"makes more than {MAX_OUTPUT:,}")


class _Budget:
    """The range() items left to one rendering."""

    def __init__(self):
        self.left = MAX_RANGE

    def range(self, *args) -> range:
        from jinja2.sandbox import SecurityError

        r = range(*args)
        if len(r) > self.left:
            raise SecurityError(f"the template's ranges add up to more than {MAX_RANGE:,} items "
                                "(jinja2's sandbox limit for one range)")
        self.left -= len(r)
        return r


def _render_one(env, compiled, template: str, value: Any) -> str:
    out, size = [], 0
    for piece in compiled(template).generate(value=value, range=_Budget().range):
        size += len(piece)
        if size > MAX_OUTPUT:
            raise TemplateProblem(f"the rendering is longer than {MAX_OUTPUT:,} characters")
        out.append(piece)
    return "".join(out)


def _answer(env, compiled, line: bytes) -> dict:
    import yaml

    try:
        request = json.loads(line)
        value = yaml.safe_load(request["value"])
        return {"text": _render_one(env, compiled, request["template"], value)}
    except TemplateProblem as exc:
        return {"error": str(exc)}
    except MemoryError:
        return {"error": f"the template needs more than {CHILD_MEMORY >> 20} MiB"}
    except RecursionError:
        return {"error": "the template is nested or recurses too deeply"}
    except Exception as exc:  # any jinja2 error (syntax, undefined, sandbox, type): one line
        text = " ".join(str(exc).split())[:300]
        return {"error": f"{type(exc).__name__}: {text}" if text else type(exc).__name__}


def _die_with_parent(parent: int) -> None:
    """Be killed when raff ends, even in the middle of a rendering (Linux; elsewhere stdin's EOF).
    raffinerie.lifetime's, written again: this file runs alone under `python -I`, which imports
    nothing of raffinerie's."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # raff ended before the request to the kernel was made
        sys.exit(0)


def serve(parent: int) -> None:
    """The child: one request per line on stdin, one JSON reply per line on stdout."""
    import resource

    _die_with_parent(parent)
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    resource.setrlimit(resource.RLIMIT_CPU, (CHILD_CPU_SECONDS, CHILD_CPU_SECONDS))
    env = _environment()
    compiled = lru_cache(maxsize=64)(env.from_string)
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        reply = _answer(env, compiled, line)
        try:
            data = json.dumps(reply)
        except MemoryError:
            data = json.dumps({"error": f"the template needs more than {CHILD_MEMORY >> 20} MiB"})
        out.write(data.encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
