"""What several benchmarks share: a Calib scan of an injection run on the example hexaboard."""

from __future__ import annotations

import shutil
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def scan_library(folder: Path, points: int, events: int) -> Path:
    return injection_library(folder, events, f"""\
      - key: [[roc_s0, roc_s1, roc_s2], ReferenceVoltage, [0, 1], Calib]
        range: {{start: 0, stop: {points * 10}, step: 10}}
""")


def injection_library(folder: Path, events: int, parameters: str, extra: str = "") -> Path:
    """A daq procedure `scan` of the example injection run with these `parameters:` (YAML lines)."""
    for sub in ("defaults", "init"):
        if not (folder / sub).exists():
            shutil.copytree(EXAMPLES / sub, folder / sub)
    main = folder / "main.yaml"
    main.write_text(f"""procedures:
  - name: scan
    type: daq
    target_settings: {{power_on_default: ./defaults/V3LDHexaboard-poweron-default.yaml,
                      initial_config: ./init/injection.yaml}}
    daq_settings:
      default: ./defaults/daq-system-config.yaml
      server_override:
        NEvents: {events}
        l1a_generator_settings: [{{name: A, enable: 1, BX: 16, length: 1, flavor: CALPULINT, prescale: 0, followMode: DISABLE}}]
    parameters:
{parameters}{extra}""")
    return main
