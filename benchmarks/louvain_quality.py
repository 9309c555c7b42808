"""Louvain engines compared: modularity (one shared function) and time, same graphs, same run.

Graphs: planted partitions (stochastic block models, with NMI against the truth),
kNN graphs (k=16, cosine weights) of noisy clustered features from 64 to 20,000
nodes, and one batch shaped like ResNet-50's channel groups (37 graphs of 64 to
2,048 nodes, run as one batched call with ``ptr``; modularity is per graph).
networkx, the slow oracle, runs up to ``--networkx-max`` nodes.

    python benchmarks/louvain_quality.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from graphs import batch, knn, planted

from mrp_gpu.community import available_backends, louvain, modularity, union_graph
from mrp_gpu.io import atomic_write_text

RESNET50_GROUPS = [64] + [64, 64] * 3 + [256] + [128, 128] * 4 + [512] + [256, 256] * 6 + [1024] + [512, 512] * 3 \
    + [2048]


def nmi(a, b) -> float:
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1)
    joint /= joint.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = (joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum()
    ha, hb = -(pa[pa > 0] * np.log(pa[pa > 0])).sum(), -(pb[pb > 0] * np.log(pb[pb > 0])).sum()
    return float(2 * mi / (ha + hb)) if ha + hb > 0 else 1.0


def run(engine, ei, w, n, ptr, repeat):
    times, labels = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        labels = louvain(ei, w, n, ptr, backend=engine, seed=0)
        times.append(time.perf_counter() - t0)
    return labels, statistics.median(times)


def graphs():
    for n_comm, size in ((4, 16), (10, 50), (20, 100), (50, 100)):
        ei, n, truth = planted(n_comm, size, 0.3, 0.02 * 50 / size, seed=1)
        yield f"planted {n_comm}x{size}", ei, None, n, None, truth
    for n in (64, 512, 2048, 8192, 20000):
        ei, w, n = knn(n, d=32, k=16, clusters=max(2, n // 128), noise=1.5, seed=2)
        yield f"knn {n}", ei, w, n, None, None
    rng = np.random.default_rng(3)
    parts = [knn(n, d=16, k=16, clusters=int(rng.integers(2, 12)), noise=2.0, seed=int(rng.integers(1e6)))
             for n in RESNET50_GROUPS]
    ei, w, ptr = batch(parts)
    yield f"resnet50-shaped batch ({len(parts)} graphs)", ei, w, int(ptr[-1]), ptr, None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--networkx-max", type=int, default=5000)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    engines = [e for e in ("igraph", "numba", "leiden", "torch", "networkx", "cugraph") if e in available_backends()]
    rows = []
    for name, ei, w, n, ptr, truth in graphs():
        g = union_graph(ei, w, n, ptr)
        row = {"graph": name, "nodes": n, "edges": len(g.src), "engines": {}}
        for engine in engines:
            if engine == "networkx" and n > args.networkx_max:
                continue
            labels, seconds = run(engine, ei, w, n, ptr, 1 if engine == "networkx" else args.repeat)
            q = modularity(g, labels)
            rec = {"modularity": float(q.mean()), "seconds": seconds, "communities": int(labels.max()) + 1}
            if truth is not None:
                rec["nmi"] = nmi(labels.numpy(), truth)
            if ptr is not None:
                rec["per_graph"] = q.tolist()
            row["engines"][engine] = rec
        ref = row["engines"]["igraph"]
        for rec in row["engines"].values():
            rec["ratio_to_igraph"] = rec["modularity"] / ref["modularity"]
            if "per_graph" in rec:
                ratios = np.array(rec["per_graph"]) / np.maximum(np.array(ref["per_graph"]), 1e-12)
                rec["ratio_to_igraph_min_per_graph"] = float(ratios.min())
        rows.append(row)
        print(name, {e: (round(r["modularity"], 4), round(r["seconds"], 3)) for e, r in row["engines"].items()},
              flush=True)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "date": date.today().isoformat(),
              "machine": f"{platform.machine()}, CPU, {torch.get_num_threads()} threads", "engines": engines,
              "graphs": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "louvain_quality.json", json.dumps(result, indent=1))
    atomic_write_text(out / "louvain_quality.md", markdown(result))
    print(markdown(result))
    return 0


def markdown(r) -> str:
    engines = r["engines"]
    lines = [f"# Louvain engines: modularity and time ({r['machine']})", "", f"{r['date']}; `{r['command']}`.", "",
             "| graph | nodes | edges | " + " | ".join(f"{e} Q (ratio to igraph) | {e} s" for e in engines) + " |",
             "|---|---|---|" + "---|---|" * len(engines)]
    for row in r["graphs"]:
        cells = []
        for e in engines:
            rec = row["engines"].get(e)
            if rec is None:
                cells += ["not run", ""]
                continue
            extra = f", NMI {rec['nmi']:.3f}" if "nmi" in rec else ""
            cells += [f"{rec['modularity']:.4f} ({rec['ratio_to_igraph']:.3f}{extra})", f"{rec['seconds']:.3f}"]
        lines.append(f"| {row['graph']} | {row['nodes']} | {row['edges']} | " + " | ".join(cells) + " |")
    lines.append("")
    batch_rows = [row for row in r["graphs"] if "batch" in row["graph"]]
    for row in batch_rows:
        for e, rec in row["engines"].items():
            if "ratio_to_igraph_min_per_graph" in rec:
                lines.append(f"- {row['graph']}, {e}: worst per-graph modularity ratio to igraph "
                             f"{rec['ratio_to_igraph_min_per_graph']:.3f}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
