"""The backend a build talks to: the embedded emulator, or the hosts of a network file."""

from __future__ import annotations

import hashlib
import os
import re

from raffinerie.config.daqconfig import Generation, generation_of, server_section
from raffinerie.config.resolve import server_setting
from raffinerie.hgcroc import DEFAULT_CHIPS, board_for_chips
from raffinerie.config.network import Host, Network
from raffinerie.daq.session import DaqSession
from raffinerie.daq.transport import no_watch
from raffinerie.errors import RaffError


class Backend:
    """Opened on first use (a build with nothing to acquire starts nothing)."""

    def __init__(self, network: Network | None, seed: int, store, progress, readback: bool = False):
        self.network, self.seed, self.store, self.progress = network, seed, store, progress
        self.readback = readback
        self.emulator = None
        self._playing: tuple[Generation, str] | None = None
        self.session: DaqSession | None = None
        self._lock = None

    def open(self, daq_config: dict) -> DaqSession:
        if self.session is not None:
            if self.network is None and self._emulated(daq_config) != self._playing:
                self.close()  # the embedded emulator plays the generation and board the daq config is for
            else:
                return self.session
        watch = no_watch  # a remote backend: only its silence tells
        if self.network is None:
            network, data = self._start_emulator(daq_config)
            watch = self.emulator.watch  # a dead emulator is named at once, not after a timeout
        else:
            network = self.network
            data = network.data or Host(network.server.hostname, _data_port(daq_config, network))
            self._lock = self.store.lock(_lock_name(network.server), wait=True)
            self._lock.__enter__()  # one build at a time talks to a hexacontroller
        protocols = network.protocols(daq_config)
        if network is self.network:
            self.progress.info(f"backend: daq server {network.server} (generation {protocols.generation.value}), "
                               f"slow control {network.target} ({protocols.slow_control.value}), "
                               f"data by {protocols.readout.value} from {data}")
        self.session = DaqSession(network, data, protocols, self.readback, watch)
        return self.session

    @staticmethod
    def _emulated(daq_config: dict) -> tuple[Generation, str]:
        """The generation and the board the embedded emulator plays for a daq config: an HD
        hexaboard where NChips asks for more ROCs than an LD one has."""
        chips = server_setting(daq_config, "NChips", DEFAULT_CHIPS)
        return generation_of(daq_config), board_for_chips(chips)

    def _start_emulator(self, daq_config: dict):
        from raffinerie.emulator.process import EmulatorProcess

        generation, board = self._playing = self._emulated(daq_config)
        rate = os.environ.get("RAFF_EMULATOR_TRIGGER_RATE")  # pace it like hardware (benchmarks)
        extra = ["--trigger-rate", rate] if rate else []
        self.emulator = EmulatorProcess(seed=self.seed, generation=generation, extra_args=extra,
                                        board=board).start()
        network = self.emulator.network
        self.progress.info(f"backend: embedded emulator ({board} hexaboard, seed {self.seed}, generation "
                           f"{generation.value}) on {network.server.hostname}")
        return network, network.data

    def emulator_cpu(self) -> float:
        """CPU seconds the embedded emulator has used so far (0 without one)."""
        return (self.emulator.cpu_seconds() or 0.0) if self.emulator is not None else 0.0

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _data_port(daq_config: dict, network: Network) -> int:
    port = server_section(daq_config).get("zmqPushPull_port", 8888)
    try:
        return int(port)
    except (TypeError, ValueError):
        raise RaffError(f"the daq config's server.zmqPushPull_port {port!r} is not a port number "
                        "(or name the data host in the network file as `data:`)",
                        file=network.file) from None


def _lock_name(server: Host) -> str:
    """The name of the lock on a daq server: a safe file name whatever the network file's hostname.

    A hostname is the network file's text: a `/` in it would put the lock
    file elsewhere, and a long one would not fit a file name (255 bytes);
    the digest keeps hosts that read alike after cleaning apart.
    """
    text = f"{server.hostname}:{server.port}"
    plain = re.sub(r"[^A-Za-z0-9_.-]+", "_", server.hostname)[:64]
    return f"backend-{plain}-{server.port}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
