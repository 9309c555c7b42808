"""Where a full MRP plan spends its time: cProfile of one plan, top functions by cumulative time.

    python benchmarks/profile_plan.py --model resnet50 --target 0.5 --label after --out benchmarks/results

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

from mrp_gpu.api import plan
from mrp_gpu.config import MRPConfig
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.io import atomic_write_text
from mrp_gpu.models import create_model, default_input_size


def profile(name: str, target: float, top: int) -> tuple[float, str, int]:
    model = create_model(name)
    size = default_input_size(name)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    p = plan(model, size, target_flops=target, config=MRPConfig(), groups=build_groups(model, size))
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
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    wall, table, steps = profile(args.model, args.target, args.top)
    command = " ".join(["python", *sys.argv])
    text = (f"# Profile of an MRP plan: {args.model} to -{args.target:.0%} MACs ({args.label})\n\n"
            f"{date.today().isoformat()}, {platform.machine()}, {torch.get_num_threads()} threads; `{command}`.\n\n"
            f"Defaults (`MRPConfig()`), dependency trace included; {steps} removals; "
            f"{wall:.2f} s under the profiler.\n\n```\n{table.strip()}\n```\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"profile_{args.model}_{args.label}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
