"""The pruning plan: which channels of each group survive, and how that was decided.

A plan is plain data, versioned JSON, validated on the way in: a malformed file gives a
:class:`~mrp_gpu.errors.PlanError` that names the field, never a traceback from deep
inside. ``kept`` maps a group id to its sorted surviving channel indices; ``sizes``
records each group's original width so a plan made for another model is caught.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PlanError
from .io import atomic_write_text

__all__ = ["PruningPlan", "PLAN_VERSION"]

PLAN_VERSION = 1


def _check_int(value, where: str, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlanError(f"{where}: expected an integer, got {type(value).__name__} {value!r}"[:300])
    if low is not None and value < low:
        raise PlanError(f"{where}: must be >= {low}, got {value}")
    return value


@dataclass(frozen=True)
class PruningPlan:
    """Kept channels per group, plus the provenance that made them.

    Attributes
    ----------
    model : str
        Zoo name of the base model (informational; ``sizes`` is what is checked).
    input_size : tuple of int
        (C, H, W) the costs were computed at.
    sizes : dict
        Group id -> original channel count.
    kept : dict
        Group id -> sorted tuple of kept channel indices. Groups not listed keep all.
    method : str
        ``mrp``, ``l1``, ``fpgm``, ``random``, ``uniform`` or ``external``.
    config : dict
        The resolved configuration that made the plan.
    macs_before, macs_after, params_before, params_after : int
    trajectory : list of dict
        One record per pruning step (MRP only).
    merges : list of dict
        ``compensate``: ``{"group", "channel", "into", "scale"}`` in removal order; before
        ``channel`` goes, its consumers' weights are added, times ``scale``, to those of
        ``into`` (its most similar community partner), so the partner carries its signal.
    """

    model: str
    input_size: tuple[int, ...]
    sizes: dict[str, int]
    kept: dict[str, tuple[int, ...]]
    method: str
    config: dict[str, Any] = field(default_factory=dict)
    macs_before: int = 0
    macs_after: int = 0
    params_before: int = 0
    params_after: int = 0
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    merges: list[dict[str, Any]] = field(default_factory=list)
    version: int = PLAN_VERSION

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ derived
    @property
    def macs_reduction(self) -> float:
        return 1.0 - self.macs_after / self.macs_before if self.macs_before else 0.0

    @property
    def params_reduction(self) -> float:
        return 1.0 - self.params_after / self.params_before if self.params_before else 0.0

    def kept_count(self, group_id: str) -> int:
        return len(self.kept[group_id]) if group_id in self.kept else self.sizes[group_id]

    def removed(self, group_id: str) -> np.ndarray:
        """Sorted channel indices of ``group_id`` that the plan removes."""
        mask = np.ones(self.sizes[group_id], dtype=bool)
        mask[list(self.kept.get(group_id, range(self.sizes[group_id])))] = False
        return np.flatnonzero(mask)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        if not isinstance(self.model, str):
            raise PlanError(f"model: expected a string, got {self.model!r}"[:300])
        if (not isinstance(self.input_size, (tuple, list)) or len(self.input_size) < 1
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in self.input_size)):
            raise PlanError(f"input_size: expected positive integers like [3, 32, 32], got {self.input_size!r}"[:300])
        if not isinstance(self.sizes, dict):
            raise PlanError("sizes: expected an object mapping group id to channel count")
        for gid, n in self.sizes.items():
            _check_int(n, f"sizes[{gid!r}]", low=1)
        if not isinstance(self.kept, dict):
            raise PlanError("kept: expected an object mapping group id to a list of channel indices")
        for gid, idxs in self.kept.items():
            where = f"kept[{gid!r}]"
            if gid not in self.sizes:
                raise PlanError(f"{where}: unknown group (not in sizes)")
            if not isinstance(idxs, (list, tuple)):
                raise PlanError(f"{where}: expected a list of channel indices")
            if len(idxs) == 0:
                raise PlanError(f"{where}: empty group: a plan must keep at least one channel")
            for i in idxs:
                _check_int(i, where)
                if not 0 <= i < self.sizes[gid]:
                    raise PlanError(f"{where}: index {i} out of range [0, {self.sizes[gid]})")
            if len(set(idxs)) != len(idxs):
                dup = sorted(i for i, c in Counter(idxs).items() if c > 1)[:5]
                raise PlanError(f"{where}: duplicate index {dup}")
        for name in ("macs_before", "macs_after", "params_before", "params_after"):
            _check_int(getattr(self, name), name, low=0)
        if not isinstance(self.method, str):
            raise PlanError(f"method: expected a string, got {self.method!r}"[:300])
        if not isinstance(self.config, dict) or not isinstance(self.trajectory, list):
            raise PlanError("config must be an object and trajectory a list")
        if not isinstance(self.merges, list):
            raise PlanError("merges: expected a list")
        for k, m in enumerate(self.merges):
            where = f"merges[{k}]"
            if not isinstance(m, dict) or set(m) != {"group", "channel", "into", "scale"}:
                raise PlanError(f"{where}: expected an object with group, channel, into, scale")
            if m["group"] not in self.sizes:
                raise PlanError(f"{where}: unknown group {m['group']!r}"[:300])
            for key in ("channel", "into"):
                _check_int(m[key], f"{where}.{key}", low=0)
                if m[key] >= self.sizes[m["group"]]:
                    raise PlanError(f"{where}.{key}: index {m[key]} out of range [0, {self.sizes[m['group']]})")
            if m["channel"] == m["into"]:
                raise PlanError(f"{where}: a channel cannot merge into itself")
            scale = m["scale"]
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
                raise PlanError(f"{where}.scale: expected a finite number, got {m['scale']!r}"[:300])

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["kept"] = {k: list(v) for k, v in self.kept.items()}
        return d

    def save(self, path: str | Path) -> None:
        """Write the plan as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, d: Any, source: str = "plan") -> PruningPlan:
        if not isinstance(d, dict):
            raise PlanError(f"{source}: expected a JSON object, got {type(d).__name__}")
        required = ("version", "model", "input_size", "sizes", "kept", "method")
        missing = [k for k in required if k not in d]
        if len(missing) > 1 or missing == ["version"]:
            raise PlanError(f"{source} is not a plan written by mrp-gpu: it has no {', '.join(missing)} "
                            "(a plan.json from `mrp-gpu prune` holds them all)"[:300])
        version = d.get("version")
        if version != PLAN_VERSION:
            raise PlanError(f"{source}: version: expected {PLAN_VERSION}, got {version!r}"[:300])
        if missing:
            raise PlanError(f"{source}: missing field(s) {', '.join(missing)}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise PlanError(f"{source}: unknown field(s) {', '.join(unknown)}"[:300])
        kept = d["kept"]
        if isinstance(kept, dict):
            kept = {k: tuple(v) if isinstance(v, list) else v for k, v in kept.items()}
        input_size = d["input_size"]
        try:
            return cls(**{**d, "kept": kept,
                          "input_size": tuple(input_size) if isinstance(input_size, list) else input_size})
        except PlanError as e:
            raise PlanError(f"{source}: {e}") from None
        except TypeError as e:
            raise PlanError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> PruningPlan:
        """Read and validate a plan file."""
        path = Path(path)
        if not path.is_file():
            raise PlanError(f"plan file {str(path)!r} does not exist")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PlanError(f"plan file {str(path)!r} is not valid JSON: {e}") from None
        return cls.from_dict(d, source=str(path))
