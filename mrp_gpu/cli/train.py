"""``train``, ``finetune`` and ``eval``: fit a zoo model, retrain a pruned one, measure either."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..errors import MRPError
from .common import accuracy, add_model_args, command_line, model_from_args, save_weights

__all__ = ["register"]


def _add_train_args(p: argparse.ArgumentParser, lr: float, epochs: int | None) -> None:
    p.add_argument("--data", required=True, help="fashion-mnist, cifar10, cifar100 or imagefolder")
    p.add_argument("--data-root", help="where the dataset lives (default: its standard place)")
    p.add_argument("--epochs", type=int, default=epochs, required=epochs is None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true", help="carry on from OUT/checkpoint.pt")
    p.add_argument("--force", action="store_true", help="restart in a non-empty --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _train(args, model, size, out: Path, finalize) -> int:
    """Fit ``model`` on ``args.data``; rank 0 then calls ``finalize(history)``."""
    from ..data import get_dataset
    from ..finetune import TrainConfig, fit

    if out.is_dir() and any(out.iterdir()) and not (args.resume or args.force):
        raise MRPError(f"--out {str(out)!r} already exists; pass --resume to continue or --force to restart")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      label_smoothing=args.label_smoothing, workers=args.workers, seed=args.seed)
    train_set = get_dataset(args.data, train=True, input_size=size, root=args.data_root)
    test_set = get_dataset(args.data, train=False, input_size=size, root=args.data_root)
    history = fit(model, train_set, test_set, cfg, out, resume=args.resume, device=args.device,
                  progress=not args.quiet)
    if int(os.environ.get("RANK", 0)) == 0:
        finalize(history)
        print(f"test accuracy {history[-1]['test_acc']:.4f}; outputs in {out}")
    return 0


def _cmd_train(args) -> int:
    from ..data import num_classes
    from ..io import atomic_write_text

    args.num_classes = args.num_classes or num_classes(args.data, args.data_root)
    model, size, kwargs = model_from_args(args)
    out = Path(args.out)

    def finalize(history):
        save_weights(out / "model.safetensors", model)
        atomic_write_text(out / "model.json", json.dumps(
            {"model": args.model, "model_kwargs": kwargs, "input_size": list(size), "data": args.data,
             "epochs": args.epochs, "seed": args.seed, "test_acc": history[-1]["test_acc"],
             "command": command_line()}, indent=1))

    return _train(args, model, size, out, finalize)


def _cmd_finetune(args) -> int:
    """Retrain a pruned model directory; the result loads with ``load_pruned`` like the input."""
    from ..executor import load_pruned
    from ..io import atomic_write_text

    src = Path(args.directory)
    model = load_pruned(src)
    arch = json.loads((src / "arch.json").read_text())
    out = Path(args.out) if args.out else src / "finetuned"

    def finalize(history):
        save_weights(out / "model.safetensors", model)
        atomic_write_text(out / "arch.json", json.dumps(arch, indent=1))
        atomic_write_text(out / "finetune.json", json.dumps(
            {"source": str(src), "data": args.data, "epochs": args.epochs, "lr": args.lr,
             "test_acc": history[-1]["test_acc"], "command": command_line()}, indent=1))

    return _train(args, model, tuple(arch["input_size"]), out, finalize)


def _cmd_eval(args) -> int:
    from ..executor import load_pruned

    target = Path(args.target)
    if target.is_dir():
        model, size = load_pruned(target), tuple(json.loads((target / "arch.json").read_text())["input_size"])
    else:
        args.model = args.target
        model, size, _ = model_from_args(args)
    from ..finetune import resolve_device

    model.to(resolve_device(args.device))
    acc = accuracy(model, args.data, args.data_root, size)
    print(json.dumps({"target": str(target), "data": args.data, "accuracy": acc}))
    return 0




def register(sub) -> None:
    p = sub.add_parser("train", help="train a zoo model on a local dataset")
    add_model_args(p)
    _add_train_args(p, lr=0.1, epochs=10)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("finetune", help="retrain a pruned model (a directory written by prune or apply)")
    p.add_argument("directory")
    _add_train_args(p, lr=0.01, epochs=None)
    p.add_argument("--out", help="output directory (default: DIRECTORY/finetuned)")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("eval", help="test accuracy of a pruned directory or a zoo model")
    p.add_argument("target", help="a directory with arch.json + model.safetensors, or a zoo name")
    p.add_argument("--data", required=True)
    p.add_argument("--data-root")
    p.add_argument("--weights")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--in-chans", type=int)
    p.add_argument("--input-size")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_eval)
