"""The backend a build talks to: the embedded emulator, or the hosts of a network file."""

from __future__ import annotations

from raffinerie.config.network import Host, Network
from raffinerie.daq.session import DaqSession
from raffinerie.errors import RaffError


class Backend:
    """Opened on first use (a build with nothing to acquire starts nothing)."""

    def __init__(self, network: Network | None, seed: int, store, progress):
        self.network, self.seed, self.store, self.progress = network, seed, store, progress
        self.emulator = None
        self.session: DaqSession | None = None
        self._lock = None

    def open(self, daq_config: dict) -> DaqSession:
        if self.session is not None:
            return self.session
        if self.network is None:
            from raffinerie.emulator.process import EmulatorProcess

            self.emulator = EmulatorProcess(seed=self.seed).start()
            network, data = self.emulator.network, self.emulator.network.data
            self.progress.info(f"backend: embedded emulator (seed {self.seed}) on {network.server.hostname}")
        else:
            network = self.network
            data = network.data or Host(network.server.hostname, _data_port(daq_config, network))
            self._lock = self.store.lock(f"backend-{network.server.hostname}-{network.server.port}", wait=True)
            self._lock.__enter__()  # one build at a time talks to a hexacontroller
            self.progress.info(f"backend: daq server {network.server}, target {network.target}, data {data}")
        self.session = DaqSession(network, data)
        return self.session

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
    port = (daq_config.get("server") or {}).get("zmqPushPull_port")
    try:
        return int(port)
    except (TypeError, ValueError):
        raise RaffError("the daq config has no usable server.zmqPushPull_port for the data stream "
                        "(or name the data host in the network file as `data:`)",
                        file=network.file) from None
