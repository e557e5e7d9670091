"""The emulator process: sockets and the one loop that serves them.

Three REP servers (daq server, slow control, daq-client), the daq server's
data PUSH socket and the daq-client's PULL socket, all served by one poll
loop: a run's due data messages are pushed between polls, so every socket
stays responsive while a run goes on. A server that would have died stops
answering (its socket is closed) and says so once on stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field

import zmq

from raffinerie.config.daqconfig import Generation
from raffinerie.emulator.daqclient import Client2021, MenusDaqClient
from raffinerie.emulator.daqserver import Bench, Daq2021Server, MenusDaqServer
from raffinerie.emulator.model import Board
from raffinerie.emulator.slowcontrol import HccServer, I2cServer2021
from raffinerie.emulator.stream import DataPush
from raffinerie.emulator.target import Target
from raffinerie.emulator.wire import Died, EventLog, Faults, Served
from raffinerie.hgcroc import CHIPS_PER_BOARD, DEFAULT_BOARD

MAX_WAIT = 0.05  # seconds between checks of the stop flag and the parent


@dataclass
class Options:
    host: str = "127.0.0.1"
    server_port: int = 6000
    target_port: int = 5555
    client_port: int = 6001
    data_port: int | None = None       # None: bound by the daq config, as the real servers do
    generation: Generation = Generation.MENUS
    slow_control: str | None = None    # "hcc" | "zmq-i2c"; default follows the generation
    seed: int = 0
    board: str = DEFAULT_BOARD         # "LD" (3 ROCs) or "HD" (6 ROCs)
    rate: float | None = None
    log: str | None = None
    faults: Faults = field(default_factory=Faults)
    dead: tuple = ()                   # (chip, channel) of defective channels of the board
    noisy: tuple = ()
    untunable: tuple = ()              # (chip, channel) out of its trims' reach

    @property
    def slow_control_kind(self) -> str:
        if self.slow_control:
            return self.slow_control
        return "hcc" if self.generation is Generation.MENUS else "zmq-i2c"


class Emulator:
    def __init__(self, options: Options):
        self.options = o = options
        self.ctx = zmq.Context()
        self.log = EventLog(o.log)
        self.stopped = False
        self.requests = 0
        self.sockets: dict[str, zmq.Socket] = {}
        self.silenced: list[zmq.Socket] = []   # open, never answering again
        try:
            self._build(o)
        except zmq.ZMQError:
            self.close()
            raise

    def _build(self, o: Options) -> None:
        board = Board(o.seed, CHIPS_PER_BOARD[o.board], dead=o.dead, noisy=o.noisy, untunable=o.untunable)
        target = Target(board.n_chips)
        push = DataPush(self.ctx, o.host, o.data_port)
        bench = Bench(board, target, push, o.faults, self.log, o.rate)
        menus = o.generation is Generation.MENUS
        hcc = o.slow_control_kind == "hcc"
        self.push = push
        self.servers: dict[str, Served] = {
            "daq": (MenusDaqServer if menus else Daq2021Server)(bench),
            "slow_control": (HccServer if hcc else I2cServer2021)(target, o.faults, self.log),
            "client": (MenusDaqClient if menus else Client2021)(self.ctx, o.faults, self.log),
        }
        for name, port in (("daq", o.server_port), ("slow_control", o.target_port),
                           ("client", o.client_port)):
            self.sockets[name] = self._bind_rep(port)

    def _bind_rep(self, port: int) -> zmq.Socket:
        sock = self.ctx.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            if port:
                sock.bind(f"tcp://{self.options.host}:{port}")
            else:
                sock.bind_to_random_port(f"tcp://{self.options.host}")
        except zmq.ZMQError:
            sock.close(0)
            raise
        return sock

    def announcement(self) -> dict:
        o = self.options
        return {"host": o.host, "server": _port(self.sockets["daq"]),
                "target": _port(self.sockets["slow_control"]), "data": self.push.port,
                "client": _port(self.sockets["client"]), "generation": o.generation.value,
                "slow_control": o.slow_control_kind, "board": o.board, "pid": os.getpid()}

    # -- the loop ---------------------------------------------------------------------

    def serve(self) -> None:
        """Serve until `stopped` is set (signal) or the parent process is gone."""
        parent = os.getppid()
        while not self.stopped:
            if os.getppid() != parent:
                break  # orphaned: the parent died without stopping us
            wake = self._tick()
            poller, pulls = self._poller()
            timeout = MAX_WAIT if wake is None else min(MAX_WAIT, max(wake - time.monotonic(), 0.0))
            ready = dict(poller.poll(timeout * 1000))
            for sock, name in pulls.items():   # data first: files are complete sooner
                if sock in ready:
                    self._drain(name, sock)
            for name, sock in list(self.sockets.items()):
                if sock in ready and name in self.sockets:
                    self._request(name, sock)

    def _tick(self) -> float | None:
        now = time.monotonic()
        wakes = [w for w in (s.tick(now) for s in self.servers.values()) if w is not None]
        return min(wakes) if wakes else None

    def _poller(self):
        poller = zmq.Poller()
        for sock in self.sockets.values():
            poller.register(sock, zmq.POLLIN)
        pulls = {}
        for name, server in self.servers.items():
            sock = server.pull_socket()
            if sock is not None:
                poller.register(sock, zmq.POLLIN)
                pulls[sock] = name
        return poller, pulls

    def _drain(self, name: str, sock: zmq.Socket) -> None:
        server = self.servers[name]
        try:
            while server.pull_socket() is sock:
                server.on_data(sock.recv(zmq.NOBLOCK, copy=True))
        except zmq.Again:
            pass
        except Died as exc:
            self._kill(name, str(exc))

    def _request(self, name: str, sock: zmq.Socket) -> None:
        frames = sock.recv_multipart()
        self.requests += 1
        entry = {"server": name, "command": None, "frames": len(frames)}
        silent = self.options.faults.silent_after
        if silent is not None and self.requests > silent:
            self.log.write({**entry, "command": _peek(frames), "ignored": True})
            # a REP socket that never replies takes no new request: keep it open, unpolled
            self.silenced.append(self.sockets.pop(name))
            return
        server = self.servers[name]
        try:
            reply = server.handle(frames, entry)
        except Died as exc:
            self.log.write({**entry, "died": True})
            self._kill(name, str(exc))
            return
        self.log.write(entry)
        sock.send_string(reply)
        if server.finished:
            self._kill(name, f"the {name} server stopped on request", quiet=True)

    def _kill(self, name: str, why: str, quiet: bool = False) -> None:
        """That server is dead: its sockets close, it never answers again."""
        if not quiet:
            print(f"raff emulator: {name} server died: {why}", file=sys.stderr, flush=True)
        sock = self.sockets.pop(name, None)
        if sock is not None:
            sock.close(0)
        self.servers[name].close()

    def close(self) -> None:
        self.stopped = True
        for server in getattr(self, "servers", {}).values():
            server.close()
        for sock in [*self.sockets.values(), *self.silenced]:
            sock.close(0)
        self.sockets, self.silenced = {}, []
        self.ctx.term()
        self.log.close()


def _port(sock: zmq.Socket) -> int:
    return int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])


def _peek(frames: list[bytes]) -> str:
    return frames[0][:40].decode("utf-8", errors="replace") if frames else ""


def announce_line(emulator: Emulator) -> str:
    return json.dumps(emulator.announcement())
