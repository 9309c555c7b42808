"""Every torchvision classifier through ``mrp_gpu.api.check``: pruned correctly, or refused clearly.

For each model (random weights, small input): MRP to ``--target`` MACs reduction
(``step=0.2``: a fifth of the chosen group per iteration, to keep the sweep short),
slice, and verify that the masked and sliced models agree, the output shape is
unchanged, and the analytic MACs and parameters equal Torch-Pruning's count on the
sliced model. A model mrp_gpu cannot prune must be refused with a message naming
what it cannot handle. Writes ``OUT/zoo.json`` and ``OUT/zoo.md``.

    python benchmarks/zoo_sweep.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from datetime import date
from pathlib import Path

import torch

from mrp_gpu.api import check
from mrp_gpu.config import MRPConfig
from mrp_gpu.errors import MRPError
from mrp_gpu.io import atomic_write_text
from mrp_gpu.models import ZOO_DIR, create_model, list_models

FULL_SIZE = ("vit_", "swin", "maxvit")  # position embeddings / windows fix the input size


def input_size(name: str) -> tuple[int, int, int]:
    if name.startswith(FULL_SIZE):
        return (3, 224, 224)
    return (3, 96, 96) if name == "inception_v3" else (3, 64, 64)


def make_model(name: str) -> torch.nn.Module:
    """Random weights; ConvNeXt's layer scales (1e-6 at init) raised so every block counts in the check."""
    torch.manual_seed(0)
    model = create_model(name, weights=None)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("layer_scale"):
                p.uniform_(0.5, 1.5)
    return model


def check_model(name: str, target: float) -> dict:
    """``mrp_gpu.api.check`` of one zoo model as the sweep runs it (raises what ``check`` raises)."""
    return check(make_model(name), input_size(name), target_flops=target, config=MRPConfig(step=0.2))


def sweep_one(name: str, target: float) -> dict:
    t0 = time.time()
    try:
        record = check_model(name, target)
        status, reason = "pruned", ""
    except MRPError as e:  # a clean refusal
        record, status, reason = {}, "refused", str(e)
    except Exception as e:  # a bug: reported as such, never hidden
        record, status, reason = {}, "error", f"{type(e).__name__}: {e} | {traceback.format_exc(limit=-3)}"
    return {"model": name, "status": status, "reason": reason, "seconds": round(time.time() - t0, 1), **record}


SUPPORT_FILE = ZOO_DIR / "support.json"  # shipped with the package


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=float, default=0.3)
    ap.add_argument("--models", default="", help="comma list (default: every torchvision classifier)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--merge", action="store_true", help="replace only these models' rows in OUT/zoo.json")
    args = ap.parse_args(argv)
    names = args.models.split(",") if args.models else [n for n in list_models() if n not in
                                                          ("demo", "vgg16_cifar") and not n.startswith("resnet") or
                                                          n in ("resnet18", "resnet34", "resnet50", "resnet101",
                                                                "resnet152")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        rows.append(sweep_one(name, args.target))
        r = rows[-1]
        print(f"{name:24s} {r['status']:8s} {r['seconds']:6.1f}s {r.get('reason', '')[:100]}", flush=True)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "date": date.today().isoformat(),
              "machine": f"{platform.machine()}, CPU, {torch.get_num_threads()} threads", "target": args.target,
              "torch": torch.__version__, "models": rows}
    if args.merge and (out / "zoo.json").is_file():
        old = json.loads((out / "zoo.json").read_text())
        new = {r["model"]: r for r in rows}
        old["models"] = [new.pop(r["model"], r) for r in old["models"]] + list(new.values())
        old.setdefault("reruns", []).append(result["command"])
        result = old
    atomic_write_text(out / "zoo.json", json.dumps(result, indent=1))
    atomic_write_text(out / "zoo.md", markdown(result))
    atomic_write_text(SUPPORT_FILE, json.dumps(support(result), indent=1) + "\n")
    print(markdown(result))
    return 0


def support(result) -> dict:
    """What ``mrp-gpu models`` shows: each model's status in this sweep, and why a refusal."""
    return {"date": result["date"], "target": result["target"],
            "models": {r["model"]: {"status": r["status"], "reason": r["reason"].split(" | ")[0][:160]}
                       for r in result["models"]}}


def markdown(result) -> str:
    rows = result["models"]
    ok = [r for r in rows if r["status"] == "pruned"]
    lines = [f"# torchvision zoo sweep: MRP to -{result['target']:.0%} MACs", "",
             f"{result['date']}, {result['machine']}, torch {result['torch']}; `{result['command']}`.", "",
             f"**{len(ok)} of {len(rows)}** models pruned and verified (masked == sliced, output shape kept, "
             "analytic MACs/params == counted); the others refused with the reason below. \"masked vs sliced\" is "
             "the largest absolute difference of the outputs; the check allows 1e-3 of the outputs' largest "
             "magnitude, which random weights make large in some models.", "",
             "| model | result | groups | MACs removed | masked vs sliced | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "pruned":
            lines.append(f"| {r['model']} | pruned | {r['groups']} | {r['macs_reduction']:.1%} | "
                         f"{r['max_abs_diff_masked_vs_sliced']:.1e} | |")
        else:
            lines.append(f"| {r['model']} | {r['status']} | | | | {r['reason'].splitlines()[0][:140]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
