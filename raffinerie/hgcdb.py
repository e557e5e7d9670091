"""The HGCAL construction database's pedestal-test upload: the XML documents of one board's run.

The shape is that of the public loader scripts of the module assembly
centres (cmu-hgc-mac/HGC_DB_postgres, `export_data/generate_xmls_utils/
testing/generate_hxb_pedestal_xml.py` and `generate_module_pedestal_xml.py`,
with the templates of `export_data/template_examples/testing/`):

- `pedestal`: table HGC_PEDESTAL_DATA, one DATA_SET per ROC (its serial
  number, kind of part "LD HGCROC" or "HD HGCROC"), one DATA per channel:
  CHANNEL (the chip's channel; +80 for calibration channels, +90 for common
  mode), MEAN, STDEV, FLAGS (only when set: `0` zero mean, `D` dead, `N`
  noisy, in that order), FRAC_UNC (1/sqrt(events));
- `pedestal_cond`: table HGC_COND_TEMP_HUMID, one DATA_SET for the board
  (TEMP_C, HUMIDITY_REL, MEASUREMENT_TIME);
- `pedestal_config`: table HGC_COND_ROC_CONFIG_JSON, one DATA_SET per ROC
  (PURPOSE "Tuned for TOA_vref=...", CONFIG_JSON: the ROC's configuration);
- `pedestal_bias` (modules, when the bias is given): table
  HGC_BIAS_VOLTAGE_CURRENT for the module's hexaboard.

Every document carries the same HEADER/RUN: run type, run number (the
location's 4-digit shipping code and the begin time as yymmddHHMMSS, as the
loader's `get_run_num` makes it), user, begin and end in local time with
its offset ("2025-02-10 19:19:44+05:00", `format_datetime`), location.

Where raffinerie differs from the loader, on purpose: CONFIG_JSON is JSON
(the loader writes a Python dict's repr), and a STDEV hexactrl wrote as NaN
is left out of its DATA rather than written as "nan", which no number
column takes.

Pure: the documents are built from structured data; `raffinerie.cli.hgcdb`
reads the cache and writes the files.
"""

from __future__ import annotations

import datetime
import enum
import json
import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from raffinerie.errors import RaffError
from raffinerie.hgcroc import CHANNELTYPE_CALIB, CHANNELTYPE_CM, chip_name

DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
XSI = "http://www.w3.org/2001/XMLSchema-instance"
CHANNEL_OFFSET = {CHANNELTYPE_CALIB: 80, CHANNELTYPE_CM: 90}   # the loader's remap_channels
SHIPPING_CODE = re.compile(r"[0-9]{4}")                       # resource.yaml `shipping_location`
RUN_TYPE = {"hexaboard": "MAC hexaboard pedestal and noise", "module": "Si module pedestal and noise"}


class PartType(str, enum.Enum):
    """The kind of part a serial number names: its fourth character (resource.yaml `part_type`)."""

    HEXABOARD = "hexaboard"   # 320X...
    MODULE = "module"         # 320M...


@dataclass(frozen=True)
class Part:
    """A board's serial number, read as the HGCAL part-numbering scheme writes it:
    `320` `X`|`M` (hexaboard, module), then `L`|`H` (LD, HD), then the rest."""

    serial: str
    type: PartType
    density: str    # "LD" or "HD"

    @classmethod
    def parse(cls, serial: str, where: str) -> "Part":
        code = serial.replace("-", "")
        if len(code) < 5 or not code.startswith("320") or code[3] not in "XM" or code[4] not in "LH":
            raise RaffError(f"{where}: {serial!r} is not the serial number of a hexaboard or module "
                            "(320X... or 320M..., then L or H for LD or HD)")
        return cls(serial, PartType.HEXABOARD if code[3] == "X" else PartType.MODULE, f"{code[4]}D")


@dataclass(frozen=True)
class Conditions:
    """What the test stand measured around the run (the loader refuses a run without them)."""

    temperature_c: float
    humidity_rel: float
    bias_voltage: float | None = None      # modules: the sensor's bias (V) ...
    leakage_current: float | None = None   # ... and the total current (A)


