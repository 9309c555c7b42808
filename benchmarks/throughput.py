"""Redundancy throughput on the CPU, in one process and one run (every ratio is same-run).

1. RMCD (features, similarity, Louvain, redundancy) of resnet50 on the standard
   workload (kNN graphs, k_max=16, tau=-1) with each CPU engine (``numba``, the
   default, first), and of the demo with the defaults; medians after a warm-up.
2. A full MRP plan of resnet50 to -50 % MACs (dependency trace included), with the
   defaults (without data, and with 64 random calibration images) and with the SRP
   allocation, against Torch-Pruning's ``MetaPruner`` +
   ``GroupMagnitudeImportance`` (global) stepped to the same MACs target (its
   dependency graph and MACs counting included); the ratio is printed.
3. Per SRP step (``allocation="srp"``), mrp_gpu against the naive reference (``reference_naive.py``): on
   resnet56 to the end (mrp_gpu's plan: median of ``--repeat`` runs), on resnet50 for
   ``--naive-steps`` steps (labelled as such; mrp_gpu's plan once).
4. Scaling of each RMCD stage with model size (resnet18 -> 152, wide_resnet101_2,
   regnet_y_16gf), default engine: a log-log plot of time against filters.
5. Inference latency of resnet50 pruned to -50 % MACs, with and without
   ``round_to=8``, against the unpruned model (batch 1 and 64, best memory format).
6. End to end, each its own process (start-up and imports included): ``mrp-gpu prune
   resnet50 --target-flops 0.5`` against ``tp_prune.py`` (a user's Torch-Pruning
   script: magnitude pruner to the same MACs, weights saved), alternated, medians.
7. The data path (``data_path.py``): MRP's data defaults (calibration pass, plan, refit,
   BN re-estimation) against Torch-Pruning's Taylor pruner on the same 256 and 64
   images, ResNet-50, stage by stage with peak memory; ResNet-101 and
   wide_resnet50_2 at 256 images for the scaling. ``--only data-path`` runs this
   section alone and records it beside the others (each section says its date).

Writes ``OUT/throughput_cpu.json``, ``OUT/throughput_cpu.md`` and ``OUT/scaling_cpu.png``.

    python benchmarks/throughput.py --out benchmarks/results
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

import torch
import torch_pruning as tp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data_path
from reference_naive import naive_plan

from mrp_gpu.api import plan
from mrp_gpu.bench import KNN_WORKLOAD, bench_latency, bench_rmcd, latency_speedups
from mrp_gpu.community import resolve_backend
from mrp_gpu.config import MRPConfig
from mrp_gpu.dependency.groups import build_groups, example_input
from mrp_gpu.executor import slice_model
from mrp_gpu.io import atomic_write_text
from mrp_gpu.models import create_model, default_input_size

DEFAULT_PLAN = "mrp_gpu (defaults: uniform allocation, step=1)"
DATA_PLAN = ("mrp_gpu (defaults with 64 calibration images: rebuild rule, loss allocation, no graphs; "
             "random images)")
TP_PLAN = "torch-pruning MetaPruner + GroupMagnitudeImportance (100 steps)"
SCALING = ("resnet18", "resnet50", "resnet101", "resnet152", "wide_resnet101_2", "regnet_y_16gf")


def tp_magnitude(name: str, target: float, steps: int = 100) -> dict:
    """Torch-Pruning's magnitude pruner, global, stepped until the MACs target holds (all timed)."""
    model = create_model(name)
    x = example_input(default_input_size(name))
    t0 = time.perf_counter()
    base, _ = tp.utils.count_ops_and_params(model, x)
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupMagnitudeImportance(), pruning_ratio=0.9,
                                  global_pruning=True, iterative_steps=steps, ignored_layers=[classifier])
    macs, n = base, 0
    while macs > (1 - target) * base and n < steps:
        pruner.step()
        macs, _ = tp.utils.count_ops_and_params(model, x)
        n += 1
    return {"seconds": time.perf_counter() - t0, "pruner_steps": n, "macs_reduction": 1 - macs / base,
            "iterative_steps": steps}


