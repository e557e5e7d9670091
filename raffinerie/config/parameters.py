"""The HGCROCv3 parameter table: every block, parameter, bit width, default.

`hgcroc3_parameters.csv` beside this file is raffinerie's own table, made
from the hexactrl-sw register map with `table_from_regmap` (run this module
as a script). The power-on default config, the emulator's register model and
the range checks of `raff validate` all come from it.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from raffinerie.hgcroc import CHIPS_PER_BOARD, MAX_CHIPS, board_for_chips, chip_names

TABLE_FILE = Path(__file__).with_name("hgcroc3_parameters.csv")
LD_CHIPS = tuple(chip_names(CHIPS_PER_BOARD["LD"]))


@dataclass(frozen=True)
class Parameter:
    block: str
    name: str
    width: int
    default: int

    @property
    def maximum(self) -> int:
        return (1 << self.width) - 1


@dataclass(frozen=True)
class ParameterTable:
    instances: dict[str, int]                     # block -> number of instances
    parameters: dict[tuple[str, str], Parameter]  # (block, name) -> parameter

    def block(self, block: str) -> list[Parameter]:
        return [p for (b, _), p in self.parameters.items() if b == block]

    def lookup(self, path: tuple) -> Parameter | None:
        """The parameter at a chip path `(roc, block, index, name)`, if any."""
        if len(path) != 4:
            return None
        return self.parameters.get((path[1], path[3]))

    def unknown_part(self, path: tuple) -> tuple[int, list] | None:
        """None if `path` is a register (chip, block, index, name) of the map, or a start of one;
        else the level of its first part the map lacks and the names the map has there."""
        levels: list[list] = [chip_names(MAX_CHIPS), sorted(self.instances)]
        if len(path) > 1 and path[1] in self.instances:
            levels.append(list(range(self.instances[path[1]])))
            levels.append(sorted(n for b, n in self.parameters if b == path[1]))
        for level, part in enumerate(path):
            if level >= len(levels):
                return level, []
            if part not in levels[level] or isinstance(part, bool):
                return level, levels[level]
        return None

    def check(self, path: tuple, value) -> str | None:
        """Why `value` cannot be written at `path`, or None if it can."""
        param = self.lookup(path)
        if param is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{param.name} takes an integer, got {type(value).__name__} {value!r}"
        if not 0 <= value <= param.maximum:
            return (f"{param.name} = {value} does not fit its {param.width}-bit register "
                    f"(0..{param.maximum})")
        return None

    def problems(self, tree: dict, prefix: tuple = ()):
        """(path, problem) for every register value of a target tree that cannot be written.

        `tree` is rooted at `prefix` (a path into the target: chip, block,
        index); its leaves are checked where they reach a parameter.
        """
        if len(prefix) == 4:  # (chip, block, index, name): a register
            problem = self.check(prefix, tree)
            if problem:
                yield prefix, problem
        elif isinstance(tree, dict):
            for key, value in tree.items():
                yield from self.problems(value, prefix + (key,))

    def chip_default(self) -> dict:
        chip: dict = {}
        for (block, _), param in self.parameters.items():
            for index in range(self.instances[block]):
                chip.setdefault(block, {}).setdefault(index, {})[param.name] = param.default
        return chip

    def power_on_default(self, chips=LD_CHIPS) -> dict:
        return {name: self.chip_default() for name in chips}

    def board_default(self, n_chips: int) -> dict:
        """The power-on default of the hexaboard that reads `n_chips` ROCs: an LD board's (3) up to
        3, an HD board's (6) above (as tools/power_on_defaults.py writes the example files)."""
        return self.power_on_default(tuple(chip_names(CHIPS_PER_BOARD[board_for_chips(n_chips)])))


@lru_cache(maxsize=1)
def load_table(path: Path = TABLE_FILE) -> ParameterTable:
    instances: dict[str, int] = {}
    params: dict[tuple[str, str], Parameter] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            block = row["block"]
            instances[block] = int(row["instances"])
            params[(block, row["name"])] = Parameter(block, row["name"], int(row["width"]),
                                                     int(row["default"]))
    return ParameterTable(instances, params)


def table_from_regmap(regmap: Path) -> list[dict]:
    """Rows (block, instances, name, width, default) from a hexactrl register map.

    A parameter spans one or more registers; each row of the map gives the
    parameter bits it holds (`param_mask`), where they sit in the register
    (`reg_mask`) and the register's default bits (`defval_mask`).
    """
    widths: dict[tuple[str, str], int] = {}
    defaults: dict[tuple[str, str, int], int] = {}
    indices: dict[str, set[int]] = {}
    with open(regmap, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            block, name, index = row["SubBlock"], row["parameter"], int(row["BlockID"])
            reg_mask = int(row["reg_mask"])
            low = (reg_mask & -reg_mask).bit_length() - 1
            bits = ((int(row["defval_mask"]) & reg_mask) >> low) << int(row["param_minbit"])
            widths[(block, name)] = widths.get((block, name), 0) | int(row["param_mask"])
            defaults[(block, name, index)] = defaults.get((block, name, index), 0) | bits
            indices.setdefault(block, set()).add(index)
    rows = []
    for (block, name), mask in sorted(widths.items()):
        values = {defaults[(block, name, i)] for i in indices[block]}
        if len(values) != 1:
            raise ValueError(f"{block}.{name}: defaults differ between instances")
        rows.append({"block": block, "instances": len(indices[block]), "name": name,
                     "width": mask.bit_length(), "default": values.pop()})
    return rows


def write_table(rows: list[dict], out) -> None:
    writer = csv.DictWriter(out, ["block", "instances", "name", "width", "default"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


if __name__ == "__main__":  # python -m raffinerie.config.parameters HGCROC3_regmap.csv
    write_table(table_from_regmap(Path(sys.argv[1])), sys.stdout)
