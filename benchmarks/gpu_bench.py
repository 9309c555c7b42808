"""GPU verification and timing; ``benchmarks/gpu_check.sh`` runs it (see its header).

1. Correctness on the GPU, against the CPU engines: the fused similarity kernel's
   edges against torch's (CPU, float64 margin), and the torch Louvain on CUDA against
   igraph on the CPU (modularity ratio) on resnet50's batched kNN graph.
2. Timing of RMCD (features, similarity, Louvain, redundancy) for resnet50,
   resnet152 and vgg16 on the standard workload (kNN graphs, k_max=16, tau=-1):
   CPU numba (the CPU default) and CPU igraph, CUDA torch path (torch similarity +
   torch Louvain), CUDA kernel path (fused kernel + torch Louvain); speed-ups are
   against the faster CPU path; and the similarity stage alone, kernel against
   torch ``mm`` + ``topk`` per group, in the same run.

Without a GPU the CUDA parts are reported as skipped and the CPU baseline still runs.
Writes ``OUT/gpu_check.json`` and ``OUT/gpu_check.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from mrp_gpu.bench import KNN_WORKLOAD, bench_rmcd, count_filters
from mrp_gpu.community import has_numba, louvain, modularity, union_graph
from mrp_gpu.config import MRPConfig
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.io import atomic_write_text
from mrp_gpu.models import create_model, default_input_size
from mrp_gpu.redundancy.features import weight_features
from mrp_gpu.redundancy.similarity import build_graphs, kernels_module
from mrp_gpu.timing import sync

PATHS = {
    "cpu_numba": dict(device="cpu", backend="numba", similarity="torch"),
    "cpu_igraph": dict(device="cpu", backend="igraph", similarity="torch"),
    "cuda_torch": dict(device="cuda", backend="torch", similarity="torch"),
    "cuda_kernel": dict(device="cuda", backend="torch", similarity="kernel"),
}


def environment() -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if env["cuda"]:
        env["gpu"] = torch.cuda.get_device_name()
    kernels = kernels_module()
    env["numba_kernel"] = kernels.kernel_usable() and torch.cuda.is_available()
    try:
        import cupy  # noqa: F401

        env["cupy"] = True
    except ImportError:
        env["cupy"] = False
    return env


def check_correctness(cuda: bool, kernel: bool) -> dict:
    """Kernel edges vs torch edges, torch-Louvain-on-CUDA modularity vs igraph, on resnet50."""
    if not cuda:
        return {"skipped": "no CUDA device"}
    model = create_model("resnet50")
    groups = build_groups(model, (3, 64, 64))
    feats = weight_features(model, groups)
    out = {}
    ref = build_graphs(feats, **KNN_WORKLOAD)
    if kernel:
        gpu_rows = type(feats)(feats.ids, tuple(r.cuda() for r in feats.rows))
        ei, w, _ = kernels_module().similarity_edges(list(gpu_rows.rows), list(ref.tau), KNN_WORKLOAD["k_max"])
        got = set(map(tuple, ei.cpu().T.tolist()))
        want = set(map(tuple, ref.edge_index.T.tolist()))
        out["kernel_edges"] = {"torch": len(want), "kernel": len(got), "common": len(got & want),
                               "jaccard": len(got & want) / max(len(got | want), 1)}
    else:
        out["kernel_edges"] = {"skipped": "numba-cuda not usable"}
    ug = union_graph(ref.edge_index, ref.edge_weight, ref.num_nodes, ref.ptr)
    q_cpu = modularity(ug, louvain(ref.edge_index, ref.edge_weight, ref.num_nodes, ref.ptr, backend="igraph"))
    labels = louvain(ref.edge_index.cuda(), ref.edge_weight.cuda(), ref.num_nodes, ref.ptr.cuda(), backend="torch")
    q_gpu = modularity(ug, labels.cpu())
    ratio = q_gpu / q_cpu.clamp_min(1e-12)
    out["louvain_modularity"] = {"igraph_cpu_mean": float(q_cpu.mean()), "torch_cuda_mean": float(q_gpu.mean()),
                                 "ratio_min": float(ratio.min()), "ratio_median": float(ratio.median())}
    return out


def time_similarity(cuda: bool, kernel: bool, repeat: int) -> dict:
    """The similarity stage alone: fused kernel vs torch mm + topk per group, resnet50."""
    if not (cuda and kernel):
        return {"skipped": "needs CUDA and numba-cuda"}
    model = create_model("resnet50")
    groups = build_groups(model, (3, 64, 64))
    feats = weight_features(model, groups)
    feats = type(feats)(feats.ids, tuple(r.cuda() for r in feats.rows))
    out = {}
    for name, engine in (("torch_mm_topk", "torch"), ("fused_kernel", "kernel")):
        times = []
        for i in range(repeat + 1):
            sync("cuda")
            t0 = time.perf_counter()
            build_graphs(feats, engine=engine, **KNN_WORKLOAD)
            sync("cuda")
            if i:
                times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    out["kernel_speedup"] = out["torch_mm_topk"] / out["fused_kernel"]
    return out


def time_rmcd(models: list[str], cuda: bool, kernel: bool, repeat: int) -> dict:
    out = {}
    for name in models:
        size = default_input_size(name)
        row = {}
        for path, opts in PATHS.items():
            if opts["device"] == "cuda" and not cuda:
                row[path] = {"skipped": "no CUDA device"}
                continue
            if opts["similarity"] == "kernel" and not kernel:
                row[path] = {"skipped": "numba-cuda not usable"}
                continue
            if opts["backend"] == "numba" and not has_numba:
                row[path] = {"skipped": "numba not installed"}
                continue
            model = create_model(name).to(opts["device"])
            groups = build_groups(model, size, device=opts["device"])
            config = MRPConfig(**opts, **KNN_WORKLOAD)
            row[path] = bench_rmcd(model, size, config, repeat=repeat, groups=groups)
            row["filters"] = count_filters(groups)
        base = min(row[p]["rmcd"] for p in ("cpu_numba", "cpu_igraph") if "rmcd" in row[p])
        for path in ("cuda_torch", "cuda_kernel"):
            if "rmcd" in row[path]:
                row[path]["speedup_vs_cpu"] = base / row[path]["rmcd"]
        out[name] = row
    return out


def markdown(r: dict) -> str:
    env = r["environment"]
    lines = [f"# GPU check ({env.get('gpu', 'no GPU')})", "",
             f"{r['date']}; torch {env['torch']}; `{r['command']}`; medians of {r['repeat']} runs after a warm-up.",
             "",
             "## RMCD time (kNN graphs, k_max=16, tau=-1)", "",
             "| model | filters | CPU numba (ms) | CPU igraph (ms) | CUDA torch (ms) | CUDA kernel (ms) | "
             "speed-up (best GPU vs best CPU) |",
             "|---|---|---|---|---|---|---|"]
    for name, row in r["rmcd"].items():
        cells = [f"{row[p]['rmcd'] * 1e3:.1f}" if "rmcd" in row[p] else "skipped" for p in PATHS]
        speed = [row[p]["speedup_vs_cpu"] for p in ("cuda_torch", "cuda_kernel") if "speedup_vs_cpu" in row[p]]
        best = f"{max(speed):.1f}x" if speed else "skipped"
        lines.append(f"| {name} | {row.get('filters', '')} | " + " | ".join(cells) + f" | {best} |")
    lines += ["", "## Similarity stage alone (resnet50, 64x64 trace)", "",
              f"```\n{json.dumps(r['similarity'])}\n```",
              "", "## Correctness against the CPU engines", "",
              f"```\n{json.dumps(r['correctness'], indent=1)}\n```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50,resnet152,vgg16")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    env = environment()
    cuda, kernel = env["cuda"], env["numba_kernel"]
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result = {"command": " ".join(["python3", *sys.argv]), "date": now, "environment": env, "repeat": args.repeat}
    result["correctness"] = check_correctness(cuda, kernel)
    result["similarity"] = time_similarity(cuda, kernel, args.repeat)
    result["rmcd"] = time_rmcd(args.models.split(","), cuda, kernel, args.repeat)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "gpu_check.json", json.dumps(result, indent=1))
    atomic_write_text(out / "gpu_check.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
