"""Slow control of the target: HCC (menu generation) or the 2021 zmq-i2c server.

Both write register values shaped `{roc_s0: {Block: {index: {param: value}}}}`
and read them back. They differ in how (hexactrl-protocol.md):

- HCC (hgcroc-configuration-client): one YAML request `{type, status: send,
  read_back, from_hardware, args}`, one YAML reply `{type, status, args,
  errmsg}`; `describe` gives the board's registers and ranges; the master-TDC
  reset is two `set`s of every ROC's `MasterTdc` `START_COUNTER`, 0 then 1.
- zmq-i2c (zmq_server.py): the READY handshake, replies `ROC(s) CONFIGURED`,
  errors start with `E:`, and `resettdc` resets the master TDCs.
"""

from __future__ import annotations

import yaml

from raffinerie.daq.daqcontrol import dump
from raffinerie.daq.transport import BackendError, Endpoint, quote

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
PHASE_PARAMETERS = ("phase_strobe", "phase_ck")
SHOWN = 8  # registers named in one message at most


def changes_phase(written: dict) -> bool:
    """Whether a write touches a sampling phase (the master TDCs must be reset after it)."""
    for blocks in written.values():
        top = blocks.get("Top") if isinstance(blocks, dict) else None
        if isinstance(top, dict) and any(isinstance(p, dict) and any(n in p for n in PHASE_PARAMETERS)
                                         for p in top.values()):
            return True
    return False


def leaves(tree: dict, prefix: tuple = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def _get(tree, path):
    for part in path:
        if not isinstance(tree, dict):
            return None
        tree = tree[part] if part in tree else tree.get(str(part))  # YAML may give "0" for 0
    return tree


def differences(written: dict, read: dict) -> list[str]:
    """`place: wrote X, read Y` for every written register that reads back otherwise."""
    out = []
    for path, value in leaves(written):
        got = _get(read, path)
        if got != value:
            out.append(f"{'.'.join(map(str, path))}: wrote {value!r}, read {got!r}")
    return out


def _names(paths: list[str]) -> str:
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return "; ".join(paths[:SHOWN]) + more


class HccTarget:
    """The HCC slow-control server of the menu generation."""

    def __init__(self, endpoint: Endpoint, other_hint: str):
        self.ep, self.other_hint = endpoint, other_hint
        self.layout: dict = {}

    def _transaction(self, kind: str, args: dict, read_back: bool = False,
                     from_hardware: bool = False) -> dict:
        request = {"type": kind, "status": "send", "read_back": read_back,
                   "from_hardware": from_hardware, "args": args}
        reply = self.ep.request(dump(request), what=kind)
        try:
            doc = yaml.load(reply, Loader=_Loader)
        except yaml.YAMLError:
            doc = None
        if not isinstance(doc, dict) or doc.get("status") not in ("success", "error"):
            raise self.ep.refuse(kind, reply, "an HCC reply {type, status: success|error, args}",
                                 self.other_hint)
        if doc["status"] == "error":
            raise BackendError(f"{self.ep.name} refused '{kind}': {quote(str(doc.get('errmsg', '')))}")
        if doc.get("type") != kind:
            raise self.ep.refuse(kind, reply, f"a reply of type '{kind}'")
        args = doc.get("args")
        return args if isinstance(args, dict) else {}

    def initialize(self, full: dict) -> None:
        """describe (and check every register the procedure writes), reset, write it all."""
        described = self._transaction("describe", {})
        if len(described) != 1 or not isinstance(next(iter(described.values())), dict):
            raise BackendError(f"{self.ep.name} answered 'describe' with no board layout "
                               f"({quote(str(described))})")
        self.layout = next(iter(described.values()))
        missing = [".".join(map(str, p)) for p, _ in leaves(full) if not isinstance(_get(self.layout, p), dict)]
        if missing:
            raise BackendError(f"{self.ep.name} has no register {_names(missing)} (from its 'describe'); "
                               "the procedure writes them: is this the board the procedure is for?")
        self._transaction("reset", {})
        self.write(full)

    def write(self, config: dict) -> None:
        self._transaction("set", config)

    def read(self, config: dict) -> dict:
        wanted = {p: None for p, _ in leaves(config)}
        return self._transaction("get", _tree(wanted), from_hardware=True)

    def reset_tdc(self) -> None:
        for value in (0, 1):
            self.write({roc: {"MasterTdc": {i: {"START_COUNTER": value}
                                            for i in (blocks.get("MasterTdc") or {0: None, 1: None})}}
                        for roc, blocks in self.layout.items()})


class I2cTarget:
    """The 2021 zmq-i2c slow-control server (zmq_server.py)."""

    CONFIGURED = ("Configured", "ROC(s) CONFIGURED")

    def __init__(self, endpoint: Endpoint, other_hint: str):
        self.ep, self.other_hint = endpoint, other_hint

    def _handshake(self, command: str, doc: dict | None) -> str:
        reply = self.ep.request(command)
        if reply.startswith("E:"):
            raise BackendError(f"{self.ep.name} refused '{command}': {quote(reply[2:].strip())}")
        if "ready" not in reply.lower():
            hint = self.other_hint if "status" in reply else ""
            raise self.ep.refuse(command, reply, "'READY' (the 2021 handshake)", hint)
        return self.ep.request(dump(doc) if doc else "", what=f"{command} (its YAML)")

    def _configure(self, command: str, config: dict) -> None:
        reply = self._handshake(command, config)
        if reply.startswith("E:"):
            raise BackendError(f"{self.ep.name} refused '{command}': {quote(reply[2:].strip())}")
        if not reply.strip().startswith(self.CONFIGURED):
            raise self.ep.refuse(f"{command} (its YAML)", reply, "'ROC(s) CONFIGURED' or 'Configured'")

    def initialize(self, full: dict) -> None:
        self._configure("initialize", full)

    def write(self, config: dict) -> None:
        self._configure("configure", config)

    def read(self, config: dict) -> dict:
        reply = self._handshake("read", config)
        try:
            doc = yaml.load(reply, Loader=_Loader)
        except yaml.YAMLError:
            doc = None
        if not isinstance(doc, dict):
            raise self.ep.refuse("read (its YAML)", reply, "the YAML of the values read")
        return doc

    def reset_tdc(self) -> None:
        reply = self.ep.request("resettdc")
        if reply.startswith("E:") or "ready" in reply.lower():
            raise self.ep.refuse("resettdc", reply, "the YAML answer of the TDC reset")


def _tree(flat: dict) -> dict:
    out: dict = {}
    for path, value in flat.items():
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out
