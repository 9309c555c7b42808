"""What the commands share: the model flags, building the model, accuracy, saving weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..dependency import TRACE_TIMEOUT

__all__ = ["add_model_args", "add_trace_timeout", "model_from_args", "accuracy", "save_weights", "command_line",
           "latency_rows"]


def command_line() -> str:
    return " ".join(["mrp-gpu", *sys.argv[1:]])


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="zoo name: resnet20..110, vgg16_cifar, the shipped demo, vgg_demo, "
                                 "resnet56_demo and vit_demo, or a torchvision model")
    p.add_argument("--weights", help="local state_dict (.safetensors/.pt) or torchvision weights name")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--in-chans", type=int)
    p.add_argument("--input-size", help="CxHxW (default: the model's own, e.g. 3x224x224)")
    add_trace_timeout(p)


def add_trace_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trace-timeout", type=float, default=TRACE_TIMEOUT, metavar="S",
                   help=f"give up tracing the model's dependencies after S seconds (default {TRACE_TIMEOUT:g}; "
                        "0: no limit)")


def model_from_args(args):
    """``(model, input size, model kwargs)`` from ``--weights``, ``--num-classes``, ``--in-chans``
    and ``--input-size``."""
    import torch

    from ..models import create_model, default_input_size, parse_input_size

    weights = args.weights if args.weights else "default"
    torch.manual_seed(getattr(args, "seed", 0))  # models without weights: the same random init every run
    model = create_model(args.model, num_classes=args.num_classes, in_chans=args.in_chans, weights=weights)
    size = parse_input_size(args.input_size) if args.input_size else default_input_size(args.model, args.in_chans)
    kwargs = {k: v for k, v in (("num_classes", args.num_classes), ("in_chans", args.in_chans)) if v is not None}
    return model, tuple(size), kwargs


def save_weights(path: Path, model) -> None:
    from safetensors.torch import save

    from ..io import atomic_write_bytes

    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}))


def accuracy(model, data, root, size, progress: bool = True) -> float:
    from ..data import get_dataset, make_loader
    from ..finetune import evaluate

    ds = get_dataset(data, train=False, input_size=size, root=root, augment=False)
    loader = make_loader(ds, batch_size=256, train=False, workers=0)
    return evaluate(model, loader, next(model.parameters()).device, progress=progress)["acc"]


def latency_rows(base, sliced, size, device, batches, repeat):
    """Latency rows of the unpruned and pruned models, and the speed-ups."""
    from ..bench import bench_latency, latency_speedups

    rows = bench_latency({"unpruned": base, "pruned": sliced}, size, batches=batches, device=device, repeat=repeat,
                         progress=True)
    return rows, latency_speedups(rows, "unpruned")
