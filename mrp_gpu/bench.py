"""Benchmarks: how fast redundancy is computed, how fast a plan is made, how fast the pruned model runs.

Every figure is a median over repeats after a warm-up; clocks are read after a CUDA
synchronisation on GPUs (:class:`~mrp_gpu.timing.Stopwatch`). The standard RMCD
workload builds kNN graphs (``k_max=16``, ``tau=-1``), so Louvain has real work even
on random weights; the trained demo runs with the package defaults.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn as nn

from .config import MRPConfig
from .dependency.groups import ChannelGroups, example_input
from .dependency.self_attention import traced
from .timing import sync

__all__ = ["KNN_WORKLOAD", "bench_rmcd", "bench_plan", "bench_latency", "latency_speedups", "count_filters"]

KNN_WORKLOAD = {"k_max": 16, "tau": -1.0}


def count_filters(groups: ChannelGroups) -> int:
    """Filters (output channels of every producing conv/linear) the groups hold."""
    return sum(len(s.idxs) for g in groups for s in g.producers)


def _median(xs):
    return float(statistics.median(xs))


def bench_rmcd(model: nn.Module, input_size, config: MRPConfig, *, repeat: int = 5,
               groups: ChannelGroups | None = None) -> dict:
    """Median time of each RMCD stage (features, similarity, louvain, redundancy) and their sum."""
    from .api import analyze

    if groups is None:
        model, groups = traced(model, input_size)
    runs = []
    for i in range(repeat + 1):  # the first run warms up (CUDA context, kernels, caches)
        report = analyze(model, input_size, config, groups=groups)
        if i:
            runs.append(report.timings)
    stages = ("features", "similarity", "louvain", "redundancy")
    out = {s: _median([r[s] for r in runs]) for s in stages}
    out["rmcd"] = _median([sum(r[s] for s in stages) for r in runs])
    edges = sum(layer.edges for layer in report.layers)
    out.update({"groups": len(groups), "channels": int(groups.sizes.sum()), "filters": count_filters(groups),
                "edges": edges, "filters_per_s": count_filters(groups) / out["rmcd"],
                "edges_per_s": edges / max(out["similarity"] + out["louvain"], 1e-12), "repeat": repeat})
    return out


def bench_plan(model: nn.Module, input_size, config: MRPConfig, *, target_flops: float = 0.5,
               repeat: int = 1, include_trace: bool = True) -> dict:
    """Median wall time of a full MRP plan to ``target_flops`` (the dependency trace included)."""
    from .api import plan

    times, p = [], None
    groups = None
    if not include_trace:
        model, groups = traced(model, input_size)
    for _ in range(repeat):
        t0 = time.perf_counter()
        p = plan(model, input_size, target_flops=target_flops, config=config, groups=groups)
        times.append(time.perf_counter() - t0)
    return {"plan_s": _median(times), "steps": len(p.trajectory), "macs_reduction": p.macs_reduction,
            "per_step_ms": 1e3 * _median(times) / max(len(p.trajectory), 1), "repeat": repeat}


@torch.no_grad()
def bench_latency(models: dict[str, nn.Module], input_size, *, batches=(1, 64), device="cpu",
                  repeat: int = 20, warmup: int = 3, progress: bool = False) -> list[dict]:
    """Inference latency (median ms) and throughput (images/s) of each model, per batch size.

    Each model is timed in the default memory format and in ``channels_last``; the
    faster of the two is what a deployment would pick, and both are reported.
    """
    from tqdm.auto import tqdm

    rows = []
    bar = tqdm(total=len(models) * len(batches) * 2, desc="latency", disable=not progress, leave=False)
    for name, model in models.items():
        model = model.eval().to(device)
        for batch in batches:
            x = example_input(input_size, batch=batch, device=device)
            for fmt in ("contiguous", "channels_last"):
                mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
                m, xi = model.to(memory_format=mf), x.contiguous(memory_format=mf)
                for _ in range(warmup):
                    m(xi)
                times = []
                for _ in range(repeat):
                    sync(device)
                    t0 = time.perf_counter()
                    m(xi)
                    sync(device)
                    times.append(time.perf_counter() - t0)
                ms = 1e3 * _median(times)
                rows.append({"model": name, "batch": batch, "format": fmt, "ms": ms,
                             "images_per_s": 1e3 * batch / ms, "device": str(device)})
                bar.update()
        model.to(memory_format=torch.contiguous_format)
    bar.close()
    return rows


def latency_speedups(rows: list[dict], base: str) -> dict:
    """Best-format latency of every model relative to ``base``, per batch size."""
    best = {}
    for r in rows:
        key = (r["model"], r["batch"])
        best[key] = min(best.get(key, float("inf")), r["ms"])
    return {f"{m}@{b}": best[(base, b)] / ms for (m, b), ms in best.items() if m != base}
