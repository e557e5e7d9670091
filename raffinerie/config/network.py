"""The network file (where the backend is, which protocols it speaks) and the target identity.

The identity is part of every point's key: data of one board never stands
in for another's. Without a network file the backend is the embedded
emulator, whose identity names its response-model version and seed.

The network files of Datenraffinerie 0.1.2 and 1.0 (with `daq_coordinator:`)
are valid network files; the protocol settings have defaults that fit them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

from raffinerie.config import schema
from raffinerie.config.daqconfig import Generation, generation_of
from raffinerie.config.yamlio import line_of, load_yaml
from raffinerie.errors import ConfigErrors, RaffError

EMULATOR_MODEL_VERSION = 5  # part of emulated keys: a new response model is a new board
DEFAULT_SEED = 0
DEFAULT_TIMEOUT = 10.0
MAX_TIMEOUT = 3600.0


class SlowControl(str, Enum):
    """The target's slow-control protocol."""

    HCC = "hcc"            # hgcroc-configuration-client: one YAML request {type: set|get|...}
    ZMQ_I2C = "zmq-i2c"    # the 2021 zmq_server.py: commands with the READY handshake


class Readout(str, Enum):
    """How raffinerie gets a run's data."""

    PULL = "pull"              # it pulls the daq server's stream itself (the only puller)
    DAQ_CLIENT = "daq-client"  # it drives the daq-client and reads the .raw file it writes


@dataclass(frozen=True)
class Host:
    hostname: str
    port: int

    def __str__(self) -> str:
        return f"{self.hostname}:{self.port}"


@dataclass(frozen=True)
class Protocols:
    """What the backend speaks, with every default resolved."""

    generation: Generation
    slow_control: SlowControl
    readout: Readout


@dataclass(frozen=True)
class Network:
    file: Path | None
    server: Host
    target: Host
    client: Host | None
    board: str
    timeout: float
    data: Host | None = None  # the data stream; default: server host, daq zmqPushPull_port
    generation: Generation | None = None      # None: from the daq config
    slow_control: SlowControl | None = None   # None: from the generation
    readout: Readout = Readout.PULL
    client_output: Path | None = None         # where the daq-client writes, as raffinerie sees it
    geometry: str | None = None               # the board's geometry (LD-full, HD-full); None: by chip count
    database: dict | None = None              # what its construction-database uploads say (raffinerie.hgcdb)

    def protocols(self, daq: dict | None) -> Protocols:
        """The protocols to speak for a build whose daq config is `daq`."""
        generation = self.generation or generation_of(daq)
        slow = self.slow_control or (SlowControl.HCC if generation is Generation.MENUS
                                     else SlowControl.ZMQ_I2C)
        return Protocols(generation, slow, self.readout)

    def setting_hint(self, name: str, value: str) -> str:
        """How to tell raffinerie about the other protocol, for error messages."""
        where = f" in {self.file}" if self.file else " (a network file)"
        return f"set `{name}: {value}`{where}"


def emulator_identity(seed: int = DEFAULT_SEED) -> str:
    return f"emulator/model-{EMULATOR_MODEL_VERSION}/seed-{seed}"


def load_network(path: Path) -> Network:
    doc = load_yaml(path, "network file")
    if doc is None:
        raise RaffError("network file is empty", file=path, line=1)
    problems = schema.check(doc, "network", path)
    if problems:
        raise ConfigErrors(problems)

    def host(name: str) -> Host | None:
        entry = doc.get(name)
        return Host(entry["hostname"], entry["port"]) if entry else None

    target = host("target")
    timeout = float(doc.get("timeout", DEFAULT_TIMEOUT))
    if not 0 < timeout <= MAX_TIMEOUT:  # also refuses .nan, which every comparison fails
        raise RaffError(f"{doc['timeout']!r} is not a number of seconds in (0, {MAX_TIMEOUT:g}]",
                        file=path, line=line_of(path, ("timeout",)), where="timeout")
    network = Network(path, host("server"), target, host("client"),
                      doc.get("board") or f"board@{target.hostname}", timeout, host("data"))
    return _protocol_settings(network, doc, path)


def _protocol_settings(network: Network, doc: dict, path: Path) -> Network:
    def enum(cls, name):
        return cls(str(doc[name])) if doc.get(name) is not None else None

    readout = enum(Readout, "readout") or Readout.PULL
    output = doc.get("client_output")
    if output is not None:
        output = Path(output).expanduser()
        if not output.is_absolute():
            output = path.parent / output
    if readout is Readout.DAQ_CLIENT:
        if network.client is None:
            raise RaffError("`readout: daq-client` needs `client:` (the daq-client's host and port)",
                            file=path)
        if output is None:
            raise RaffError("`readout: daq-client` needs `client_output:`, the folder the daq-client "
                            "writes into, as this machine sees it", file=path)
    return replace(network, generation=enum(Generation, "generation"),
                   slow_control=enum(SlowControl, "slow_control"), readout=readout,
                   client_output=output, geometry=doc.get("geometry"), database=doc.get("database"))


def identity(network: Network | None, seed: int = DEFAULT_SEED) -> str:
    return network.board if network else emulator_identity(seed)


@dataclass(frozen=True)
class Board:
    """One board of a build: a network file, or the embedded emulator with a seed."""

    network: Network | None
    seed: int = DEFAULT_SEED

    @property
    def identity(self) -> str:
        return identity(self.network, self.seed)

    @property
    def label(self) -> str:
        """A folder name for its outputs: the board's name, made safe for a path."""
        name = self.network.board if self.network else f"emulator-seed-{self.seed}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "board"


def boards(network_files: list[str] | None, seeds: list[int] | None) -> list[Board]:
    """The boards of a command: one per network file, else one per emulator seed."""
    seeds = list(seeds or [])
    if network_files:
        if len(seeds) > 1:
            raise RaffError("--seed picks boards of the embedded emulator; with --network the "
                            "boards are the network files")
        found = [Board(load_network(Path(f)), seeds[0] if seeds else DEFAULT_SEED) for f in network_files]
    else:
        found = [Board(None, s) for s in (seeds or [DEFAULT_SEED])]
    names = [b.identity for b in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise RaffError(f"board {twice[0]!r} is named twice; every board of a build needs its own "
                        "identity (`board:` in its network file, or another --seed)")
    return found
