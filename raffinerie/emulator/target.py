"""The emulated hexaboard as slow control sees it: registers and master TDCs.

A master TDC (one per `MasterTdc` instance, two per chip) measures TOA only
after a reset: its `START_COUNTER` going from 0 to 1. It is invalid after
power-on and after every change of the chip's sampling phase
(`Top.*.phase_strobe`, `Top.*.phase_ck`), which is why hexactrl-script resets
the TDCs after each phase change. Both slow-control generations write
registers through `write`, so the same physics holds for both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from raffinerie.config.tree import norm_key
from raffinerie.emulator.registers import RegisterError, RegisterFile
from raffinerie.hgcroc import DEFAULT_CHIPS, chip_name

PHASES = (("Top", "phase_strobe"), ("Top", "phase_ck"))
COUNTER = ("MasterTdc", "START_COUNTER")


@dataclass
class WriteEffect:
    """Which chips a write touched in a way that matters for their TDCs."""

    phase_changed: list[int] = field(default_factory=list)
    tdc_reset: list[int] = field(default_factory=list)

    def as_log(self) -> dict:
        return {"phase_changed": self.phase_changed, "tdc_reset": self.tdc_reset}


class Target:
    def __init__(self, n_chips: int = DEFAULT_CHIPS):
        self.registers = RegisterFile(n_chips)
        self.n_chips = n_chips
        self.tdc_valid = np.zeros(self.registers.get(*COUNTER).shape, dtype=bool)

    def power_on(self) -> None:
        """Reset: power-on registers, master TDCs not started."""
        self.registers.reset()
        self.tdc_valid[:] = False

    @property
    def tdc_ok(self) -> np.ndarray:
        """Per chip: all its master TDCs valid."""
        return self.tdc_valid.all(axis=1)

    def write(self, config: dict) -> WriteEffect:
        """Write registers (all or nothing; RegisterError names a refused place)."""
        phase_before = [self.registers.get(*p).copy() for p in PHASES]
        counter_before = self.registers.get(*COUNTER).copy()
        self.registers.write(config)
        changed = np.zeros(self.n_chips, dtype=bool)
        for before, p in zip(phase_before, PHASES, strict=True):
            changed |= (before != self.registers.get(*p)).any(axis=1)
        self.tdc_valid[changed] = False
        started = (counter_before == 0) & (self.registers.get(*COUNTER) == 1)
        self.tdc_valid |= started
        return WriteEffect(np.flatnonzero(changed).tolist(),
                           np.flatnonzero(started.any(axis=1)).tolist())

    def reset_tdc(self) -> WriteEffect:
        """Every chip's START_COUNTER to 0, then to 1 (the 2021 server's `resettdc`)."""
        stop = self.write(self._counters(0))
        start = self.write(self._counters(1))
        return WriteEffect(stop.phase_changed, start.tdc_reset)

    def _counters(self, value: int) -> dict:
        instances = range(self.registers.get(*COUNTER).shape[1])
        return {chip_name(c): {"MasterTdc": {i: {"START_COUNTER": value} for i in instances}}
                for c in range(self.n_chips)}

    # -- reading -------------------------------------------------------------------

    def values(self) -> dict:
        """Every register value: {roc_sN: {Block: {index: {param: value}}}}."""
        return self.registers.read()

    def describe(self) -> dict:
        """The board layout with each parameter's range, as HCC's `describe`."""
        return {chip_name(c): self._chip_layout() for c in range(self.n_chips)}

    def _chip_layout(self) -> dict:
        # a fresh dict per chip: shared objects would be dumped as YAML aliases
        table = self.registers.table
        chip: dict = {}
        for (block, name), param in table.parameters.items():
            for index in range(table.instances[block]):
                chip.setdefault(block, {}).setdefault(index, {})[name] = {"min": 0, "max": param.maximum}
        return chip

    def read_named(self, request) -> dict:
        """The values of the places named in `request`; a null (or any leaf) means all below it."""
        if not request:
            return self.values()
        return _pick(self.values(), request, "")


def _pick(tree: dict, request: dict, where: str) -> dict:
    if not isinstance(request, dict):
        raise RegisterError(f"{where or 'request'}: expected a mapping")
    out = {}
    for key, sub in request.items():
        key = norm_key(key)
        place = f"{where}.{key}" if where else str(key)
        if not isinstance(tree, dict) or key not in tree:
            raise RegisterError(f"{place}: no such place on this board")
        out[key] = _pick(tree[key], sub, place) if isinstance(sub, dict) and sub else tree[key]
    return out
