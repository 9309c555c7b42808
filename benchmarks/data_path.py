"""The data path, timed by stage, against Torch-Pruning's Taylor pruner on the same images.

Each measurement runs in its own process (``python benchmarks/data_path.py --one ...``),
so that its peak resident memory is its own and nothing is warm from the one before:

``mrp``
    MRP's data defaults as ``mrp_gpu.prune`` runs them, stage by stage: import, trace,
    the calibration pass, the plan, the refit, the BN re-estimation, slicing and the
    masked-vs-sliced check.
``tp-taylor``
    What a user writes with Torch-Pruning: import, its dependency graph
    (``MetaPruner``), one gradient pass over the same images (cross-entropy against the
    model's own predictions: the images are unlabelled), ``GroupTaylorImportance``
    (global, the classifier left whole), stepped until the MACs target holds.

Both get a seeded torchvision model and the same seeded random images at 224 x 224
(random weights: the time is what is measured here, not the quality). ``throughput.py
--only data-path`` runs the grid and records it.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("resnet50", "resnet101", "wide_resnet50_2")


def _images(n: int):
    import torch

    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def run_mrp(name: str, images: int, target: float, device: str = "cpu") -> dict:
    t0 = time.perf_counter()
    import torch

    import mrp_gpu
    from mrp_gpu.api import execute, masked_vs_sliced
    from mrp_gpu.dependency.groups import build_groups
    from mrp_gpu.executor import slice_model
    from mrp_gpu.models import create_model
    from mrp_gpu.pruner import calibrate
    from mrp_gpu.timing import Stopwatch

    sw = Stopwatch()
    sw.laps["import"] = time.perf_counter() - t0
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, x = create_model(name).to(device), _images(images).to(device)
    size = (3, 224, 224)
    config = mrp_gpu.MRPConfig(device=device)
    sw.device = device
    with sw.lap("trace"):
        groups = build_groups(model, size, device=device)
    resolved = config.resolve(True)[0]
    with sw.lap("calibration"):
        cal = calibrate(model, groups, resolved, x)
    inner = Stopwatch(device)
    with sw.lap("plan"):
        plan = mrp_gpu.plan(model, size, target_flops=target, config=config, groups=groups, calibration=cal,
                            stopwatch=inner)
    sw.absorb(inner, "plan")
    source, plan = execute(model, plan, groups, config, cal, stopwatch=sw)
    with sw.lap("slice"):
        sliced = slice_model(source, plan, groups)
    with sw.lap("check"):
        masked_vs_sliced(source, plan, sliced, groups)
    row = {"stages": sw.laps, "seconds": time.perf_counter() - t0, "macs_reduction": plan.macs_reduction,
           "steps": len(plan.trajectory), "calibration_mb": cal.nbytes / 2**20, "peak_rss_mb": _peak_mb(),
           "device": device}
    if device.startswith("cuda"):
        row["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        row["gpu"] = torch.cuda.get_device_name()
    return row


def run_tp_taylor(name: str, images: int, target: float, steps: int = 100, chunk: int = 64) -> dict:
    t0 = time.perf_counter()
    import torch
    import torch.nn.functional as F
    import torch_pruning as tp
    import torchvision

    laps = {"import": time.perf_counter() - t0}
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, x = getattr(torchvision.models, name)().eval(), _images(images)
    example = x[:1]
    t = time.perf_counter()
    base, _ = tp.utils.count_ops_and_params(model, example)
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupTaylorImportance(),
                                  pruning_ratio=0.9, global_pruning=True, iterative_steps=steps,
                                  ignored_layers=[classifier])
    laps["graph"], t = time.perf_counter() - t, time.perf_counter()
    model.zero_grad()
    for part in x.split(chunk):
        out = model(part)
        F.cross_entropy(out, out.argmax(1), reduction="sum").backward()
    laps["gradients"], t = time.perf_counter() - t, time.perf_counter()
    macs, n = base, 0
    while macs > (1 - target) * base and n < steps:
        pruner.step()
        macs, _ = tp.utils.count_ops_and_params(model, example)
        n += 1
    laps["prune"] = time.perf_counter() - t
    return {"stages": laps, "seconds": time.perf_counter() - t0, "macs_reduction": 1 - macs / base,
            "pruner_steps": n, "peak_rss_mb": _peak_mb()}


RUNNERS = {"mrp": run_mrp, "tp-taylor": run_tp_taylor}


def measure(method: str, name: str, images: int, target: float, device: str = "cpu",
            timeout: float | None = None) -> dict:
    """One measurement in a fresh process (wall time from the process's start, as a user sees it)."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", method, name, str(images),
                           str(target), device], check=True, capture_output=True, text=True, timeout=timeout)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["process_seconds"] = time.perf_counter() - t0
    return row