def mrp_plan(name: str, target: float, config: MRPConfig, images: int = 0) -> dict:
    """One timed MRP plan (trace included); with ``images``, that many random calibration images."""
    model = create_model(name)
    size = default_input_size(name)
    calibration = torch.randn(images, *size, generator=torch.Generator().manual_seed(0)) if images else None
    t0 = time.perf_counter()
    groups = build_groups(model, size)
    p = plan(model, size, target_flops=target, config=config, groups=groups, calibration=calibration)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "steps": len(p.trajectory), "macs_reduction": p.macs_reduction,
            "per_step_ms": 1e3 * seconds / max(len(p.trajectory), 1)}


def naive_vs_ours(name: str, target: float, max_steps: int | None, repeat: int) -> dict:
    """The naive reference's median step against mrp_gpu's mean step (its plan's median time
    over ``repeat`` runs, fixed costs included, divided by its steps)."""
    model = create_model(name)
    size = default_input_size(name)
    groups = build_groups(model, size)
    p, times = naive_plan(model, groups, target, max_steps=max_steps)
    config = MRPConfig(allocation="srp", replace="norm-in-community", refresh_every=1, cost_aware=False)
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ours = plan(model, size, target_flops=target, groups=groups, config=config)
        runs.append(time.perf_counter() - t0)
    ours_s = statistics.median(runs)
    naive_ms = 1e3 * statistics.median(times)
    ours_ms = 1e3 * ours_s / len(ours.trajectory)
    return {"naive_steps_timed": len(times), "naive_step_ms_median": naive_ms, "naive_to_end": max_steps is None,
            "mrp_gpu_steps": len(ours.trajectory), "mrp_gpu_step_ms_mean": ours_ms,
            "mrp_gpu_plan_s": ours_s, "mrp_gpu_plan_runs": len(runs), "per_step_speedup": naive_ms / ours_ms}


def scaling(repeat: int) -> dict:
    out = {}
    for name in SCALING:
        model = create_model(name)
        size = default_input_size(name)
        groups = build_groups(model, size)
        row = bench_rmcd(model, size, MRPConfig(**KNN_WORKLOAD), repeat=repeat, groups=groups)
        out[name] = row
        print(f"scaling {name}: {row['filters']} filters, RMCD {row['rmcd'] * 1e3:.0f} ms", flush=True)
        del model
    return out


def latency(target: float, repeat: int) -> dict:
    name = "resnet50"
    size = default_input_size(name)
    model = create_model(name)
    groups = build_groups(model, size)
    models = {"unpruned": model}
    for label, cfg in (("mrp", MRPConfig(step=0.01)), ("mrp_round8", MRPConfig(step=0.01, round_to=8))):
        p = plan(model, size, target_flops=target, config=cfg, groups=groups)
        models[label] = slice_model(model, p, groups)
    rows = bench_latency(models, size, batches=(1, 64), device="cpu", repeat=repeat, warmup=2)
    return {"rows": rows, "speedup": latency_speedups(rows, "unpruned")}


def end_to_end(target: float, repeat: int) -> dict:
    """Wall-clock seconds of the CLI and of the Torch-Pruning script, alternated, ``repeat`` each."""
    import subprocess
    import tempfile

    here = Path(__file__).resolve().parent
    runs = {"cli": [], "tp": []}
    with tempfile.TemporaryDirectory() as tmp:
        commands = {"cli": [str(Path(sys.executable).parent / "mrp-gpu"), "prune", "resnet50", "--target-flops",
                            str(target), "--out", f"{tmp}/cli", "--force", "--quiet"],
                    "tp": [sys.executable, str(here / "tp_prune.py"), "resnet50", str(target), f"{tmp}/tp"]}
        for _ in range(repeat):
            for name, command in commands.items():
                t0 = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                runs[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in runs.items()}
    shown = {"cli": f"mrp-gpu prune resnet50 --target-flops {target} --out OUT --force --quiet",
             "tp": f"python benchmarks/tp_prune.py resnet50 {target} OUT"}
    return {"commands": shown,
            "seconds": runs, "median": med, "ratio_cli_to_tp": med["cli"] / med["tp"]}