@dataclass(frozen=True)
class Upload:
    """Who uploads what where: the settings of a board's upload (network file or options)."""

    part: Part
    kind_of_part: str            # of the board, as the database names it
    rocs: dict[int, str]         # chip index -> the ROC's serial number
    location: str
    shipping_code: str
    user: str
    comment: str | None = None
    hexaboard: str | None = None  # a module's hexaboard (the bias document's part)
    hexaboard_kind: str | None = None


@dataclass(frozen=True)
class Channels:
    """One run's per-channel numbers, one entry per channel (sequences of equal length)."""

    chip: list[int]
    channeltype: list[int]
    channel: list[int]
    mean: list[float]
    stdev: list[float]
    flags: list[str]
    frac_unc: list[float]


@dataclass(frozen=True)
class Run:
    begin: float                 # unix time of the first event's run
    end: float
    channels: Channels
    configs: dict[int, dict]     # chip index -> its resolved configuration


def flags(zero_mean: bool, dead: bool, noisy: bool) -> str:
    """FLAGS of a channel as the loader writes it: `0`, `D`, `N`, in that order, or ''."""
    return ("0" if zero_mean else "") + ("D" if dead else "") + ("N" if noisy else "")


def upload_channel(channeltype: int, channel: int) -> int:
    return channel + CHANNEL_OFFSET.get(channeltype, 0)


