"""ViTs pruned in their residual stream, attention heads and MLPs: the widths they keep.

For each model, MRP (and L1 as the weight-criterion reference) to ``--target`` MACs
through ``mrp_gpu.api.check``: slice, verify that the masked and sliced models agree,
and that the analytic MACs and parameters equal Torch-Pruning's count on the sliced
model. Then the widths the sliced model keeps: the stream (embed dim), each block's
heads (whole heads: each keeps its width) and each block's MLP. ``vit_demo`` runs with its shipped weights; torchvision
models with random weights drawn as the zoo sweep draws them (no weights can be
downloaded here), so their widths show the machinery, not what a trained ViT-B/16 keeps.
No calibration images: the data-free plan (weight features).

    python benchmarks/transformer_widths.py --out benchmarks/results
"""

from __future__ import annotations

import json
import sys
import time

import torch
from study_io import parser, stamp, write
from zoo_sweep import make_model

from mrp_gpu.api import check
from mrp_gpu.dependency.self_attention import traced
from mrp_gpu.models import create_model, default_input_size


def widths(model: torch.nn.Module, groups, kept: dict[str, int]) -> dict:
    """Embed dim, each block's heads (and their width), and the MLP widths the plan keeps."""
    stream = next(g for g in groups if g.kind == "stream")
    heads = [g for g in groups if g.kind == "heads"]
    return {"embed_dim": [stream.size, kept[stream.id]],
            "head_dim": model.get_submodule(heads[0].heads).head_dim if heads else None,
            "heads": {g.heads: [g.size, kept[g.id]] for g in heads},
            "mlp": {g.id: [g.size, kept[g.id]] for g in groups if g.kind == "linear"}}


def run(name: str, method: str, target: float) -> dict:
    model = create_model(name) if name.endswith("_demo") else make_model(name)
    size = default_input_size(name)
    t0 = time.perf_counter()
    model, groups = traced(model, size)
    record = check(model, size, target_flops=target, method=method, groups=groups)
    return {"model": name, "method": method, "target": target, "seconds": round(time.perf_counter() - t0, 1),
            "input_size": list(size), **{k: record[k] for k in ("kinds", "held", "macs_before", "macs_after",
                                                                 "macs_reduction", "params_before", "params_after",
                                                                 "max_abs_diff_masked_vs_sliced")},
            "widths": widths(model, groups, record["kept"])}


def _macs(n: float) -> str:
    return f"{n / 1e9:.3g} G" if n >= 1e9 else f"{n / 1e6:.3g} M"


def _span(widths: dict) -> str:
    after = sorted(a for _, a in widths.values())
    return f"{after[0]}-{after[-1]} of {next(iter(widths.values()))[0]}" if after else "-"


def markdown(result) -> str:
    lines = ["# ViTs pruned in stream, heads and MLPs", "",
             f"{result['date']}, {result['machine']}; `{result['command']}`. Each row is verified by "
             "`mrp_gpu.api.check`: masked == sliced (the difference below; tolerance 1e-3 of the outputs' scale) and "
             "the analytic MACs and parameters equal to Torch-Pruning's count on the sliced model. Torchvision "
             "models carry random weights (the zoo sweep's); `vit_demo` its shipped ones. Widths: before -> after; "
             "heads and MLP widths: the smallest and largest block's.",
             "", "| model | method | MACs | MACs removed | embed dim | heads per block (width) | MLP widths "
             "| masked vs sliced | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        w = r["widths"]
        lines.append(f"| {r['model']} | {r['method']} | {_macs(r['macs_before'])} -> {_macs(r['macs_after'])} "
                     f"| {r['macs_reduction']:.1%} | {w['embed_dim'][0]} -> {w['embed_dim'][1]} | {_span(w['heads'])} "
                     f"({w['head_dim']}) | {_span(w['mlp'])} | {r['max_abs_diff_masked_vs_sliced']:.1e} "
                     f"| {r['seconds']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--models", default="vit_demo,vit_b_16")
    ap.add_argument("--methods", default="mrp,l1")
    ap.add_argument("--target", type=float, default=0.5)
    args = ap.parse_args(argv)
    result = {**stamp(argv), "runs": [run(m, method, args.target) for m in args.models.split(",")
                                      for method in args.methods.split(",")]}
    for r in result["runs"]:
        print(json.dumps({k: r[k] for k in ("model", "method", "macs_reduction", "widths")}))
    print(write(args.out, "transformer_widths", result, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
