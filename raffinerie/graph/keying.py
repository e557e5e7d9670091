"""The keys of what a plan derives: datasets, analyses, and the takes of a procedure's points.

A dataset's key hashes its points' keys, their coordinates, its column
selection and what its measurements hold (their manifests); an analysis's
hashes its dataset's key, its module, parameters and code. The formulas are
pinned by tests/test_golden_keys.py: a change invalidates every cache.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

from raffinerie.config.keys import digest, key_bytes
from raffinerie.config.library import AnalysisProcedure
from raffinerie.graph.nodes import Node
from raffinerie.graph.points import PointSet
from raffinerie.graph.reasons import resolved_record


class CacheView(Protocol):
    def keys(self, kind: str) -> set[bytes]: ...
    def has(self, kind: str, key: bytes) -> bool: ...
    def calibration(self, key: bytes) -> dict | None: ...
    def last_build(self, kind: str, name: str) -> dict | None: ...
    def content(self, kind: str, keys) -> bytes | None: ...
    def summary(self, key: bytes) -> dict | None: ...   # a measurement's table; None: damaged


def dataset_key(points: PointSet, content: bytes = b"") -> bytes:
    """Hash of the ordered point keys, the coordinates, the column selection and
    `content`, the digest of the measurements' manifests (what they hold)."""
    proc, scan = points.procedure, points.scan
    # v3: the stored layout (data.zarr, by how each column varies); older datasets are made again
    h = hashlib.sha256(b"raffinerie-dataset-v3\0" + content)
    for axis in scan.axes:
        values = axis.values
        spec = (["range", values.start, values.stop, values.step] if isinstance(values, range)
                else ["values", list(values)])
        h.update(key_bytes(axis.name) + digest(spec))
    h.update(b"%d\0" % scan.repeat + digest(proc.data_columns) + digest(scan.explicit))
    h.update(points.keys)
    return h.digest()


def analysis_inputs(proc: AnalysisProcedure, dataset: str, code: dict | None = None,
                    uses: dict[str, str] | None = None) -> dict:
    """What an analysis key hashes; kept in the build record to explain reruns.

    `parameter_values` (the parameters themselves, for naming what changed)
    is recorded but not hashed: `parameters` (their digest) is. `uses` (name -> key of
    each analysis it uses) only when it uses some, so other analyses keep their keys.
    """
    inputs = {"dataset": dataset, "module": proc.module,
              "parameters": digest(proc.parameters).hex(), "code": code or {},
              "parameter_values": _json_safe(proc.parameters)}
    if uses:
        inputs["uses"] = dict(uses)
    return inputs


def analysis_key(inputs: dict) -> bytes:
    hashed = {k: v for k, v in inputs.items() if k != "parameter_values"}
    return hashlib.sha256(b"raffinerie-analysis-v1\0" + digest(hashed)).digest()


def take_record(name: str, identity: str) -> str:
    """The name under which the cache records the current take of procedure `name` on a board
    (`names/takes/<it>.json`, inputs {"procedure", "identity", "take"})."""
    return f"{name}@{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def current_take(cache: CacheView, name: str, identity: str) -> int:
    record = cache.last_build("takes", take_record(name, identity)) or {}
    take = (record.get("inputs") or {}).get("take", 0)
    return take if isinstance(take, int) and take >= 0 else 0


def build_record(points: PointSet, node: Node) -> dict:
    """What the build of a dataset keeps beside its calibration: what its scan resolved
    (base config compressed, axes; about 5 kB) and why it was built."""
    proc, scan = points.procedure, points.scan
    return {"resolved": resolved_record(points.base, scan.axes, points.identity, proc.mode, scan.repeat,
                                        proc.data_columns, points.take),
            "reason": node.why.as_dict()}


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