def local_time(t: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(t).astimezone()


def timestamp(t: float) -> str:
    """`2025-02-10 19:19:44+05:00`: local time and its offset, as the loader's format_datetime."""
    return local_time(t).isoformat(sep=" ", timespec="seconds")


def run_number(upload: Upload, begin: float) -> str:
    return f"{upload.shipping_code}{local_time(begin).strftime('%y%m%d%H%M%S')}"


def documents(run: Run, upload: Upload, conditions: Conditions) -> dict[str, ET.Element]:
    """The upload's documents by name (`pedestal`, `pedestal_cond`, `pedestal_config`, and
    `pedestal_bias` for a module whose bias is given), each a ROOT element."""
    missing = sorted(set(run.channels.chip) - set(upload.rocs))
    if missing:
        raise RaffError(f"no serial number for ROC {chip_name(missing[0])} of {upload.part.serial} "
                        f"(set `database: rocs: {chip_name(missing[0])}:` in the network file, or give "
                        f"--roc-serial {chip_name(missing[0])}=SERIAL)")
    docs = {"pedestal": _pedestal(run, upload), "pedestal_cond": _conditions(run, upload, conditions),
            "pedestal_config": _configs(run, upload)}
    if upload.part.type is PartType.MODULE and conditions.bias_voltage is not None:
        docs["pedestal_bias"] = _bias(run, upload, conditions)
    return docs


def _root(table: str, name: str, run: Run, upload: Upload) -> ET.Element:
    root = ET.Element("ROOT", {"xmlns:xsi": XSI})
    header = ET.SubElement(root, "HEADER")
    kind = ET.SubElement(header, "TYPE")
    _fields(kind, EXTENSION_TABLE_NAME=table, NAME=name)
    hexaboard = upload.part.type is PartType.HEXABOARD
    what = "MAC pedestal and noise" if hexaboard else "MAC Si module pedestal and noise"
    _fields(ET.SubElement(header, "RUN"), RUN_TYPE=RUN_TYPE[upload.part.type.value],
            RUN_NUMBER=run_number(upload, run.begin), RUN_BEGIN_TIMESTAMP=timestamp(run.begin),
            RUN_END_TIMESTAMP=timestamp(run.end), INITIATED_BY_USER=upload.user,
            LOCATION=upload.location, COMMENT_DESCRIPTION=f"{what} data for {upload.part.serial}")
    return root


def _data_set(root: ET.Element, upload: Upload, serial: str, kind: str, serial_first: bool = True):
    data_set = ET.SubElement(root, "DATA_SET")
    comment = upload.comment.replace("\n", "; ") if upload.comment else "NULL"
    _fields(data_set, COMMENT_DESCRIPTION=comment, VERSION="1")
    part = ET.SubElement(data_set, "PART", {"mode": "auto"})
    pairs = [("SERIAL_NUMBER", serial), ("KIND_OF_PART", kind)]
    _fields(part, **dict(pairs if serial_first else pairs[::-1]))
    return data_set


def _pedestal(run: Run, upload: Upload) -> ET.Element:
    root = _root("HGC_PEDESTAL_DATA", "HGCROC Pedestal Data", run, upload)
    c = run.channels
    by_chip: dict[int, ET.Element] = {}
    for chip in sorted(set(c.chip)):
        by_chip[chip] = _data_set(root, upload, upload.rocs[chip], f"{upload.part.density} HGCROC")
    for i in range(len(c.chip)):
        data = ET.SubElement(by_chip[c.chip[i]], "DATA")
        _fields(data, CHANNEL=str(upload_channel(c.channeltype[i], c.channel[i])), MEAN=_number(c.mean[i]))
        if math.isfinite(c.stdev[i]):
            _fields(data, STDEV=_number(c.stdev[i]))
        if c.flags[i]:
            _fields(data, FLAGS=c.flags[i])
        _fields(data, FRAC_UNC=_number(c.frac_unc[i]))
    return root


def _conditions(run: Run, upload: Upload, conditions: Conditions) -> ET.Element:
    root = _root("HGC_COND_TEMP_HUMID", "Environmental conditions", run, upload)
    data_set = _data_set(root, upload, upload.part.serial, upload.kind_of_part, serial_first=False)
    _fields(ET.SubElement(data_set, "DATA"), TEMP_C=_number(conditions.temperature_c),
            HUMIDITY_REL=_number(conditions.humidity_rel), MEASUREMENT_TIME=timestamp(run.begin))
    return root


def _configs(run: Run, upload: Upload) -> ET.Element:
    root = _root("HGC_COND_ROC_CONFIG_JSON", "HGCROC Configuration JSON", run, upload)
    for chip in sorted(set(run.channels.chip)):
        config = run.configs.get(chip, {})
        data_set = _data_set(root, upload, upload.rocs[chip], f"{upload.part.density} HGCROC")
        toa_vref = _first(config, "Toa_vref")
        _fields(ET.SubElement(data_set, "DATA"),
                PURPOSE=f"Tuned for TOA_vref={toa_vref}" if toa_vref is not None else "TOA_vref N/A",
                CONFIG_JSON=json.dumps(config, sort_keys=False, separators=(",", ":")))
    return root


def _bias(run: Run, upload: Upload, conditions: Conditions) -> ET.Element:
    root = _root("HGC_BIAS_VOLTAGE_CURRENT", "Bias voltage and total current", run, upload)
    data_set = _data_set(root, upload, upload.hexaboard or upload.part.serial,
                         upload.hexaboard_kind or upload.kind_of_part)
    _fields(ET.SubElement(data_set, "DATA"), BIAS_VOLTAGE=_number(conditions.bias_voltage),
            BIAS_CURRENT_TOTAL_AMPS=_number(conditions.leakage_current))
    return root


def _first(config, key: str):
    """The first value of `key` anywhere in `config`, depth first (the loader's find_toa_vref)."""
    if isinstance(config, dict):
        for k, v in config.items():
            found = v if k == key else _first(v, key)
            if found is not None:
                return found
    return None


def _fields(parent: ET.Element, **values: str) -> None:
    for tag, text in values.items():
        ET.SubElement(parent, tag).text = text


def _number(value: float) -> str:
    """The shortest text that reads back as exactly this number."""
    return repr(float(value))


def file_name(upload: Upload, begin: float, document: str) -> str:
    """The loader's names: `<part>_<LOCATION>_<yyyymmddTHHMMSS>_<document>.xml` for a hexaboard,
    without the location for a module; made safe for a path."""
    stamp = local_time(begin).strftime("%Y%m%dT%H%M%S")
    parts = [upload.part.serial] + ([upload.location] if upload.part.type is PartType.HEXABOARD else [])
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts + [stamp, document])) + ".xml"


def text(root: ET.Element) -> str:
    ET.indent(root, space="    ")
    return DECLARATION + ET.tostring(root, encoding="unicode") + "\n"


def write(folder: Path, upload: Upload, run: Run, docs: dict[str, ET.Element]) -> list[Path]:
    """Each document under its loader name in `folder`, written whole or not at all: to a
    temporary name, then renamed (a loader watching the spool never takes half a file)."""
    written = []
    for name, root in docs.items():
        path = folder / file_name(upload, run.begin, name)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text(root))
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        written.append(path)
    return written
