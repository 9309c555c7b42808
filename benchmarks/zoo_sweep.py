"""Every torchvision classifier (or a timm selection) through ``mrp_gpu.api.check``: pruned, or refused clearly.

For each model (random weights, small input): MRP to ``--target`` MACs reduction
(``step=0.2``: a fifth of a group between community updates, and ``replace=
"norm-in-community"``, to keep the sweep short: the sweep checks the machinery, which
the in-layer rule does not change),
slice, and verify that the masked and sliced models agree, the output shape is
unchanged, and the analytic MACs and parameters equal Torch-Pruning's count on the
sliced model. A model whose groups are all pruned is ``pruned``; one with groups left
whole (normalised together, split by the model's code, through attention) is
``partly pruned``; a model mrp_gpu cannot prune must be ``refused`` with a message
naming what it cannot handle; anything else is an ``error`` (a bug). Writes
``OUT/zoo.json`` and ``OUT/zoo.md`` (``--zoo timm``: ``OUT/zoo_timm.*``, the
``TIMM_MODELS`` below, at least one per family), and the status of every model to
the package's ``zoo/support.json`` (what ``mrp-gpu models`` shows).

    python benchmarks/zoo_sweep.py --out benchmarks/results
    python benchmarks/zoo_sweep.py --zoo timm --out benchmarks/results
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
from mrp_gpu.dependency.self_attention import traced
from mrp_gpu.errors import MRPError
from mrp_gpu.io import atomic_write_text
from mrp_gpu.models import ZOO_DIR, create_model, default_input_size, list_models

# position embeddings, windows or token-mixing layers fix the input size of these
FULL_SIZE = ("vit_", "swin", "maxvit", "timm/vit_", "timm/deit", "timm/swin", "timm/mixer", "timm/resmlp",
             "timm/levit", "timm/pit_", "timm/coat", "timm/efficientformer", "timm/visformer", "timm/botnet",
             "timm/halonet", "timm/mobilevit", "timm/efficientvit")
TIMM_MODELS = (  # one or more per family: CNNs of every shape, hybrids, attention, MLP-mixers
    "resnet18", "resnet26d", "seresnet18", "resnext26ts", "res2net50_14w_8s", "regnetx_002", "regnety_002",
    "densenet121", "dla34", "dpn48b", "vgg11", "repvgg_a0", "cspresnet50", "darknet17", "hrnet_w18_small",
    "selecsls42b", "inception_v3", "efficientnet_b0", "tf_efficientnet_lite0", "mixnet_s", "mobilenetv2_050",
    "mobilenetv3_small_050", "mobilenetv4_conv_small", "mnasnet_small", "lcnet_050", "tinynet_e", "ghostnet_100",
    "rexnet_100", "hardcorenas_a", "gernet_s", "nf_resnet26", "convnext_atto", "convnextv2_atto",
    "edgenext_xx_small", "fastvit_t8", "poolformer_s12", "mobilevit_xxs", "efficientvit_b0", "levit_128s",
    "botnet26t_256", "vit_tiny_patch16_224", "deit_tiny_patch16_224", "pit_ti_224", "mixer_s32_224",
    "resmlp_12_224")


def input_size(name: str) -> tuple[int, int, int]:
    if name.startswith(FULL_SIZE):
        return default_input_size(name)
    return (3, 96, 96) if name.endswith("inception_v3") else (3, 64, 64)


def make_model(name: str) -> torch.nn.Module:
    """Random weights; ConvNeXt's layer scales (1e-6 at init) raised and zero-initialised weights (a
    ViT's head and class token) drawn, so every layer counts in the check (a zero head would make
    any two models agree)."""
    torch.manual_seed(0)
    model = create_model(name, weights=None)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("layer_scale"):
                p.uniform_(0.5, 1.5)
            elif p.ndim > 1 and not p.any():
                p.normal_(0.0, 0.02)
    return model


SWEEP = MRPConfig(step=0.2, replace="norm-in-community")


TRACE_LIMIT = 60.0  # seconds; the package's default (300) would make two hanging timm models cost 10 minutes


def check_model(name: str, target: float) -> dict:
    """``mrp_gpu.api.check`` of one zoo model as the sweep runs it (raises what ``check`` raises)."""
    size = input_size(name)
    model, groups = traced(make_model(name), size, timeout=TRACE_LIMIT)  # as mrp_gpu's entry points prune it
    return check(model, size, target_flops=target, config=SWEEP, groups=groups)


def sweep_one(name: str, target: float) -> dict:
    t0 = time.time()
    try:
        record = check_model(name, target)
        held = record.get("held", [])
        status = "partly pruned" if held else "pruned"
        reason = f"{len(held)} group(s) left whole, e.g. {held[0]}" if held else ""
    except MRPError as e:  # a clean refusal
        record, status, reason = {}, "refused", str(e)
    except Exception as e:  # a bug: reported as such, never hidden
        record, status, reason = {}, "error", f"{type(e).__name__}: {e} | {traceback.format_exc(limit=-3)}"
    return {"model": name, "status": status, "reason": reason, "seconds": round(time.time() - t0, 1), **record}


SUPPORT_FILE = ZOO_DIR / "support.json"  # shipped with the package
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=float, default=0.3)
    ap.add_argument("--models", default="", help="comma list (default: every torchvision classifier)")
    ap.add_argument("--out", default=str(RESULTS), help="results folder; mrp-gpu models reads the sweep "
                    "written to the default one")
    ap.add_argument("--merge", action="store_true", help="replace only these models' rows in OUT/zoo.json")
    ap.add_argument("--zoo", choices=("torchvision", "timm"), default="torchvision")
    args = ap.parse_args(argv)
    if args.zoo == "timm":
        names = [f"timm/{n.removeprefix('timm/')}" for n in (args.models.split(",") if args.models else TIMM_MODELS)]
    else:
        own = ("demo", "vgg_demo", "vgg16_cifar", "vit_demo")  # the zoo's own entries, not torchvision's
        names = args.models.split(",") if args.models else [
            n for n in list_models() if n not in own and not n.startswith("resnet")
            or n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")]
    stem = "zoo_timm" if args.zoo == "timm" else "zoo"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        rows.append(sweep_one(name, args.target))
        r = rows[-1]
        print(f"{name:24s} {r['status']:8s} {r['seconds']:6.1f}s {r.get('reason', '')[:100]}", flush=True)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "date": date.today().isoformat(),
              "machine": f"{platform.machine()}, CPU, {torch.get_num_threads()} threads", "target": args.target,
              "torch": torch.__version__, "zoo": args.zoo, "models": rows}
    if args.zoo == "timm":
        import timm

        result["timm"] = timm.__version__
    if args.merge and (out / f"{stem}.json").is_file():
        old = json.loads((out / f"{stem}.json").read_text())
        new = {r["model"]: r for r in rows}
        old["models"] = [new.pop(r["model"], r) for r in old["models"]] + list(new.values())
        old.setdefault("reruns", []).append(result["command"])
        result = old
    atomic_write_text(out / f"{stem}.json", json.dumps(result, indent=1))
    atomic_write_text(out / f"{stem}.md", markdown(result))
    if out.resolve() == RESULTS.resolve():  # a trial elsewhere leaves what `mrp-gpu models` says alone
        atomic_write_text(SUPPORT_FILE, json.dumps(support(result), indent=1) + "\n")
    print(markdown(result))
    return 0


def support(result) -> dict:
    """What ``mrp-gpu models`` shows: each model's status in the sweeps, and why (this sweep's rows
    replace their own models' entries; the other zoo's stay)."""
    old = json.loads(SUPPORT_FILE.read_text()) if SUPPORT_FILE.is_file() else {"models": {}}
    models = {k: v for k, v in old["models"].items() if k.startswith("timm/") != (result.get("zoo") == "timm")}
    models.update({r["model"]: {"status": r["status"], "reason": r["reason"].split(" | ")[0][:160]}
                   | ({"kinds": r["kinds"]} if "kinds" in r else {}) for r in result["models"]})
    dates = {**old.get("dates", {}), result.get("zoo", "torchvision"): result["date"]}
    return {"dates": dates, "target": result["target"], "models": dict(sorted(models.items()))}


def markdown(result) -> str:
    rows = result["models"]
    count = {s: sum(r["status"] == s for r in rows) for s in ("pruned", "partly pruned", "refused", "error")}
    zoo = result.get("zoo", "torchvision")
    versions = f"torch {result['torch']}" + (f", timm {result['timm']}" if "timm" in result else "")
    lines = [f"# {zoo} zoo sweep: MRP to -{result['target']:.0%} MACs", "",
             f"{result['date']}, {result['machine']}, {versions}; `{result['command']}`.", "",
             f"**{count['pruned']} pruned, {count['partly pruned']} partly pruned (groups left whole), "
             f"{count['refused']} refused, {count['error']} errors, of {len(rows)}**. Pruned means verified: masked "
             "== sliced, output shape kept, analytic MACs/params == counted; a refusal names its reason. \"masked "
             "vs sliced\" is the largest absolute difference of the outputs; the check allows 1e-3 of the outputs' "
             "largest magnitude, which random weights make large in some models.", "",
             "Pruned groups by kind: conv channels, linear (MLP hidden) units, stream channels (a residual "
             "stream through LayerNorms), heads (an attention layer with its own q/k/v and output "
             "projections, losing whole heads: timm's, and torchvision's self-attention nn.MultiheadAttention "
             "rewritten so), and attention: other nn.MultiheadAttention layers, narrowed with a stream (each "
             "head loses width: their head width is the stream's).", "",
             "| model | result | groups | pruned | MACs removed | masked vs sliced | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] in ("pruned", "partly pruned"):
            kinds = ", ".join(f"{k} {n}" for k, n in r.get("kinds", {}).items())
            lines.append(f"| {r['model']} | {r['status']} | {r['groups']} | {kinds} | {r['macs_reduction']:.1%} | "
                         f"{r['max_abs_diff_masked_vs_sliced']:.1e} | {r['reason'][:140]} |")
        else:
            lines.append(f"| {r['model']} | {r['status']} | | | | | {r['reason'].splitlines()[0][:140]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
