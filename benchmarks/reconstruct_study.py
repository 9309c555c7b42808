"""Does a short output reconstruction close the post-training gap? A screen of the lever.

MRP's data defaults (plan, least-squares refit, BN on the 256 calibration images) leave
the demo short of the unpruned model without retraining (``quality_cpu.md``).
Post-training quantisation closes such gaps by reconstructing outputs with
a few gradient steps on the calibration images (BRECQ and its kin). This screen tries
the cheapest, architecture-free form, the product's ``distill`` (``mrp_gpu.distill``):
after the default, Adam steps (cosine schedule, batch 64, random 2-pixel shift and
flip) on the mean squared error between the pruned and the unpruned model's logits,
BN statistics re-estimated on ``images`` training images first and then frozen
(the first 256 are the calibration images; no labels read). ``default`` is read as
``quality.py``'s ``recal`` reads it (BN re-estimated on 2,000 training images, the whole
test set); a reconstruction is read as the distillation leaves it, as ``quality.py``
reads a ``distill=N`` run. Rows measured before the distillation re-estimated BN itself
(``"bn_first"`` absent) kept the refit's statistics during the steps and were read with BN
re-estimated on 2,000 images afterwards; the page marks them.

    python benchmarks/reconstruct_study.py --out benchmarks/results
    python benchmarks/reconstruct_study.py --models vit_demo --seed 1 --variants "images=256,steps=1000,lr=3e-4"

A run adds to the committed JSON: its rows replace the same model, target, seed and variant.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import time
from pathlib import Path

from quality_methods import parse_method, prune
from study_io import parser, stamp, write

from mrp_gpu.data import calibration_batch, get_dataset, make_loader
from mrp_gpu.distill import distill
from mrp_gpu.finetune import evaluate, recalibrate_bn
from mrp_gpu.models import create_model, default_input_size

VARIANTS = ({"images": 256, "steps": 400, "lr": 3e-4}, {"images": 1024, "steps": 400, "lr": 3e-4},
            {"images": 1024, "steps": 1000, "lr": 3e-4}, {"images": 1024, "steps": 400, "lr": 1e-4})


def parse_variants(text: str) -> tuple[dict, ...]:
    """``"images=2000,steps=400,lr=1e-3;..."`` as variant dicts (every key given)."""
    variants = []
    for item in filter(None, text.split(";")):
        v = dict(kv.split("=", 1) for kv in item.split(","))
        if set(v) != {"images", "steps", "lr"}:
            raise SystemExit(f"--variants: {item!r} must give images, steps and lr")
        variants.append({"images": int(v["images"]), "steps": int(v["steps"]), "lr": float(v["lr"])})
    return tuple(variants)


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` runs with ``new`` ones added; a variant measured again replaces its old row, and a
    run whose default came out otherwise (other code) drops the variants measured from the old one."""
    def key(v):
        return v["images"], v["steps"], v["lr"]

    runs = {(r["model"], r["target"], r["seed"]): r for r in old}
    for r in new:
        prior = runs.get((r["model"], r["target"], r["seed"]))
        if prior is not None and prior["default"] == r["default"]:  # else its variants started from another pruning
            kept = [v for v in prior["variants"] if key(v) not in {key(n) for n in r["variants"]}]
            r = dict(r, variants=kept + r["variants"])
        runs[(r["model"], r["target"], r["seed"])] = r
    return list(runs.values())


