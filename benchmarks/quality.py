"""MRP against the usual criteria at equal MACs and equal fine-tuning (MRP_SPEC 7, part 3).

For each seed: prune the trained baseline to ``--target`` MACs reduction with each
method, fine-tune every pruned model with the same budget, and measure test
accuracy (full test set). The unpruned model gets the same fine-tuning, so
"within 0.3 points of the unpruned model" compares like with like.

Methods: ``mrp`` (the package defaults), ``l1``, ``fpgm``, ``random``, ``uniform``
(mrp_gpu's own planners) and ``tp-magnitude`` (Torch-Pruning's ``MetaPruner`` with
``GroupMagnitudeImportance`` and global pruning, stepped until the MACs target is met).

Budgets:
  cpu  the shipped demo (ResNet-20, Fashion-MNIST), 1 fine-tuning epoch, 3 seeds:
       about an hour on a 2-core CPU.
  gpu  resnet56 and resnet110 trained here first (--train-epochs), 30 fine-tuning
       epochs, 3 seeds; with ``--data cifar10 --data-root DIR`` it is the paper's setting.

Results go to ``OUT/quality_<budget>.json`` (every run as it finishes, so an
interrupted study resumes) and a markdown table beside it.

    python benchmarks/quality.py --budget cpu --out benchmarks/results
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from mrp_gpu.api import plan as make_plan
from mrp_gpu.config import MRPConfig
from mrp_gpu.data import calibration_batch, get_dataset, make_loader, num_classes
from mrp_gpu.executor import slice_model
from mrp_gpu.finetune import TrainConfig, evaluate, fit
from mrp_gpu.groups import build_groups, example_input
from mrp_gpu.io import atomic_write_text
from mrp_gpu.models import create_model, default_input_size

METHODS = ("mrp", "l1", "fpgm", "random", "uniform", "tp-magnitude")
BUDGETS = {
    "cpu": {"models": ["demo"], "finetune_epochs": 1, "train_epochs": 0, "seeds": 3, "lr": 0.01},
    "gpu": {"models": ["resnet56", "resnet110"], "finetune_epochs": 30, "train_epochs": 60, "seeds": 3, "lr": 0.01},
}


def prune_tp(model, size, target: float):
    """Torch-Pruning's magnitude pruner, global ranking, stepped until the MACs target holds."""
    import torch_pruning as tp

    model = copy.deepcopy(model)
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]  # the copy's own
    x = example_input(size)
    base, _ = tp.utils.count_ops_and_params(model, x)
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.9, global_pruning=True, iterative_steps=200,
                                  ignored_layers=[classifier])
    macs = base
    for _ in range(200):
        if macs <= (1 - target) * base:
            break
        pruner.step()
        macs, _ = tp.utils.count_ops_and_params(model, x)
    return model, 1 - macs / base


def mrp_variant(method: str, seed: int) -> MRPConfig:
    """``mrp`` is the defaults; ``mrp[cost_aware=1;replace=mean-sim]`` changes some of them."""
    config = MRPConfig(seed=seed)
    if "[" in method:
        fields = {f.name: f.type for f in config.__dataclass_fields__.values()}
        changes = {}
        for item in method[method.index("[") + 1:-1].split(";"):
            key, value = item.split("=")
            if key not in fields:
                raise SystemExit(f"{method}: unknown MRPConfig field {key!r}")
            cur = getattr(config, key)
            if isinstance(cur, bool):
                changes[key] = value in ("1", "true", "True")
            elif isinstance(cur, str):
                changes[key] = value
            else:  # numbers: an integral value stays an int (counts), otherwise a float (fractions)
                number = float(value)
                changes[key] = int(number) if number.is_integer() else number
        config = config.replace_with(**changes)
    return config


