"""The network file (where the backend is) and the target identity.

The identity is part of every point's key: data of one board never stands
in for another's. Without a network file the backend is the embedded
emulator, whose identity names its response-model version and seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raffinerie.config import schema
from raffinerie.config.yamlio import load_yaml
from raffinerie.errors import ConfigErrors, RaffError

EMULATOR_MODEL_VERSION = 2  # part of emulated keys: a new response model is a new board
DEFAULT_SEED = 0
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Host:
    hostname: str
    port: int

    def __str__(self) -> str:
        return f"{self.hostname}:{self.port}"


@dataclass(frozen=True)
class Network:
    file: Path | None
    server: Host
    target: Host
    client: Host | None
    board: str
    timeout: float
    data: Host | None = None  # the data stream; default: server host, daq zmqPushPull_port


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
    return Network(path, host("server"), target, host("client"),
                   doc.get("board") or f"board@{target.hostname}",
                   float(doc.get("timeout", DEFAULT_TIMEOUT)), host("data"))


def identity(network: Network | None, seed: int = DEFAULT_SEED) -> str:
    return network.board if network else emulator_identity(seed)

