"""Why the refit makes a pass over the images: against a refit from the calibration pass alone.

``pass`` is the product (``mrp_gpu.refit.refit``): each consumer of a pruned channel is
fit on the pruned model's own inputs, the refit layers before it included, in one
lockstep pass of the unpruned and the pruned model. ``covariance`` needs no pass: each
consumer is fit on the *unpruned* inputs, from their covariance measured in one pass of
the unpruned model (what the plan's calibration pass measures), i.e.
``W' = W C[:, S] (C[S, S] + r)^-1`` with ``C`` the centred covariance, and a layer with a
bias gets back the mean its output lost. Both start from the same MRP plan (data
defaults, 256 calibration images, -50 % MACs), both re-estimate the BN statistics on
the calibration images after; the test accuracy is read then, and once more after the
BN statistics are re-estimated on 2,000 training images (``quality.py``'s ``recal``).

    python benchmarks/refit_study.py --out benchmarks/results
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
import torch
from study_io import parser, stamp, write

import mrp_gpu
from mrp_gpu.data import calibration_batch, get_dataset, make_loader
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.executor import apply_masks, slice_model
from mrp_gpu.finetune import evaluate, recalibrate_bn
from mrp_gpu.models import create_model, default_input_size
from mrp_gpu.redundancy.calibration import CovarianceTaps, is_dense
from mrp_gpu.redundancy.features import run_hooked
from mrp_gpu.refit import RIDGE, _kept_columns, _removed_inputs, refit

SEEDS = (0, 1, 2)


@torch.no_grad()
def covariance_refit(model, plan, images, groups):
    """The no-pass refit: every consumer fit on the unpruned inputs' covariance (a layer with a
    bias also gets back the mean its output lost)."""
    plan = dataclasses.replace(plan, merges=[])
    masked = apply_masks(model, plan, groups).eval()
    removed = _removed_inputs(plan, groups)
    names = [n for n in removed if is_dense(model.get_submodule(n))]
    taps = CovarianceTaps(names, len(images), chunk=64, max_rows=32768, seed=0)
    run_hooked(model, taps.hooks(model), images, 64)
    covs = taps.result()
    for name in names:
        layer = masked.get_submodule(name)
        w0 = model.get_submodule(name).weight.flatten(1).double()
        cols = _kept_columns(layer, removed[name])
        cov, mean = covs[name], taps.sums[name][1] / taps.sums[name][2]
        css = cov[cols][:, cols].clone()
        css.diagonal().add_(RIDGE * float(css.diagonal().mean()))
        w = torch.linalg.solve(css, (w0 @ cov[:, cols]).T).T
        layer.weight.view(layer.weight.shape[0], -1)[:, cols] = w.float()
        if layer.bias is not None:
            layer.bias += (w0 @ mean - w @ mean[cols]).float()
    return masked, plan


def run(name: str, seed: int) -> dict:
    size = default_input_size(name, 1)
    model = create_model(name)
    test = make_loader(get_dataset("fashion-mnist", train=False, input_size=size, augment=False), batch_size=500,
                       train=False, workers=0)
    images = calibration_batch("fashion-mnist", size, n=256, seed=seed)
    recal = calibration_batch("fashion-mnist", size, n=2000)
    groups = build_groups(model, size)
    p = mrp_gpu.plan(model, size, target_flops=0.5, groups=groups, calibration=images,
                     config=mrp_gpu.MRPConfig(seed=seed))
    out = {}
    for label, fn in (("pass", lambda: refit(model, p, images, groups, seed=seed)),
                      ("covariance", lambda: covariance_refit(model, p, images, groups))):
        t0 = time.perf_counter()
        masked, plan = fn()
        seconds = time.perf_counter() - t0
        pruned = slice_model(recalibrate_bn(masked, images), plan, groups)
        acc = evaluate(pruned, test)["acc"]
        out[label] = {"seconds": round(seconds, 2), "acc": acc,
                      "acc_recal_2000": evaluate(recalibrate_bn(pruned, recal), test)["acc"]}
        print(name, seed, label, out[label], flush=True)
    return out


def markdown(r: dict) -> str:
    lines = [f"# The refit's pass against a refit from the calibration pass alone ({r['date']})", "",
             f"`{r['command']}`; {r['machine']}. MRP's data defaults to -50 % MACs, 256 calibration images, "
             "Fashion-MNIST test accuracy (10,000 images), seeds " + ", ".join(map(str, r["seeds"])) + ".", "",
             "| model | refit | accuracy, BN on the 256 images | after BN on 2,000 | refit s |",
             "|---|---|---|---|---|"]
    for model, runs in r["models"].items():
        for label in ("pass", "covariance"):
            a = [x[label]["acc"] * 100 for x in runs]
            b = [x[label]["acc_recal_2000"] * 100 for x in runs]
            t = [x[label]["seconds"] for x in runs]
            lines.append(f"| {model} | {label} | {np.mean(a):.2f} ± {np.std(a):.2f} | {np.mean(b):.2f} ± "
                         f"{np.std(b):.2f} | {np.median(t):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parser(__doc__).parse_args(argv)
    torch.set_num_threads(2)
    result = {**stamp(argv), "seeds": list(SEEDS),
              "models": {name: [run(name, s) for s in SEEDS] for name in ("demo", "vgg_demo")}}
    print(write(args.out, "refit_study", result, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