def prune(method, model, size, target, seed, args):
    if method == "none":
        return copy.deepcopy(model), 0.0
    if method == "tp-magnitude":
        return prune_tp(model, size, target)
    groups = build_groups(model, size)
    base_method = method.split("[")[0]
    config = mrp_variant(method, seed) if base_method == "mrp" else MRPConfig(seed=seed)
    calibration = None
    if config.features == "activation":  # training images, never the test set
        calibration = calibration_batch(args.data, size, n=config.calib_size, root=args.data_root, seed=seed)
    p = make_plan(model, size, target_flops=target, method=base_method, config=config, groups=groups,
                  calibration=calibration)
    return slice_model(model, p, groups), p.macs_reduction


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", choices=BUDGETS, default="cpu")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--data-root")
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--finetune-epochs", type=int)
    ap.add_argument("--train-epochs", type=int)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    budget = dict(BUDGETS[args.budget])
    for k in ("seeds", "finetune_epochs", "train_epochs"):
        if getattr(args, k) is not None:
            budget[k] = getattr(args, k)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"quality_{args.budget}.json"
    result = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    cuda = torch.cuda.is_available()
    device = f"CUDA {torch.cuda.get_device_name()}" if cuda else f"CPU, {torch.get_num_threads()} threads"
    command = " ".join([Path(sys.executable).name, *sys.argv])
    commands = result.get("commands", [])  # a resumed study: every invocation that added runs
    result.update({"commands": commands + [command] * (command not in commands), "date": date.today().isoformat(),
                   "machine": f"{platform.machine()}, {device}",
                   "budget": budget, "target": args.target, "data": args.data})
    done = {(r["model"], r["method"], r["seed"]) for r in result["runs"]}
    methods = ["none", *args.methods.split(",")]

    for name in budget["models"]:
        size = default_input_size(name, 1 if name == "demo" else None)
        test = get_dataset(args.data, train=False, input_size=size, root=args.data_root, augment=False)
        train = get_dataset(args.data, train=True, input_size=size, root=args.data_root)
        base = baseline(name, args, budget, size, train, test, out)
        for seed in range(budget["seeds"]):
            for method in methods:
                if (name, method, seed) in done:
                    continue
                t0 = time.time()
                torch.manual_seed(seed)
                pruned, reduction = prune(method, base, size, args.target, seed, args)
                before = evaluate(pruned, make_loader(test, batch_size=500, train=False, workers=0))["acc"]
                with tempfile.TemporaryDirectory() as tmp:
                    cfg = TrainConfig(epochs=budget["finetune_epochs"], lr=budget["lr"], seed=seed,
                                      workers=args.workers)
                    hist = fit(pruned, train, test, cfg, tmp, progress=False)
                run = {"model": name, "method": method, "seed": seed, "macs_reduction": reduction,
                       "acc_pruned": before, "acc_finetuned": hist[-1]["test_acc"],
                       "seconds": round(time.time() - t0, 1)}
                result["runs"].append(run)
                print(json.dumps(run), flush=True)
                save(result, path)
    save(result, path)
    print(markdown(result))
    return 0


def baseline(name, args, budget, size, train, test, out: Path):
    """The trained model every method starts from: the shipped demo, or trained here."""
    if name == "demo":
        return create_model("demo")
    weights = out / f"quality_{name}_{args.data}.safetensors"
    model = create_model(name, num_classes=num_classes(args.data, args.data_root), in_chans=size[0])
    if weights.is_file():
        from mrp_gpu.models import load_weights

        return load_weights(model, weights)
    cfg = TrainConfig(epochs=budget["train_epochs"], lr=0.1, workers=args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        fit(model, train, test, cfg, tmp, progress=False)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return model.eval()


def summarize(result):
    rows = {}
    for r in result["runs"]:
        rows.setdefault((r["model"], r["method"]), []).append(r)
    out = []
    for (model, method), runs in rows.items():
        acc = np.array([r["acc_finetuned"] for r in runs]) * 100
        pre = np.array([r["acc_pruned"] for r in runs]) * 100
        out.append({"model": model, "method": method, "seeds": len(runs),
                    "macs_reduction": float(np.mean([r["macs_reduction"] for r in runs])),
                    "acc_pruned_mean": float(pre.mean()), "acc_mean": float(acc.mean()),
                    "acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0})
    return out


def save(result, path: Path) -> None:
    result["summary"] = summarize(result)
    atomic_write_text(path, json.dumps(result, indent=1))
    atomic_write_text(path.with_suffix(".md"), markdown(result))


def markdown(result) -> str:
    b = result["budget"]
    lines = [f"# Pruning quality at -{result['target']:.0%} MACs ({result['data']})", "",
             f"{result['date']}, {result['machine']}; fine-tuning {b['finetune_epochs']} epoch(s) at lr {b['lr']} "
             f"(cosine), up to {b['seeds']} seeds (n per row). The runs were added by:", "",
             *[f"    {c}" for c in result["commands"]], "",
             *([result["relabelled"], ""] if "relabelled" in result else []),
             "| model | method | MACs removed | accuracy pruned, no retraining (%) | accuracy after fine-tuning (%) |",
             "|---|---|---|---|---|"]
    for s in sorted(summarize(result), key=lambda s: (s["model"], -s["acc_mean"])):
        name = "unpruned (same fine-tuning)" if s["method"] == "none" else s["method"]
        spread = f" ± {s['acc_std']:.2f}" if s["seeds"] > 1 else ""
        lines.append(f"| {s['model']} | {name} | {s['macs_reduction']:.1%} | {s['acc_pruned_mean']:.2f} | "
                     f"{s['acc_mean']:.2f}{spread} (n={s['seeds']}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