def run(name: str, target: float, seed: int, variants: tuple[dict, ...] = VARIANTS) -> dict:
    size = default_input_size(name, 1)
    model = create_model(name)
    test = make_loader(get_dataset("fashion-mnist", train=False, input_size=size, augment=False), batch_size=500,
                       train=False, workers=0)
    recal = calibration_batch("fashion-mnist", size, n=2000)

    def accuracy(m, recalibrate: bool = True) -> float:
        return round(evaluate(recalibrate_bn(m, recal) if recalibrate else m, test, amp=False)["acc"] * 100, 2)

    base, config = parse_method("mrp", seed)
    config = config.resolved(has_data=True)
    calibration = calibration_batch("fashion-mnist", size, n=config.calib_size, seed=seed)
    pruned, reduction, _ = prune(base, config, model, size, target, calibration)
    out = {"model": name, "target": target, "seed": seed, "macs_reduction": round(reduction, 4),
           "unpruned": accuracy(copy.deepcopy(model)), "default": accuracy(copy.deepcopy(pruned)), "variants": []}
    print(json.dumps(out), flush=True)
    for v in variants:
        images = calibration_batch("fashion-mnist", size, n=v["images"], seed=seed)  # its first 256: calibration's
        t0 = time.perf_counter()
        student = distill(copy.deepcopy(pruned), model, images, steps=v["steps"], lr=v["lr"], seed=seed)
        row = dict(v, seconds=round(time.perf_counter() - t0, 1), acc=accuracy(student, recalibrate=False),
                   bn_first=True)
        out["variants"].append(row)
        print(json.dumps(row), flush=True)
    return out


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:+.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:+.2f}"


def markdown(r: dict) -> str:
    """One row per model, target and variant, over the seeds that ran it: the mean default and
    reconstruction accuracy, and the gain as the mean ± std of the paired differences."""
    cells: dict = {}
    for run in r["runs"]:
        for v in run["variants"]:
            key = (run["model"], run["target"], v["images"], v["steps"], v["lr"])
            cells.setdefault(key, []).append((run, v))
    lines = [f"# Output reconstruction after MRP's default, without retraining ({r['date']})", "",
             "\n".join(f"    {c}" for c in r["commands"]), "",
             f"{r['machine']}. Fashion-MNIST test accuracy (%, 10,000 images) after BN "
             "re-estimated on 2,000 training images (a reconstruction: as the distillation leaves it, its BN "
             "statistics re-estimated on its `images` before the steps), mean over the seeds (n). "
             "`default`: MRP's data defaults "
             "(256 calibration images); the other columns add Adam steps on the logits' squared error against "
             "the unpruned model on `images` training images (the module's docstring says how); `gain`: mean ± "
             "std of the per-seed differences; `seconds`: the reconstruction's, median.", "",
             "| model | MACs | unpruned | default | images | steps | lr | + reconstruction | gain | n | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (model, _, images, steps, lr), rows in cells.items():
        runs, variants = [a for a, _ in rows], [b for _, b in rows]
        lines.append(f"| {model} | -{statistics.fmean(a['macs_reduction'] for a in runs):.1%} | "
                     f"{statistics.fmean(a['unpruned'] for a in runs):.2f} | "
                     f"{statistics.fmean(a['default'] for a in runs):.2f} | {images} | {steps} | {lr:g} | "
                     f"{statistics.fmean(b['acc'] for b in variants):.2f}"
                     f"{'' if all(b.get('bn_first') for b in variants) else ' *'} | "
                     f"{_spread([b['acc'] - a['default'] for a, b in rows])} | {len(rows)} | "
                     f"{statistics.median(b['seconds'] for b in variants):.0f} |")
    if any(not v.get("bn_first") for run in r["runs"] for v in run["variants"]):
        lines += ["", "\\* measured with the earlier order: the refit's BN statistics kept during the steps, "
                  "then re-estimated on 2,000 training images."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--models", default="demo")
    ap.add_argument("--targets", default="0.5,0.7")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", type=parse_variants, default=VARIANTS,
                    help='"images=N,steps=N,lr=X;..." (default: the screen\'s four)')
    args = ap.parse_args(argv)
    out = Path(args.out)
    now = stamp(argv)
    command = now.pop("command")
    old = json.loads((out / "reconstruct_study.json").read_text()) if (out / "reconstruct_study.json").exists() else {}
    result = {"commands": old.get("commands", []) + [command], **now, "runs": old.get("runs", [])}
    for m in args.models.split(","):
        for t in args.targets.split(","):  # written after each run: a long screen keeps what it measured
            result["runs"] = merge(result["runs"], [dict(run(m, float(t), args.seed, args.variants), command=command)])
            page = write(out, "reconstruct_study", result, markdown)
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