def grid(target: float, images: tuple[int, ...] = (256, 64), scale: tuple[str, ...] = MODELS[1:]) -> dict:
    """ResNet-50 with both methods at each image count, then the other models with MRP at the first."""
    rows = {}
    for n in images:
        for method in RUNNERS:
            rows[f"resnet50|{n}|{method}"] = r = measure(method, "resnet50", n, target)
            print(f"data path resnet50 {n} {method}: {r['process_seconds']:.1f} s", flush=True)
    for name in scale:
        rows[f"{name}|{images[0]}|mrp"] = r = measure("mrp", name, images[0], target)
        print(f"data path {name} {images[0]} mrp: {r['process_seconds']:.1f} s", flush=True)
    return rows


def markdown(section: dict) -> list[str]:
    """The data-path section of the throughput page."""
    rows = section["rows"]
    lines = [f"## The data path: MRP's data defaults against Torch-Pruning's Taylor pruner ({section['date']})", "",
             f"`{section['command']}`; each run its own process, random weights and images at 224 x 224, "
             f"-{section['target']:.0%} MACs.", "",
             "| model | images | method | process s | stages (s) | peak RSS MB | calibration MB |",
             "|---|---|---|---|---|---|---|"]
    for key, r in rows.items():
        model, n, method = key.split("|")
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items())
        cal = f"{r['calibration_mb']:.0f}" if "calibration_mb" in r else ""
        lines.append(f"| {model} | {n} | {method} | {r['process_seconds']:.1f} | {stages} | "
                     f"{r['peak_rss_mb']:.0f} | {cal} |")
    for n in sorted({k.split("|")[1] for k in rows}, key=int, reverse=True):
        mrp, tp = rows.get(f"resnet50|{n}|mrp"), rows.get(f"resnet50|{n}|tp-taylor")
        if mrp and tp:
            lines.append(f"\nResNet-50, {n} images: MRP takes {mrp['process_seconds'] / tp['process_seconds']:.2f}x "
                         "the time of Torch-Pruning's Taylor pruner.")
    return lines + [""]


def gpu_check(out: Path) -> dict:
    """``gpu_check.sh``'s data-path step: ResNet-50's data path on CUDA with 256 images, stage
    by stage (skipped without CUDA), and its CPU twin with 16 images (the same code, on any machine)."""
    import platform

    import torch

    rows = {"resnet50|16|cpu": measure("mrp", "resnet50", 16, 0.5, timeout=180)}
    if torch.cuda.is_available():
        rows["resnet50|256|cuda"] = measure("mrp", "resnet50", 256, 0.5, device="cuda", timeout=180)
    result = {"command": "python3 benchmarks/data_path.py --gpu-check OUT", "date": time.strftime("%Y-%m-%d"),
              "machine": platform.machine(), "torch": torch.__version__, "cuda": torch.cuda.is_available(),
              "rows": rows}
    from mrp_gpu.io import atomic_write_text

    atomic_write_text(out / "gpu_data_path.json", json.dumps(result, indent=1))
    atomic_write_text(out / "gpu_data_path.md", gpu_markdown(result))
    return result


def gpu_markdown(result: dict) -> str:
    lines = [f"# The data path on the GPU check ({result['date']}, {result['machine']}, torch {result['torch']})", "",
             f"`{result['command']}`: ResNet-50 (random weights and images, 224 x 224), MRP's data defaults to "
             "-50 % MACs, each run its own process.", "",
             "| run | process s | stages (s) | peak RSS MB | peak CUDA MB |", "|---|---|---|---|---|"]
    for key, r in result["rows"].items():
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items())
        cuda = f"{r['peak_cuda_mb']:.0f}" if "peak_cuda_mb" in r else ""
        run = key.replace("|", ", ")
        lines.append(f"| {run} | {r['process_seconds']:.1f} | {stages} | {r['peak_rss_mb']:.0f} | {cuda} |")
    if not result["cuda"]:
        lines += ["", "CUDA: skipped (no CUDA device on this machine)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--gpu-check"]:
        print(gpu_markdown(gpu_check(Path(sys.argv[2]))))
    elif sys.argv[1:2] == ["--one"]:
        method, name, n, target = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
        kwargs = {"device": sys.argv[6]} if method == "mrp" and len(sys.argv) > 6 else {}
        print(json.dumps(RUNNERS[method](name, n, target, **kwargs)))
    else:
        sys.exit("usage: python benchmarks/data_path.py --one {mrp,tp-taylor} MODEL IMAGES TARGET [DEVICE] | "
                 "--gpu-check OUT (the grid: python benchmarks/throughput.py --only data-path)")
