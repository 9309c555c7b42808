"""Per-group redundancy records: what an RMCD pass (``mrp_gpu.api.analyze``) returns.

``R_g = N_g / C_g``, the mean community size, isolated channels counting as
communities of one: ``R_g = 1`` means every channel plays a role of its own
(docs/method.md, section 5).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..io import atomic_write_text

__all__ = ["LayerRedundancy", "RedundancyReport", "layer_records"]


@dataclass(frozen=True)
class LayerRedundancy:
    """Redundancy of one channel group."""

    group: str
    channels: int
    communities: int
    redundancy: float
    modularity: float
    edges: int
    tau: float
    largest: int
    labels: tuple[int, ...] = field(repr=False)


@dataclass(frozen=True)
class RedundancyReport:
    """What ``mrp_gpu.analyze`` returns: one record per group, the config, stage timings."""

    layers: tuple[LayerRedundancy, ...]
    config: dict
    timings: dict

    def __getitem__(self, group: str) -> LayerRedundancy:
        for r in self.layers:
            if r.group == group:
                return r
        raise KeyError(group)

    @property
    def redundancy(self) -> dict[str, float]:
        return {r.group: r.redundancy for r in self.layers}

    def to_dict(self) -> dict:
        return {"config": self.config, "timings": self.timings,
                "layers": [{k: v for k, v in asdict(r).items() if k != "labels"} | {"labels": list(r.labels)}
                           for r in self.layers]}

    def save_json(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))


def layer_records(ids, ptr, labels, edges_per_graph, modularity, taus) -> tuple[LayerRedundancy, ...]:
    """Per-group records from batch-wide community labels."""
    ptr, labels = ptr.tolist(), labels.cpu().numpy()
    out = []
    for g, gid in enumerate(ids):
        lab = labels[ptr[g]:ptr[g + 1]]
        _, local, sizes = np.unique(lab, return_inverse=True, return_counts=True)
        n, c = len(lab), len(sizes)
        out.append(LayerRedundancy(gid, n, c, n / c if c else 1.0, float(modularity[g]), int(edges_per_graph[g]),
                                   float(taus[g]), int(sizes.max()) if c else 0, tuple(local.tolist())))
    return tuple(out)
