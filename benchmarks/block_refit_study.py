"""A lever for pruning without retraining: refit each residual block's output, not only each layer's.

The product's refit (``mrp_gpu.refit``) fits every consumer of a pruned channel to the
unpruned model's output *of that layer*. A residual block's output also carries its
shortcut, whose error (the stream's, piled up from the blocks before) the block's last
convolution never sees. ``block`` adds one more pass after the product's refit: in
forward order, each ``BasicBlock``'s ``conv2`` is refit by least squares so that
``bn2(conv2(h)) + shortcut(x)`` matches the unpruned block's sum, on the pruned
model's own ``h`` and ``x`` (BN2 inverted in eval mode; removed rows stay zero), then
the BN statistics are re-estimated on the calibration images as the product does.
``default`` is the product alone. Both: MRP's data defaults, 256 calibration images;
accuracy after the BN statistics are re-estimated on 2,000 training images
(``quality.py``'s ``recal``).

    python benchmarks/block_refit_study.py --out benchmarks/results
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from study_io import parser, stamp, write

from mrp_gpu.api import execute, plan
from mrp_gpu.config import MRPConfig
from mrp_gpu.data import calibration_batch, get_dataset, make_loader
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.executor import slice_model
from mrp_gpu.finetune import evaluate, recalibrate_bn
from mrp_gpu.models import BasicBlock, create_model, default_input_size
from mrp_gpu.refit import RIDGE

GRID = {"demo": (0, 1, 2), "resnet56_demo": (0,)}
TARGETS = (0.5, 0.7)
ROWS = 32768


class _Seen(Exception):
    pass


@torch.no_grad()
def _seen(model, module, images, *, output: bool = False) -> torch.Tensor:
    """What ``module`` reads (or, with ``output``, makes) when ``model`` runs on ``images``."""
    box = []

    def keep(_m, args, out=None):
        box.append(out if output else args[0])
        raise _Seen

    handle = module.register_forward_hook(keep) if output else module.register_forward_pre_hook(keep)
    try:
        model(images)
    except _Seen:
        pass
    finally:
        handle.remove()
    return box[0]


@torch.no_grad()
def block_refit(original, masked, images, *, ridge: float = RIDGE, seed: int = 0) -> None:
    """Refit each BasicBlock's ``conv2`` of ``masked`` (in place) to the block's unpruned sum."""
    g = torch.Generator().manual_seed(seed)
    pairs = zip((m for m in original.modules() if isinstance(m, BasicBlock)),
                (m for m in masked.modules() if isinstance(m, BasicBlock)))
    for before, after in pairs:
        goal = _seen(original, before.relu2, images)  # the sum, before its ReLU
        shortcut = after.shortcut(_seen(masked, after, images))
        h = _seen(masked, after.conv2, images)
        bn = after.bn2
        scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps))[None, :, None, None]
        z = (goal - shortcut - bn.bias[None, :, None, None]) / scale + bn.running_mean[None, :, None, None]
        w = after.conv2.weight
        gone_out = w.flatten(1).abs().sum(1) == 0
        cols = torch.nonzero((w.abs().sum((0, 2, 3)) != 0).repeat_interleave(w[0, 0].numel())).squeeze(1)
        x = F.unfold(h, w.shape[2:], padding=after.conv2.padding).transpose(1, 2).reshape(-1, w[0].numel())
        t = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        if len(x) > ROWS:
            pick = torch.randperm(len(x), generator=g)[:ROWS]
            x, t = x[pick], t[pick]
        x = x[:, cols].double()
        xx = x.T @ x
        xx.diagonal().add_(ridge * float(xx.diagonal().mean().clamp_min(1e-12)))
        flat = w.view(w.shape[0], -1)
        flat.zero_()
        flat[:, cols] = torch.linalg.solve(xx, x.T @ t.double()).T.to(flat.dtype)
        flat[gone_out] = 0


def run(name: str, target: float, seed: int, test, recal) -> dict:
    model = create_model(name).eval()
    size = tuple(default_input_size(name))
    calib = calibration_batch("fashion-mnist", size, n=256, seed=seed)
    groups, config = build_groups(model, size), MRPConfig(seed=seed)
    p = plan(model, size, target_flops=target, config=config, groups=groups, calibration=calib)
    masked, p = execute(model, p, groups, config, calib)
    row = {"model": name, "target": target, "seed": seed}
    for mode in ("default", "block"):
        t0 = time.perf_counter()
        if mode == "block":
            block_refit(model, masked, calib, seed=seed)
            recalibrate_bn(masked, calib)
        seconds = time.perf_counter() - t0
        sliced = recalibrate_bn(slice_model(masked, p, groups), recal)
        row[mode] = round(100 * evaluate(sliced, make_loader(test, batch_size=500, train=False, workers=0))["acc"], 2)
        row[f"{mode}_s"] = round(seconds, 1)
        print(json.dumps(row), flush=True)
    return row


def markdown(result) -> str:
    lines = ["# Refitting each residual block's output after the layers' refit", "",
             f"`{result['command']}`; {result['date']}, {result['machine']}. Fashion-MNIST test accuracy (%, 10,000 "
             "images) after BN re-estimated on 2,000 training images; `gain`: mean ± std of the per-seed "
             "differences; `block s`: the extra pass's seconds, median. The script's docstring says what each does.",
             "", "| model | MACs | default | + block refit | gain | n | block s |", "|---|---|---|---|---|---|---|"]
    for name in result["grid"]:
        for target in result["targets"]:
            rows = [r for r in result["runs"] if r["model"] == name and r["target"] == target]
            if not rows:
                continue
            gain = [r["block"] - r["default"] for r in rows]
            spread = f" ± {statistics.stdev(gain):.2f}" if len(gain) > 1 else ""
            lines.append(f"| {name} | -{target:.0%} | {statistics.mean(r['default'] for r in rows):.2f} | "
                         f"{statistics.mean(r['block'] for r in rows):.2f} | {statistics.mean(gain):+.2f}{spread} | "
                         f"{len(rows)} | {statistics.median(r['block_s'] for r in rows):.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parser(__doc__).parse_args(argv)
    torch.set_num_threads(1)
    recal = calibration_batch("fashion-mnist", (1, 28, 28), n=2000)
    test = get_dataset("fashion-mnist", train=False, input_size=(1, 28, 28), augment=False)
    result = {**stamp(argv), "grid": GRID, "targets": list(TARGETS), "runs": []}
    for name, seeds in GRID.items():
        for target in TARGETS:
            for seed in seeds:  # written after each run: an interrupted study keeps what it measured
                result["runs"].append(run(name, target, seed, test, recal))
                page = write(args.out, "block_refit_study", result, markdown)
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
