"""The emulated chips' registers, built from raffinerie's parameter table.

Values live in one integer array per (block, parameter), shape (chips,
instances), so the response model reads them without walking dicts. A
write is checked whole before anything changes: an unknown chip, block,
index or parameter, or a value that does not fit its register, is refused
with a message naming the place.

All those arrays are views into one byte image, laid out as the emulator's
noise seed hashes the registers: for each (block, parameter) in sorted
order, its repr then its values. Hashing the image is one call instead of
580 (0.04 against 0.2-0.5 ms a run), and since every change goes through
the views it can never be out of date, however a value was changed.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from raffinerie.config.parameters import ParameterTable, load_table
from raffinerie.config.tree import norm_key
from raffinerie.hgcroc import CHANNELS_PER_HALF, DEFAULT_CHIPS, chip_index, chip_name



class RegisterError(ValueError):
    """A write the chips refuse; the message names the place."""


class RegisterFile:
    def __init__(self, n_chips: int = DEFAULT_CHIPS, table: ParameterTable | None = None):
        self.table = table or load_table()
        self.n_chips = n_chips
        self.image, arrays = _image(self.table, n_chips)
        # read-only mapping: an array replaced in it would no longer be in the image
        self.values: MappingProxyType[tuple[str, str], np.ndarray] = MappingProxyType(arrays)
        self.reset()

    def reset(self) -> None:
        """Power-on state."""
        for key, param in self.table.parameters.items():
            self.values[key][...] = param.default

    def get(self, block: str, name: str) -> np.ndarray:
        return self.values[(block, name)]

    def write(self, config: dict) -> None:
        """Apply a (partial) target config; all or nothing."""
        writes = list(self._writes(config))
        for block, name, chip, index, value in writes:
            self.values[(block, name)][chip, index] = value
            if block == "HalfWise" and ("ch", name) in self.values:
                start = index * CHANNELS_PER_HALF
                self.values[("ch", name)][chip, start:start + CHANNELS_PER_HALF] = value

    def _writes(self, config):
        if not isinstance(config, dict):
            raise RegisterError(f"target config must be a mapping, got {type(config).__name__}")
        for chip_key, blocks in config.items():
            if chip_key in ("hostname", "port"):
                continue
            chip = self._chip(chip_key, f" (this board has {chip_name(0)}..{chip_name(self.n_chips - 1)})")
            yield from self._chip_writes(chip, chip_key, blocks)

    def _chip_writes(self, chip: int, chip_key, blocks):
        if not isinstance(blocks, dict):
            raise RegisterError(f"{chip_key}: expected a mapping of blocks")
        for block, instances in blocks.items():
            if block not in self.table.instances:
                raise RegisterError(f"{chip_key}.{block}: unknown block")
            if not isinstance(instances, dict):
                raise RegisterError(f"{chip_key}.{block}: expected a mapping of instances")
            for index, params in instances.items():
                index = norm_key(index)
                where = f"{chip_key}.{block}.{index}"
                if not isinstance(index, int) or not 0 <= index < self.table.instances[block]:
                    raise RegisterError(f"{where}: no such {block} instance")
                if not isinstance(params, dict):
                    raise RegisterError(f"{where}: expected a mapping of parameters")
                for name, value in params.items():
                    param = self.table.parameters.get((block, name))
                    if param is None:
                        raise RegisterError(f"{where}.{name}: unknown parameter")
                    problem = self.table.check((chip_key, block, index, name), value)
                    if problem:
                        raise RegisterError(f"{where}.{name}: {problem}")
                    yield block, name, chip, index, value

    def read(self, request: dict | None = None) -> dict:
        """Current values: all of them, or those named in `request` (same shape)."""
        if not request:
            return {chip_name(chip): self._chip_dict(chip) for chip in range(self.n_chips)}
        out: dict = {}
        for chip_key, blocks in request.items():
            chip = self._chip(chip_key)
            full = self._chip_dict(chip)
            if not isinstance(blocks, dict):
                out[chip_key] = full
                continue
            out[chip_key] = {}
            for block, instances in blocks.items():
                if block not in full:
                    raise RegisterError(f"{chip_key}.{block}: unknown block")
                out[chip_key][block] = full[block] if not isinstance(instances, dict) else {
                    norm_key(i): full[block].get(norm_key(i), {}) for i in instances}
        return out

    def _chip(self, chip_key, hint: str = "") -> int:
        chip = chip_index(chip_key)
        if chip is None or chip >= self.n_chips:
            raise RegisterError(f"{chip_key}: no such chip{hint}")
        return chip

    def _chip_dict(self, chip: int) -> dict:
        out: dict = {}
        for (block, name), arr in self.values.items():
            for index in range(arr.shape[1]):
                out.setdefault(block, {}).setdefault(index, {})[name] = int(arr[chip, index])
        return out


def _image(table: ParameterTable, n_chips: int) -> tuple[np.ndarray, dict]:
    """The byte image (sorted keys: repr, then the int64 values) and a view of it per key.

    The dict keeps the table's order, which the replies that list registers follow.
    """
    keys = list(table.parameters)
    shapes = {(block, name): (n_chips, table.instances[block]) for block, name in keys}
    offsets, size = {}, 0
    for key in sorted(keys):
        size += len(repr(key).encode())
        offsets[key] = size
        size += 8 * int(np.prod(shapes[key]))
    image = np.zeros(size, dtype=np.uint8)
    for key in sorted(keys):
        label = np.frombuffer(repr(key).encode(), dtype=np.uint8)
        image[offsets[key] - label.size:offsets[key]] = label
    # native int64, C order: a view's bytes are what `tobytes()` of a separate array gives
    arrays = {key: np.ndarray(shapes[key], dtype=np.int64, buffer=image, offset=offsets[key])
              for key in keys}
    return image, arrays
