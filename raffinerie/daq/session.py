"""A session with one backend: slow control, daq server and the data, in the protocols it speaks.

Per point the session sends the target only what differs from its state
(the full configuration once, after connecting), resets the master TDCs
after every change of a sampling phase, configures the daq server when its
settings changed, runs, and returns the bytes of one .raw file. Every
request has a timeout, every reply is checked against what the server sends
on success; an error names the host, the port, the command and the reply.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import zmq

from raffinerie.config.daqconfig import Generation, generation_of, run_problems, server_section
from raffinerie.config.parameters import load_table
from raffinerie.config.network import Host, Network, Protocols, Readout, SlowControl
from raffinerie.daq.daqcontrol import control
from raffinerie.daq.readout import ClientReadout, StreamReadout, wait
from raffinerie.daq.slowcontrol import HccTarget, I2cTarget, changes_phase, differences
from raffinerie.daq.transport import BackendError, Endpoint, Watch, no_watch
from raffinerie.errors import RaffError

__all__ = ["BackendError", "DaqSession", "Run", "config_diff"]
OTHER = {Generation.MENUS: Generation.Y2021, Generation.Y2021: Generation.MENUS,
         SlowControl.HCC: SlowControl.ZMQ_I2C, SlowControl.ZMQ_I2C: SlowControl.HCC}


def config_diff(current: dict, wanted: dict) -> dict:
    """The part of `wanted` that differs from `current` (leaves and new keys)."""
    out = {}
    for key, value in wanted.items():
        old = current.get(key, _MISSING) if isinstance(current, dict) else _MISSING
        if old is value:
            continue  # shared, untouched branch of consecutive points' configs
        if isinstance(value, dict) and isinstance(old, dict):
            sub = config_diff(old, value)
            if sub:
                out[key] = sub
        elif old is _MISSING or old != value or type(old) is not type(value):
            out[key] = value
    return out


_MISSING = object()


@dataclass
class Run:
    raw: bytes
    messages: int
    seconds: float


class DaqSession:
    """One connection to a backend (daq server, slow control, data)."""

    def __init__(self, network: Network, data: Host, protocols: Protocols, readback: bool = False,
                 watch: Watch = no_watch):
        """`watch` raises when the backend process is known to be dead (the embedded emulator)."""
        self.network, self.data_host, self.protocols = network, data, protocols
        self.timeout, self.readback, self.watch = network.timeout, readback, watch
        self.ctx = zmq.Context()
        gen, slow = protocols.generation, protocols.slow_control
        gen_hint = self._hint("generation", gen)
        self.server = control(gen, Endpoint(self.ctx, "daq server", network.server, self.timeout,
                                            gen_hint, watch), "server", gen_hint)
        slow_hint = self._hint("slow_control", slow)
        target_ep = Endpoint(self.ctx, "slow control", network.target, self.timeout, slow_hint, watch)
        self.target = (HccTarget if slow is SlowControl.HCC else I2cTarget)(target_ep, slow_hint)
        self.client = None
        try:
            if protocols.readout is Readout.PULL:
                self.readout = StreamReadout(self.ctx, data, self.timeout, watch)
            else:
                client_ep = Endpoint(self.ctx, "daq-client", network.client, self.timeout, gen_hint, watch)
                self.client = control(gen, client_ep, "client", gen_hint)
                self.readout = ClientReadout(self.client, network.client_output, self.timeout, watch)
        except BaseException:
            self.close()
            raise
        self.target_state: dict | None = None
        self.server_core: dict | None = None   # menus: what `initialize` sent
        self.menu: tuple | None = None         # menus: (active menu, its settings) configured
        self.server_sent: dict | None = None   # 2021: the server section configured
        self.client_sent: dict | None = None
        self.tdc_resets = 0

    def _hint(self, setting: str, current) -> str:
        other = OTHER[current].value
        return (f"a server that speaks {setting.replace('_', ' ')} '{other}' stops answering or answers "
                f"otherwise; if this one does, {self.network.setting_hint(setting, other)}")

    def close(self) -> None:
        for endpoint in (self.server.ep, self.target.ep) + ((self.client.ep,) if self.client else ()):
            endpoint.close()
        if hasattr(self, "readout") and isinstance(self.readout, StreamReadout):
            self.readout.close()
        self.ctx.term()

    def __enter__(self) -> "DaqSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- configuration ----------------------------------------------------------

    def configure(self, target: dict, daq: dict) -> None:
        """Bring the backend to this point's configuration, sending only changes."""
        self._configure_target(target)
        self._configure_daq(daq)

    def _configure_target(self, target: dict) -> None:
        if self.target_state is None:
            _check_registers(target)
            self.target.initialize(target)
            written, phase = target, True  # after power-on the TDCs need a reset anyway
        else:
            written = config_diff(self.target_state, target)
            if written:
                _check_registers(written)
                self.target.write(written)
            phase = changes_phase(written)
        self.target_state = target
        if written and self.readback:
            wrong = differences(written, self.target.read(written))
            if wrong:
                raise BackendError(f"{self.target.ep.name}: {len(wrong)} register(s) read back "
                                   f"otherwise than written: " + "; ".join(wrong[:8])
                                   + (f" and {len(wrong) - 8} more" if len(wrong) > 8 else ""))
        if phase:
            self.target.reset_tdc()
            self.tdc_resets += 1

    def _configure_daq(self, daq: dict) -> None:
        gen = self.protocols.generation
        if generation_of(daq) is not gen:
            has = "has `server.menus`" if gen is Generation.Y2021 else "has no `server.menus`"
            raise RaffError(f"the daq config {has} (generation {generation_of(daq).value}) but the "
                            f"backend speaks generation {gen.value}: use a daq config of that "
                            f"generation, or {self.network.setting_hint('generation', generation_of(daq).value)}",
                            file=self.network.file)
        problems = run_problems(daq)
        if problems:  # the last line: validate checks every source, this the sum of them
            raise RaffError(f"the daq config of this point: {'; '.join(problems.values())}; "
                            "nothing was sent to the daq server")
        server = {**server_section(daq), "zmqPushPull_port": self.data_host.port}
        if gen is Generation.MENUS:
            self._configure_menus(server)
        elif server != self.server_sent:
            self.server.configure(server)
            self.server_sent = server
        if self.client is not None:
            self._configure_client(daq.get("client") or {})

    def _configure_menus(self, server: dict) -> None:
        core = {k: v for k, v in server.items() if k not in ("menus", "active_menu")}
        if core != self.server_core:
            self.server.initialize(server)  # links, menus, the data port: all set at initialize
            self.server_core, self.menu = core, None
        name = server.get("active_menu")
        settings = (server.get("menus") or {}).get(name)
        if not isinstance(settings, dict):
            known = ", ".join(map(str, server.get("menus") or {})) or "none"
            raise RaffError(f"the daq config's server.active_menu {name!r} is not one of its menus "
                            f"({known})", file=self.network.file)
        if self.menu != (name, settings):
            self.server.configure({"active_menu": name, "menus": {name: settings}})
            self.menu = (name, settings)

    def _configure_client(self, client: dict) -> None:
        port_key = "zmqPushPull_port" if self.protocols.generation is Generation.MENUS else "data_push_port"
        client = {**client, "serverIP": self.data_host.hostname, port_key: self.data_host.port}
        if self.protocols.generation is Generation.MENUS and client != self.client_sent:
            self.client.initialize(client)  # it connects its puller here
        self.client_sent = client

    # -- a run ----------------------------------------------------------------------

    def acquire(self, target: dict, daq: dict) -> Run:
        """Configure, run, and return the run's bytes (one .raw file image)."""
        t0 = time.monotonic()
        self.configure(target, daq)
        if isinstance(self.readout, StreamReadout):
            self.readout.begin()
            self.server.start()
            raw, count = self.readout.receive()
            self._end_run(lambda: 0)
        else:
            # a 2021 zmq-client takes its whole section per run; a menus daq-client only the folder
            section = self.client_sent if self.protocols.generation is Generation.Y2021 else {}
            self.readout.begin(section)
            try:
                self.server.start()
                self._end_run(self.readout.progress, self.readout.ended)
                raw, count = self.readout.collect(), 1
            except BaseException:
                self.readout.abandon()
                raise
        return Run(raw, count, time.monotonic() - t0)

    def _end_run(self, alive, ended=lambda: False) -> None:
        """Wait for the server to end the run (menus: by itself; 2021: `run_done`, then `stop`)."""
        wait(self.server.finished, alive, self.timeout, f"the run on the {self.server.ep.name}", ended,
             self.watch)
        if self.protocols.generation is Generation.Y2021:
            self.server.stop()


def _check_registers(written: dict) -> None:
    """Refuse register values that do not fit before any is sent (a calibration's, say).

    `raff validate` checks every file and scan value; this checks what the
    sum of them sends, so nothing that slipped past reaches a board.
    """
    problems = [f"{'.'.join(map(str, path))}: {problem}" for path, problem in load_table().problems(written)]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise RaffError(f"the target config of this point: {'; '.join(problems[:3])}{more}; "
                        "nothing was sent to the slow control")
