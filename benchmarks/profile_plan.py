"""Where a full MRP plan spends its time: cProfile of one plan, top functions by cumulative time.

    python benchmarks/profile_plan.py --model resnet50 --target 0.5 --label after --out benchmarks/results
    python benchmarks/profile_plan.py --model resnet50 --data 64 --label data64 --out benchmarks/results

With ``--data N`` the whole data path is profiled instead (``mrp_gpu.prune`` with N
seeded random calibration images: the calibration pass, the plan, the refit, the BN
re-estimation, slicing and the check).

Writes ``OUT/profile_<model>_<label>.md`` (machine, date, command, wall time, the table).
The dependency trace is included, as a user's ``mrp-gpu prune`` pays it.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import platform
import pstats
import sys
import time
from datetime import date
from pathlib import Path

import torch

from mrp_gpu.api import plan, prune
from mrp_gpu.config import MRPConfig
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.io import atomic_write_text
from mrp_gpu.models import create_model, default_input_size


def profile(name: str, target: float, top: int, images: int = 0) -> tuple[float, str, int]:
    torch.manual_seed(0)
    model = create_model(name)
    size = default_input_size(name)
    x = torch.randn(images, *size, generator=torch.Generator().manual_seed(0)) if images else None
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    if x is None:
        p = plan(model, size, target_flops=target, config=MRPConfig(), groups=build_groups(model, size))
    else:
        _, p = prune(model, size, target_flops=target, calibration=x)
    prof.disable()
    wall = time.perf_counter() - t0
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
    return wall, buf.getvalue(), len(p.trajectory)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--label", default="now")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--data", type=int, default=0, help="profile the data path with this many random images")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    wall, table, steps = profile(args.model, args.target, args.top, args.data)
    command = " ".join(["python", *sys.argv])
    text = (f"# Profile of an MRP plan: {args.model} to -{args.target:.0%} MACs ({args.label})\n\n"
            f"{date.today().isoformat()}, {platform.machine()}, {torch.get_num_threads()} threads; `{command}`.\n\n"
            + (f"The data path (`mrp_gpu.prune`, {args.data} random calibration images)" if args.data else
               "Defaults (`MRPConfig()`)") + f", dependency trace included; {steps} removals; "
            f"{wall:.2f} s under the profiler.\n\n```\n{table.strip()}\n```\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"profile_{args.model}_{args.label}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