def plot_scaling(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["scaling"]
    x = [r["filters"] for r in rows.values()]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for stage in ("features", "similarity", "louvain", "redundancy", "rmcd"):
        ax.loglog(x, [r[stage] for r in rows.values()], marker="o", label=stage, lw=2 if stage == "rmcd" else 1)
    for name, r in rows.items():
        ax.annotate(name, (r["filters"], r["rmcd"]), fontsize=6)
    ax.set_xlabel("filters")
    ax.set_ylabel("seconds (median)")
    ax.set_title(f"RMCD stages on the CPU ({resolve_backend('auto')}, kNN k=16)")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def markdown(r: dict) -> str:
    rm = r["rmcd"]
    lines = [f"# Throughput on the CPU ({r['machine']})", "", f"{r['date']}; `{r['command']}`.", "",
             "## RMCD (one batched pass over every layer)", "",
             "| model | workload | engine | filters | RMCD ms | features | similarity | louvain | redundancy | "
             "filters/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, row in rm.items():
        model, workload, engine = key.split("|")
        lines.append(f"| {model} | {workload} | {engine} | {row['filters']} | {row['rmcd'] * 1e3:.1f} | "
                     f"{row['features'] * 1e3:.1f} | {row['similarity'] * 1e3:.1f} | {row['louvain'] * 1e3:.1f} | "
                     f"{row['redundancy'] * 1e3:.1f} | {row['filters_per_s']:.3g} |")
    lines += ["", "## Full plan of resnet50 to -50 % MACs (trace included), same run", "",
              "| planner | seconds | steps | MACs removed |", "|---|---|---|---|"]
    for k, v in r["plans"].items():
        steps = v.get("steps", v.get("pruner_steps"))
        lines.append(f"| {k} | {v['seconds']:.2f} | {steps} | {v['macs_reduction']:.1%} |")
    lines += ["", f"The default plan takes {r['plan_ratio_default_to_tp']:.2f}x the time of Torch-Pruning's."]
    lines += ["", "## Per SRP step: mrp_gpu against the naive reference", "",
              "| model | naive ms/step (median) | mrp_gpu ms/step | speed-up | naive steps timed |",
              "|---|---|---|---|---|"]
    for k, v in r["naive"].items():
        label = "to the end" if v["naive_to_end"] else f"first {v['naive_steps_timed']} steps only"
        lines.append(f"| {k} | {v['naive_step_ms_median']:.1f} | {v['mrp_gpu_step_ms_mean']:.2f} | "
                     f"{v['per_step_speedup']:.0f}x | {label} |")
    lines += ["", "## Scaling", "", "![scaling](scaling_cpu.png)", "",
              "| model | filters | RMCD ms |", "|---|---|---|"]
    lines += [f"| {k} | {v['filters']} | {v['rmcd'] * 1e3:.0f} |" for k, v in r["scaling"].items()]
    lines += ["", "## Inference latency, resnet50 at -50 % MACs (CPU, best memory format)", "",
              "| model | batch | ms | images/s |", "|---|---|---|---|"]
    best = {}
    for row in r["latency"]["rows"]:
        key = (row["model"], row["batch"])
        if key not in best or row["ms"] < best[key]["ms"]:
            best[key] = row
    lines += [f"| {m} | {b} | {v['ms']:.1f} | {v['images_per_s']:.1f} |" for (m, b), v in best.items()]
    lines += ["", "Speed-up against the unpruned model: " +
              ", ".join(f"{k} {v:.2f}x" for k, v in r["latency"]["speedup"].items()), ""]
    if "end_to_end" in r:
        e = r["end_to_end"]
        lines += ["## End to end: the CLI against a user's Torch-Pruning script (each its own process)", "",
                  "| command | seconds (median) | runs |", "|---|---|---|"]
        lines += [f"| `{e['commands'][k]}` | {e['median'][k]:.2f} | {', '.join(f'{x:.2f}' for x in e['seconds'][k])} |"
                  for k in ("cli", "tp")]
        lines += ["", f"The CLI takes {e['ratio_cli_to_tp']:.2f}x the time of the Torch-Pruning script "
                  "(start-up, imports, model, trace or dependency graph, pruning, check and saving included).", ""]
    if "data_path" in r:
        lines += data_path.markdown(r["data_path"])
    return "\n".join(lines)


def run_data_path(command: str, target: float) -> dict:
    return {"date": date.today().isoformat(), "command": command, "target": target, "rows": data_path.grid(target)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--naive-steps", type=int, default=3)
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--only", choices=("data-path",), help="run this section alone and record it in OUT's JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    command = " ".join([Path(sys.executable).name, *sys.argv])
    out = Path(args.out)
    if args.only:
        path = out / "throughput_cpu.json"
        result = json.loads(path.read_text())
        result["data_path"] = run_data_path(command, args.target)
        return write(result, out)
    result = {"command": command, "date": date.today().isoformat(),
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "torch": torch.__version__}

    result["rmcd"] = {}
    for name, workload in (("resnet50", "knn16"), ("demo", "defaults")):
        model = create_model(name)
        size = default_input_size(name)
        groups = build_groups(model, size)
        for engine in ("numba", "igraph", "leiden", "torch"):
            cfg = MRPConfig(backend=engine, **(KNN_WORKLOAD if workload == "knn16" else {}))
            row = bench_rmcd(model, size, cfg, repeat=args.repeat, groups=groups)
            result["rmcd"][f"{name}|{workload}|{engine}"] = row
            print(f"RMCD {name} {workload} {engine}: {row['rmcd'] * 1e3:.1f} ms", flush=True)

    srp = MRPConfig(allocation="srp", replace="reconstruction")  # the SRP loop as --paper runs it (cost-aware)
    result["plans"] = {
        DEFAULT_PLAN: mrp_plan("resnet50", args.target, MRPConfig()),
        "mrp_gpu (allocation=srp, replace=reconstruction, step=1)": mrp_plan("resnet50", args.target, srp),
        "mrp_gpu (allocation=srp, replace=reconstruction, step=1%)":
            mrp_plan("resnet50", args.target, srp.replace_with(step=0.01)),
        "mrp_gpu (allocation=srp, replace=reconstruction, kNN k=16 graphs, step=1%)":
            mrp_plan("resnet50", args.target, srp.replace_with(step=0.01, **KNN_WORKLOAD)),
        DATA_PLAN: mrp_plan("resnet50", args.target, MRPConfig(), images=64),
        TP_PLAN: tp_magnitude("resnet50", args.target)}
    result["plan_ratio_default_to_tp"] = result["plans"][DEFAULT_PLAN]["seconds"] / result["plans"][TP_PLAN]["seconds"]
    for k, v in result["plans"].items():
        print(f"plan {k}: {v['seconds']:.2f} s", flush=True)
    print(f"default plan / Torch-Pruning: {result['plan_ratio_default_to_tp']:.2f}", flush=True)

    result["naive"] = {"resnet56": naive_vs_ours("resnet56", args.target, None, args.repeat),
                       "resnet50": naive_vs_ours("resnet50", args.target, args.naive_steps, 1)}
    print(json.dumps(result["naive"]), flush=True)
    result["scaling"] = scaling(max(1, args.repeat // 2))
    result["latency"] = latency(args.target, repeat=args.repeat)
    result["end_to_end"] = end_to_end(args.target, repeat=3)
    print(f"end to end: CLI / Torch-Pruning script {result['end_to_end']['ratio_cli_to_tp']:.2f}", flush=True)
    result["data_path"] = run_data_path(command, args.target)
    out.mkdir(parents=True, exist_ok=True)
    plot_scaling(result, out / "scaling_cpu.png")
    return write(result, out)


def write(result: dict, out: Path) -> int:
    atomic_write_text(out / "throughput_cpu.json", json.dumps(result, indent=1))
    atomic_write_text(out / "throughput_cpu.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
