"""Pruning quality: MRP against the usual criteria at equal MACs, under three protocols.

Every method prunes the same trained model to the same MACs reduction; then one of

``recal``
    no training: BatchNorm statistics re-estimated on ``--recal-images`` training
    images (2,000). Seconds per run: the screen. A ``[distill=N]`` run is scored as the
    distillation leaves it (statistics re-estimated on its ``distill_size`` images, 2,048,
    before its steps, and fit to by them), as ``mrp-gpu prune --distill`` delivers it.
``finetune``
    ``--finetune-epochs`` (3) of SGD at lr 0.01 (cosine) from the pruned weights,
    optionally on a ``--train-subset`` of the training set.
``scratch``
    only the kept channel *counts* survive: the pruned architecture is re-initialised
    and trained from scratch, ``--scratch-epochs`` (3) at lr 0.1 on ``--train-subset``
    images (Liu et al., ICLR 2019: the test of an allocation). The unpruned
    architecture gets the same budget (the ``none`` row).

Methods: ``mrp`` (the package defaults, data-driven: this benchmark always has data),
``mrp[field=value;...]`` (``MRPConfig`` changed), ``mrp-paper`` (``--paper``: MRP as
published, the SRP loop ranking layers by ``R`` alone), ``l1``, ``fpgm``, ``random``, ``uniform`` (mrp_gpu's planners),
Torch-Pruning's own criteria as its users run them (``quality_tp.py``: ``tp-magnitude``,
``tp-taylor``, ``tp-hessian``, ``tp-lamp``, ``tp-bnscale``, global; ``tp-taylor-local``, per
group; the data-driven ones from the calibration images MRP gets, with their labels),
and two that split MRP's decisions apart: ``mrp-alloc+l1`` (the per-group kept counts
of MRP's own allocation, the SRP loop, with smallest L1 inside each group) and
``uniform+mrp`` (uniform counts, MRP's removal order inside each group; with today's
defaults the same as ``mrp``). Any method takes
``[refit=1]`` (least-squares refit of the consumers: ``mrp_gpu.refit``, or for
Torch-Pruning's methods ``mrp_gpu.integrations.torch_pruning.refit`` given the pruner) and
``[min_channels=...]`` (mrp_gpu's planners). An MRP row is labelled by how its config differs from the
defaults of the code that summarises it, so a row run with the defaults of the day
stays labelled truly when the defaults change; ``"default": true`` marks the rows
run with the current defaults.

Budgets (flags override): ``cpu``: the shipped ``demo`` (ResNet-20) and ``vgg_demo``,
Fashion-MNIST, targets 0.5 and 0.7, 3 seeds. ``gpu``: resnet56 and resnet110 trained
here first (``--train-epochs``), 30 fine-tuning and 160 scratch epochs on the whole
training set; with ``--data cifar10 --data-root DIR`` it is the paper's setting.

Results: ``OUT/quality_<budget>.json`` (every run as it finishes: an interrupted study
resumes where it stopped), a markdown table beside it that also lists what the
requested grid still misses, and ``quality_<budget>.png`` (accuracy against MACs
removed, one line per method, error bars over seeds).

    python benchmarks/quality.py --budget cpu --protocols recal --out benchmarks/results

The methods are parsed and run by ``quality_methods.py``; ``quality_report.py`` summarises
the runs into the table, the gaps and the plot.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import quality_tp
import torch
from quality_methods import METHODS, _base_config, label, parse_method, prune, reinit
from quality_report import _cell, markdown, plot, run_label, summarize

from mrp_gpu.config import MRPConfig
from mrp_gpu.data import calibration_batch, get_dataset, make_loader, num_classes
from mrp_gpu.distill import distill
from mrp_gpu.errors import MRPError
from mrp_gpu.finetune import TrainConfig, evaluate, fit, recalibrate_bn
from mrp_gpu.io import atomic_write_bytes, atomic_write_text
from mrp_gpu.models import SHIPPED, create_model, default_input_size, load_weights

PROTOCOLS = ("recal", "finetune", "scratch")
BUDGETS = {
    "cpu": {"models": ["demo", "vgg_demo"], "targets": [0.5, 0.7], "seeds": 3, "finetune_epochs": 3,
            "scratch_epochs": 3, "train_subset": 20000, "train_epochs": 0, "lr": 0.01, "scratch_lr": 0.1},
    "gpu": {"models": ["resnet56", "resnet110"], "targets": [0.5, 0.7], "seeds": 3, "finetune_epochs": 30,
            "scratch_epochs": 160, "train_subset": 0, "train_epochs": 160, "lr": 0.01, "scratch_lr": 0.1},
}


# ----------------------------------------------------------------------------- protocols
def protocol_tag(protocol: str, budget: dict) -> str:
    sub = f" / {budget['train_subset']} images" if budget["train_subset"] else ""
    if protocol == "recal":
        test = f", test {budget['test_images']}" if budget["test_images"] else ""
        return f"recal {budget['recal_images']} images{test}"
    if protocol == "finetune":
        return f"finetune {budget['finetune_epochs']} ep{sub}"
    return f"scratch {budget['scratch_epochs']} ep{sub}"


class Bench:
    """The data of one model: test set, training set (or its subset), calibration images."""

    def __init__(self, name: str, args, budget: dict, out: Path):
        self.name, self.args, self.budget = name, args, budget
        self.size = default_input_size(name, 1 if args.data == "fashion-mnist" else None)
        self.test = get_dataset(args.data, train=False, input_size=self.size, root=args.data_root, augment=False)
        if budget["test_images"]:  # a screen: the first N test images, the same for every run
            self.screen = torch.utils.data.Subset(self.test, range(budget["test_images"]))
        else:
            self.screen = self.test
        self.train = get_dataset(args.data, train=True, input_size=self.size, root=args.data_root)
        self.recal = calibration_batch(args.data, self.size, n=budget["recal_images"], root=args.data_root)
        self.model = self._baseline(out)
        self.tp_cache: dict = {}  # a Torch-Pruning pruning, for its [refit=1] twin

    def _baseline(self, out: Path):
        """The trained model every method starts from: shipped, or trained here once."""
        if self.name in SHIPPED:
            return create_model(self.name)
        weights = out / f"quality_{self.name}_{self.args.data}.safetensors"
        model = create_model(self.name, num_classes=num_classes(self.args.data, self.args.data_root),
                             in_chans=self.size[0], weights=None)
        if weights.is_file():
            return load_weights(model, weights)
        cfg = TrainConfig(epochs=self.budget["train_epochs"], lr=0.1, workers=self.args.workers)
        with tempfile.TemporaryDirectory() as tmp:
            fit(model, self.train, self.test, cfg, tmp, progress=False)
        from safetensors.torch import save

        atomic_write_bytes(weights, save({k: v.contiguous() for k, v in model.state_dict().items()}))
        return model.eval()

    def accuracy(self, model, screen: bool = False) -> float:
        data = self.screen if screen else self.test
        return evaluate(model, make_loader(data, batch_size=500, train=False, workers=0))["acc"]

    def train_set(self, seed: int):
        n = self.budget["train_subset"]
        if not n or n >= len(self.train):
            return self.train
        idx = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(1000 + seed))[:n]
        return torch.utils.data.Subset(self.train, idx.tolist())

    def run(self, protocol: str, method: str, target: float, seed: int) -> dict:
        base, config = ("none", MRPConfig(seed=seed)) if method == "none" else parse_method(method, seed)
        config = config.resolved(has_data=True)
        calibration = labels = None
        if config.features == "activation" or config.refit or base in quality_tp.NEEDS_DATA:
            calibration, labels = calibration_batch(self.args.data, self.size, n=config.calib_size,  # never test
                                                    root=self.args.data_root, seed=seed, labels=True)
        t0 = time.time()
        torch.manual_seed(seed)
        pruned, reduction, counts = prune(base, config, self.model, self.size, target, calibration, labels,
                                          self.tp_cache)
        if config.distill:  # as ``mrp-gpu prune --distill`` does: the first calib_size images are calibration's
            images = calibration_batch(self.args.data, self.size, n=config.distill_size, root=self.args.data_root,
                                       seed=seed)
            distill(pruned, self.model, images, steps=config.distill, seed=seed)
        run = {"model": self.name, "protocol": protocol, "tag": protocol_tag(protocol, self.budget),
               "target": target, "base": base, "method": method, "config": config.to_dict(), "seed": seed,
               "macs_reduction": round(reduction, 6), "kept": counts, "plan_seconds": round(time.time() - t0, 1)}
        if protocol in ("recal", "finetune"):  # without recalibration the figure says little: not measured
            # a distilled model is scored as distillation leaves it: its steps were fit to the BN
            # statistics it re-estimated on its own images, and re-estimating them again undoes part of that
            scored = pruned if config.distill else recalibrate_bn(pruned, self.recal)
            run["acc_recal"] = self.accuracy(scored, screen=protocol == "recal")
        if protocol == "recal":
            run["acc"] = run["acc_recal"]
        else:
            if protocol == "scratch":
                pruned = reinit(pruned, seed)
            b = self.budget
            epochs, lr = (b["finetune_epochs"], b["lr"]) if protocol == "finetune" else (b["scratch_epochs"],
                                                                                         b["scratch_lr"])
            with tempfile.TemporaryDirectory() as tmp:
                hist = fit(pruned, self.train_set(seed), self.test,
                           TrainConfig(epochs=epochs, lr=lr, seed=seed, workers=self.args.workers), tmp,
                           progress=False)
            run["acc"] = hist[-1]["test_acc"]
        run["seconds"] = round(time.time() - t0, 1)
        return run



def update(path: Path, change) -> dict:
    """Read the results file, apply ``change(result)``, write it back: all under a lock, so
    several studies can run at once into one file without losing each other's runs."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = json.loads(path.read_text()) if path.is_file() else {"runs": []}
        change(result)
        result["summary"] = summarize(result)
        atomic_write_text(path, json.dumps(result, indent=1))
        atomic_write_text(path.with_suffix(".md"), markdown(result))
    return result


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", choices=BUDGETS, default="cpu")
    ap.add_argument("--protocols", default=",".join(PROTOCOLS))
    ap.add_argument("--targets", help="MACs fractions to remove, e.g. 0.5,0.7")
    ap.add_argument("--models", help="zoo names, e.g. demo,vgg_demo")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated; ';' inside [...]")
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--finetune-epochs", type=int)
    ap.add_argument("--scratch-epochs", type=int)
    ap.add_argument("--train-subset", type=int, help="training images for finetune/scratch (0: all)")
    ap.add_argument("--recal-images", type=int, default=2000)
    ap.add_argument("--test-images", type=int, default=0,
                    help="recal: score on the first N test images only (a quick screen; 0: all)")
    ap.add_argument("--train-epochs", type=int, help="gpu budget: epochs to train the unshipped models")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--data-root")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    budget = dict(BUDGETS[args.budget], recal_images=args.recal_images, test_images=args.test_images)
    for k in ("seeds", "finetune_epochs", "scratch_epochs", "train_subset", "train_epochs"):
        if getattr(args, k) is not None:
            budget[k] = getattr(args, k)
    if args.models:
        budget["models"] = args.models.split(",")
    if args.targets:
        budget["targets"] = [float(t) for t in args.targets.split(",")]
    protocols = args.protocols.split(",")
    if set(protocols) - set(PROTOCOLS):
        raise SystemExit(f"--protocols: choose from {', '.join(PROTOCOLS)}")
    methods = [m for m in _split_methods(args.methods)]
    for m in methods:
        parse_method(m, 0)  # a typo fails now, not after an hour of training

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"quality_{args.budget}.json"
    cuda = torch.cuda.is_available()
    device = f"CUDA {torch.cuda.get_device_name()}" if cuda else f"CPU, {torch.get_num_threads()} threads"
    command = " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else " ".join(argv)
    tags = [protocol_tag(p, budget) for p in protocols]

    # the pins keep what each method means under today's defaults (a later default change renames rows)
    grid = {"models": budget["models"], "tags": tags, "targets": budget["targets"], "methods": ["none", *methods],
            "seeds": budget["seeds"], "pins": {m: list(_base_config(m)) for m in methods}}

    def start(result):
        commands, grids = result.get("commands", []), result.get("grids", [])
        result.update({"commands": commands + [command] * (command not in commands), "date": date.today().isoformat(),
                       "machine": f"{platform.machine()}, {device}", "data": args.data,
                       "grids": grids + [grid] * (grid not in grids)})

    result = update(path, start)
    done = {(*_cell(r["model"], r["tag"], r["target"], run_label(r)), r["seed"]) for r in result["runs"]}
    benches = {}
    for protocol, tag in zip(protocols, tags):  # the cheap protocol first, then seed by seed
        for seed in range(budget["seeds"]):
            for name in budget["models"]:
                for target in budget["targets"]:
                    for method in ["none", *methods]:
                        if method == "none" and target != budget["targets"][0]:
                            continue  # the unpruned model does not depend on the target
                        name_ = method if method == "none" else label(*_base_config(method))
                        if (*_cell(name, tag, target, name_), seed) in done:
                            continue
                        if name not in benches:
                            benches[name] = Bench(name, args, budget, out)
                        try:
                            run = benches[name].run(protocol, method, target, seed)
                        except MRPError as e:  # e.g. a target a variant cannot reach: say so, go on
                            print(f"{name} {tag} -{target:.0%} {method} seed {seed}: {e}", flush=True)
                            continue
                        result = update(path, lambda res, run=run: res["runs"].append(run))
                        done.add((*_cell(name, tag, target, name_), seed))
                        print(json.dumps({k: run[k] for k in ("model", "tag", "target", "method", "seed",
                                                              "macs_reduction", "acc", "seconds")}), flush=True)
    plot(result, path.with_suffix(".png"))
    print(markdown(result))
    return 0


def _split_methods(text: str) -> list[str]:
    """Split on commas outside brackets: ``mrp[a=1;b=2],l1``."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [m for m in [*out, cur] if m]


if __name__ == "__main__":
    sys.exit(main())
