"""Warm-started communities in the SRP loop: Leiden from the last partition against a fresh Louvain.

Every refresh of the SRP loop recomputes a group's communities after it lost one
channel. ``backend="leiden"`` starts igraph's Leiden from the partition before the
removal; ``igraph`` runs Louvain from scratch. On the trained shipped
models (random weights have no communities to keep), for both allocations, this
records in one run: plan time, the per-step ``R`` of the chosen group, the kept
counts, and the modularity of the final partitions. The accuracy each plan keeps
comes from the quality study (``quality.py --protocols recal``, the rows of the same rule and
allocation, with and without ``backend=leiden``), read from ``OUT/quality_cpu.json``
when the table is written; ``--replot`` rewrites the table from the JSON alone.

    python benchmarks/warm_start.py --out benchmarks/results
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
from quality_report import find, fmt

from mrp_gpu.api import analyze, plan
from mrp_gpu.config import MRPConfig
from mrp_gpu.data import calibration_batch, fashion_mnist_available
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.io import atomic_write_text
from mrp_gpu.models import create_model, default_input_size

ENGINES = ("igraph", "leiden")


def one(name: str, allocation: str, target: float, calibration, repeat: int) -> dict:
    model = create_model(name)
    size = default_input_size(name)
    groups = build_groups(model, size)
    out = {}
    for engine in ENGINES:
        cfg = MRPConfig(allocation=allocation, backend=engine)
        times, p = [], None
        for _ in range(repeat):
            t0 = time.perf_counter()
            p = plan(model, size, target_flops=target, config=cfg, groups=groups, calibration=calibration)
            times.append(time.perf_counter() - t0)
        report = analyze(model, size, cfg.resolved(calibration is not None), groups=groups, calibration=calibration)
        out[engine] = {"seconds": statistics.median(times), "steps": len(p.trajectory),
                       "kept": {g: p.kept_count(g) for g in p.sizes},
                       "R_steps": [t["R_after"] for t in p.trajectory],
                       "modularity_mean": float(np.mean([r.modularity for r in report.layers])),
                       "R_mean": float(np.mean([r.redundancy for r in report.layers]))}
    a, b = out["igraph"], out["leiden"]
    n = min(len(a["R_steps"]), len(b["R_steps"]))
    kept_diff = [abs(a["kept"][g] - b["kept"][g]) for g in a["kept"]]
    return {"model": name, "allocation": allocation, "target": target, "engines": out,
            "speedup": a["seconds"] / b["seconds"], "kept_max_abs_diff": max(kept_diff),
            "kept_total_abs_diff": sum(kept_diff),
            "R_step_mean_abs_diff": float(np.mean(np.abs(np.subtract(a["R_steps"][:n], b["R_steps"][:n]))))}


RECAL = "recal 2000 images"


def recal_accuracy(quality: dict | None, row: dict, engine: str, replace: str) -> str:
    """The quality study's recal accuracy of this plan (the rule the study ran), mean ± std over seeds, or '-'."""
    if quality is None:
        return "-"
    fields = [f"allocation={row['allocation']}", f"replace={replace}"]
    fields += ["backend=leiden"] * (engine == "leiden")
    return fmt(find(quality, row["model"], RECAL, row["target"], f"mrp[{';'.join(fields)}]"))


def markdown(r: dict, quality: dict | None = None) -> str:
    lines = [f"# Warm-started communities in the SRP loop ({r['machine']})", "",
             f"{r['date']}; `{r['command']}`. Calibration: {r['calibration']}. Replace rule: {r['replace']} "
             f"(the default when it ran). Recal accuracy: the quality study's `{RECAL}` rows "
             "(`quality_cpu.json`; '-': not run).",
             "",
             "| model | allocation | target | igraph s | leiden (warm) s | speed-up | steps igraph / leiden | "
             "kept: max / total abs diff | mean abs diff of R per step | modularity (mean) igraph / leiden | "
             "recal acc igraph | recal acc leiden |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        a, b = row["engines"]["igraph"], row["engines"]["leiden"]
        lines.append(f"| {row['model']} | {row['allocation']} | -{row['target']:.0%} | {a['seconds']:.2f} | "
                     f"{b['seconds']:.2f} | {row['speedup']:.2f}x | {a['steps']} / {b['steps']} | "
                     f"{row['kept_max_abs_diff']} / {row['kept_total_abs_diff']} | "
                     f"{row['R_step_mean_abs_diff']:.3f} | {a['modularity_mean']:.4f} / {b['modularity_mean']:.4f} | "
                     f"{recal_accuracy(quality, row, 'igraph', r['replace'])} | "
                     f"{recal_accuracy(quality, row, 'leiden', r['replace'])} |")
    return "\n".join(lines) + "\n"


def read_quality(out: Path) -> dict | None:
    path = out / "quality_cpu.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="demo,vgg_demo")
    ap.add_argument("--targets", default="0.5,0.7")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--replot", action="store_true", help="rewrite warm_start.md from OUT/warm_start.json")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.replot:
        result = json.loads((out / "warm_start.json").read_text())
        atomic_write_text(out / "warm_start.md", markdown(result, read_quality(out)))
        return 0
    torch.set_num_threads(2)
    has_data = fashion_mnist_available()
    rows = []
    for name in args.models.split(","):
        calib = calibration_batch("fashion-mnist", default_input_size(name), n=MRPConfig.calib_size) \
            if has_data else None
        for allocation in ("uniform", "srp"):
            for target in map(float, args.targets.split(",")):
                rows.append(one(name, allocation, target, calib, args.repeat))
                row = rows[-1]
                print(f"{name} {allocation} -{target:.0%}: {row['speedup']:.2f}x, kept diff "
                      f"{row['kept_max_abs_diff']}", flush=True)
    result = {"command": " ".join(["python", *sys.argv]), "date": date.today().isoformat(),
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
              "calibration": f"{MRPConfig.calib_size} Fashion-MNIST training images (activation features)"
              if has_data else "none (weight features)", "replace": MRPConfig().replace, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "warm_start.json", json.dumps(result, indent=1))
    text = markdown(result, read_quality(out))
    atomic_write_text(out / "warm_start.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
