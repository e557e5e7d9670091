"""The daq config of both hexactrl-sw generations, read the same way.

A resolved daq config is `{"server": {...}, "client": {...}}`. In the 2021
generation the server section holds its settings directly (`NEvents`,
`l1a_generator_settings`, ...). In the menu generation (2022 on) it holds
`menus: {name: {settings}}` and `active_menu: name`, and a run uses only the
active menu's settings (hexactrl-protocol.md, section 2).

Some settings only say where things are (hosts, ports, output folders). They
are sent to the servers but never hashed: moving the DAQ PC or a port must
not invalidate a cache.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from raffinerie.hgcroc import MAX_CHIPS

# settings that name a place, not a physical condition (never part of a key)
LOCATION_KEYS = frozenset({"hostname", "port", "serverIP", "outputDirectory", "run_type",
                           "zmqPushPull_port", "data_push_port", "delayScanData_port"})


class Generation(str, Enum):
    """Which hexactrl-sw the daq server and daq-client speak."""

    MENUS = "menus"
    Y2021 = "2021"


def server_section(daq: dict | None) -> dict:
    server = (daq or {}).get("server")
    return server if isinstance(server, dict) else {}


def is_menus(daq: dict | None) -> bool:
    """A menu-generation daq config (its server section has `menus`)."""
    return isinstance(server_section(daq).get("menus"), dict)


def generation_of(daq: dict | None) -> Generation:
    return Generation.MENUS if is_menus(daq) else Generation.Y2021


def active_menu(daq: dict | None) -> str | None:
    name = server_section(daq).get("active_menu")
    return str(name) if name is not None else None


def active_settings(daq: dict | None) -> dict:
    """The settings a run uses: the active menu's (menus) or the server section (2021)."""
    server = server_section(daq)
    if not is_menus(daq):
        return server
    menu = server["menus"].get(active_menu(daq))
    return menu if isinstance(menu, dict) else {}


def daq_setting(daq: dict | None, name: str, default: Any = None) -> Any:
    """A run setting: the active menu's value first, then the server section's."""
    settings = active_settings(daq)
    if name in settings:
        return settings[name]
    return server_section(daq).get(name, default)


# run settings checked wherever they come from (default file, override, scan, template), and
# again in the resolved daq config of every point before it is sent: NEvents from 1 (a run of
# 0 events never ends) to 10 M (a point of hours); NChips 1 to the ROCs of the largest hexaboard
RUN_SETTINGS = {"NEvents": (1, 10_000_000), "NChips": (1, MAX_CHIPS)}


def setting_problem(name: str, value: Any) -> str | None:
    """Why `value` cannot be run setting `name` (None if it can, or if `name` is no run setting)."""
    if name not in RUN_SETTINGS:
        return None
    low, high = RUN_SETTINGS[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"{name}: {value!r} is not a whole number from {low} to {high:,}"
    return None


def run_problems(daq: dict | None) -> dict[str, str]:
    """What is wrong with the run settings a run of `daq` uses: {setting: problem}.

    The settings are read as a run reads them (the active menu's first); in
    the menu generation the active menu must be one of the menus.
    """
    out = {}
    for name in RUN_SETTINGS:
        value = daq_setting(daq, name)
        problem = setting_problem(name, value) if value is not None else None
        if problem:
            out[name] = problem
    if is_menus(daq):
        menus, name = server_section(daq)["menus"], server_section(daq).get("active_menu")
        if not isinstance(menus.get(name), dict):
            known = ", ".join(map(str, menus)) or "none"
            out["active_menu"] = f"active_menu: {name!r} is not one of the menus ({known})"
    return out


def run_settings_as_meant(daq: dict) -> dict:
    """`daq` with run settings written as strings of digits (`NEvents: "1000"`, as 0.1.2 configs
    write their ports) read as the whole numbers they are, as a real daq server reads them:
    in the server section and in every menu. Other values stay as written."""
    def mended(settings: dict) -> dict:
        return {k: int(v) if k in RUN_SETTINGS and _is_digits(v) else v for k, v in settings.items()}

    server = server_section(daq)
    if not server:
        return daq
    server = mended(server)
    if is_menus(daq):
        server["menus"] = {name: mended(menu) if isinstance(menu, dict) else menu
                           for name, menu in server["menus"].items()}
    return {**daq, "server": server}


def _is_digits(value: Any) -> bool:
    return isinstance(value, str) and value.strip().isascii() and value.strip().isdigit()


def int_setting(daq: dict | None, name: str, default: int) -> int:
    try:
        return int(daq_setting(daq, name, default))
    except (TypeError, ValueError):
        return default


def server_override(server: dict, override: dict) -> dict:
    """Route the keys of a `server_override` that the active menu has into that menu.

    `server_override: {NEvents: 200}` then means the same in both
    generations; keys the server section has itself, and full paths
    (`menus: {calibAndL1A: {...}}`), stay where they are.
    """
    menus, name = server.get("menus"), server.get("active_menu", override.get("active_menu"))
    if not isinstance(menus, dict) or not isinstance(menus.get(name), dict) or not override:
        return override
    menu = menus[name]
    routed, into_menu = {}, {}
    for key, value in override.items():
        if key not in server and key in menu:
            into_menu[key] = value
        else:
            routed[key] = value
    if into_menu:
        routed.setdefault("menus", {})
        routed["menus"] = {**routed["menus"], name: {**routed["menus"].get(name, {}), **into_menu}}
    return routed


def without_locations(value: Any) -> Any:
    """`value` without location settings at any depth (what a key hashes)."""
    if isinstance(value, dict):
        if not any(k in LOCATION_KEYS or isinstance(v, (dict, list)) for k, v in value.items()):
            return value
        return {k: without_locations(v) for k, v in value.items() if k not in LOCATION_KEYS}
    if isinstance(value, list):
        return [without_locations(v) for v in value]
    return value
