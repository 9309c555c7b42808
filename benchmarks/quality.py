"""Pruning quality: MRP against the usual criteria at equal MACs, under three protocols.

Every method prunes the same trained model to the same MACs reduction; then one of

``recal``
    no training: BatchNorm statistics re-estimated on ``--recal-images`` training
    images (2,000). Seconds per run: the screen.
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
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import fcntl
import json
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import quality_tp
import study_rules  # noqa: F401  rules of older rows (mrp[replace=error], ...)
import torch
import torch.nn as nn

from mrp_gpu.api import execute
from mrp_gpu.api import plan as make_plan
from mrp_gpu.config import PAPER, MRPConfig
from mrp_gpu.criteria import group_scores
from mrp_gpu.data import calibration_batch, get_dataset, make_loader, num_classes
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.errors import MRPError
from mrp_gpu.executor import slice_model
from mrp_gpu.finetune import TrainConfig, evaluate, fit, recalibrate_bn
from mrp_gpu.integrations.torch_pruning import refit as tp_refit
from mrp_gpu.io import atomic_write_bytes, atomic_write_text
from mrp_gpu.models import SHIPPED, create_model, default_input_size, load_weights
from mrp_gpu.pruner import plan_from_orders

PROTOCOLS = ("recal", "finetune", "scratch")
METHODS = ("mrp", "mrp-paper", "l1", "fpgm", "random", "uniform", "mrp-alloc+l1", "uniform+mrp", *quality_tp.METHODS)
BUDGETS = {
    "cpu": {"models": ["demo", "vgg_demo"], "targets": [0.5, 0.7], "seeds": 3, "finetune_epochs": 3,
            "scratch_epochs": 3, "train_subset": 20000, "train_epochs": 0, "lr": 0.01, "scratch_lr": 0.1},
    "gpu": {"models": ["resnet56", "resnet110"], "targets": [0.5, 0.7], "seeds": 3, "finetune_epochs": 30,
            "scratch_epochs": 160, "train_subset": 0, "train_epochs": 160, "lr": 0.01, "scratch_lr": 0.1},
}
# MRPConfig fields that left the product, at the value every run without them had: older rows keep their labels
RETIRED = {"bn_scale": False, "corrected_dim": True, "floor_communities": False}
MRP_BASES = {"mrp", "mrp-paper", "uniform+mrp", "mrp-alloc+l1"}


# ----------------------------------------------------------------------------- methods
def _parse(method: str, seed: int) -> tuple[str, MRPConfig, dict]:
    """``base[field=value;...]`` -> (base, its MRPConfig, the fields changed in brackets)."""
    base, _, rest = method.partition("[")
    if base not in METHODS:
        raise SystemExit(f"unknown method {base!r}; choose from {', '.join(METHODS)}")
    config = MRPConfig(seed=seed)
    if base == "uniform+mrp":
        config = config.replace_with(allocation="uniform")
    if base == "mrp-paper":
        config = config.replace_with(**PAPER)
    if base == "mrp-alloc+l1":  # MRP's own allocation, the SRP loop
        config = config.replace_with(allocation="srp")
    if base not in MRP_BASES:  # a baseline: data-free, no refit unless asked for
        config = config.replace_with(features="weight", refit=False)
    fields = {f.name: str(f.type) for f in dataclasses.fields(config)} | {k: "bool" for k in RETIRED}
    changes = {}
    for item in filter(None, rest.rstrip("]").split(";")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"{method}: unknown MRPConfig field {key!r}")
        cur = getattr(config, key, None)
        if value in ("None", "none"):
            changes[key] = None
        elif "bool" in fields[key]:
            changes[key] = value in ("1", "true", "True")
        elif isinstance(cur, str):
            changes[key] = value
        else:  # numbers: an integral value stays an int (counts), otherwise a float (fractions)
            number = float(value)
            changes[key] = int(number) if number.is_integer() else number
    return base, config, changes


def parse_method(method: str, seed: int) -> tuple[str, MRPConfig]:
    """``base[field=value;...]`` -> (base, MRPConfig with those fields)."""
    base, config, changes = _parse(method, seed)
    if set(changes) & set(RETIRED):
        raise SystemExit(f"{method}: {', '.join(sorted(set(changes) & set(RETIRED)))} left MRPConfig; "
                         "committed rows with it still summarise, new runs cannot be made")
    return base, config.replace_with(**changes)


def label(base: str, config: dict) -> str:
    """A run's name: its base, plus how its config differs from today's defaults (MRP's
    resolved with data, as this benchmark always has it; a baseline's: no refit)."""
    if base == "uniform+mrp":  # an alias, named by what it is: MRP with a uniform allocation
        base = "mrp"
    if base in MRP_BASES:
        defaults = MRPConfig(seed=config.get("seed", 0)).resolved(has_data=True).to_dict()
        if base == "mrp-paper":
            defaults.update(PAPER)
        if base == "mrp-alloc+l1":
            defaults["allocation"] = "srp"
    else:
        defaults = {"refit": False, "min_channels": 1, "calib_size": MRPConfig.calib_size}  # what a baseline reads
    if base in MRP_BASES:
        defaults |= RETIRED
        if config.get("refit"):  # the refit replaces the merges: compensate changed nothing
            defaults.pop("compensate", None)
        elif base != "mrp-paper":  # compensate "auto": on without the refit
            defaults["compensate"] = True
    diff = {k: v for k, v in config.items() if k in defaults and k not in ("seed", "version") and defaults[k] != v}
    if not diff:
        return base
    show = {True: "1", False: "0"}
    return base + "[" + ";".join(f"{k}={show.get(v, v) if isinstance(v, bool) else v}"
                                 for k, v in sorted(diff.items())) + "]"


def prune(base: str, config: MRPConfig, model, size, target, calibration, labels=None, tp_cache=None):
    """(pruned model, MACs reduction, kept counts per group) for one method.

    A Torch-Pruning pruning is kept in ``tp_cache`` (a dict) for the next run of the same
    criterion, target and (for the data-driven ones) seed: its ``[refit=1]`` twin refits
    that same pruned model."""
    if base == "none":
        return copy.deepcopy(model), 0.0, {}
    if base in quality_tp.METHODS:
        tp_cache = {} if tp_cache is None else tp_cache
        key = (base, target, config.seed if base in quality_tp.NEEDS_DATA else None)
        if tp_cache.get("key") != key:
            tp_cache.update(zip(("pruned", "reduction", "pruner"),
                                quality_tp.prune(base, model, size, target, calibration, labels)), key=key)
        pruned = copy.deepcopy(tp_cache["pruned"])
        if config.refit:
            tp_refit(model, pruned, calibration, tp_cache["pruner"])
        return pruned, tp_cache["reduction"], {}
    groups = build_groups(model, size)
    if base == "mrp-alloc+l1":
        counts = make_plan(model, size, target_flops=target, config=config, groups=groups,
                           calibration=calibration)
        orders = [np.argsort(s, kind="stable") for s in group_scores(model, groups, "l1")]
        p = plan_from_orders(groups, [counts.kept_count(g) for g in groups.ids], orders, model="model",
                             method="mrp-alloc+l1", config=config.to_dict())
    else:
        method = "mrp" if base in MRP_BASES else base
        p = make_plan(model, size, target_flops=target, method=method, config=config, groups=groups,
                      calibration=calibration)
    source, p = execute(model, p, groups, config, calibration)
    return slice_model(source, p, groups), p.macs_reduction, {g: p.kept_count(g) for g in groups.ids}


def reinit(model: nn.Module, seed: int) -> nn.Module:
    """Fresh weights for a (pruned) architecture, initialised as the zoo's models are."""
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.reset_running_stats()
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


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
        run = {"model": self.name, "protocol": protocol, "tag": protocol_tag(protocol, self.budget),
               "target": target, "base": base, "method": method, "config": config.to_dict(), "seed": seed,
               "macs_reduction": round(reduction, 6), "kept": counts, "plan_seconds": round(time.time() - t0, 1)}
        if protocol in ("recal", "finetune"):  # without recalibration the figure says little: not measured
            run["acc_recal"] = self.accuracy(recalibrate_bn(pruned, self.recal), screen=protocol == "recal")
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


# ----------------------------------------------------------------------------- results
def run_label(r: dict) -> str:
    return "none" if r["base"] == "none" else label(r["base"], r["config"])


def is_default(r: dict) -> bool:
    return r["base"] == "mrp" and run_label(r) == "mrp"


def summarize(result: dict) -> list[dict]:
    rows: dict = {}
    for r in result["runs"]:  # one run per seed: a config reached under two names counts once
        seeds = rows.setdefault((r["model"], r["tag"], r["target"], run_label(r)), {})
        seeds.setdefault(r["seed"], r)
    rows = {k: list(v.values()) for k, v in rows.items()}
    out = []
    for (model, tag, target, name), runs in rows.items():
        acc = np.array([r["acc"] for r in runs]) * 100
        row = {"model": model, "protocol": tag, "target": target, "method": name, "n": len(runs),
               "seeds": sorted(r["seed"] for r in runs),
               "macs_reduction": float(np.mean([r["macs_reduction"] for r in runs])),
               "acc_mean": float(acc.mean()), "acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
               "default": is_default(runs[0]), "config": runs[0]["config"]}
        if "acc_recal" in runs[0]:
            row["acc_recal_mean"] = float(np.mean([r["acc_recal"] for r in runs]) * 100)
        out.append(row)
    return out


def find(result: dict, model: str, tag: str, target: float, method: str) -> dict | None:
    """The summary row of ``method`` (as written on the command line) in one cell, or None."""
    cell = (model, tag, target, label(*_base_config(method)))
    return next((s for s in result["summary"] if (s["model"], s["protocol"], s["target"], s["method"]) == cell), None)


def _cell(model: str, tag: str, target: float, name: str) -> tuple:
    """Where a run counts: the unpruned model (``none``) does not depend on the target."""
    return model, tag, None if name == "none" else target, name


def missing(result: dict) -> list[str]:
    """Cells of every requested grid that have fewer runs than the seeds asked for. A grid pins
    the config each of its methods meant when it was requested, labelled here by today's
    defaults, so a later default change neither hides its runs nor renames its gaps."""
    have = {}
    for s in summarize(result):
        cell = _cell(s["model"], s["protocol"], s["target"], s["method"])
        have[cell] = max(have.get(cell, 0), s["n"])
    out = {}
    for grid in result.get("grids", []):
        for model in grid["models"]:
            for tag in grid["tags"]:
                for target in grid["targets"]:
                    for method in grid["methods"]:
                        if method == "none" and target != grid["targets"][0]:
                            continue
                        try:  # a grid written by newer code may name options this code lacks
                            pin = grid.get("pins", {}).get(method)
                            name = method if method == "none" else label(*(pin or _base_config(method)))
                        except (SystemExit, MRPError):
                            continue
                        n = have.get(_cell(model, tag, target, name), 0)
                        key = (model, tag, target, name)
                        if n < grid["seeds"] and out.get(key, (0, 0))[1] < grid["seeds"]:
                            out[key] = (n, grid["seeds"])
    return [f"{m}, {t}, -{x:.0%}, {name}: {n} of {k} seeds" for (m, t, x, name), (n, k) in sorted(out.items())]


def _base_config(method: str) -> tuple[str, dict]:
    """The resolved config a method names, as its rows record it. A method of committed rows only
    (a retired field, an allocation or rule that left the product) gets its changes written
    over the resolved base config."""
    base, config, changes = _parse(method, 0)
    try:
        return base, config.replace_with(**changes).resolved(has_data=True).to_dict()
    except (MRPError, TypeError):
        return base, config.resolved(has_data=True).to_dict() | changes


def fmt(row: dict | None) -> str:
    if row is None:
        return "-"
    spread = f" ± {row['acc_std']:.2f}" if row["n"] > 1 else ""
    off = row["macs_reduction"] - row["target"]  # coarse granularity can overshoot the target: say so
    macs = f", -{row['macs_reduction']:.1%}" if abs(off) > 0.01 and row["method"] != "none" else ""
    return f"{row['acc_mean']:.2f}{spread} (n={row['n']}{macs})"


def markdown(result: dict) -> str:
    summary = summarize(result)
    lines = [f"# Pruning quality ({result['data']})", "",
             f"Updated {result['date']} on {result['machine']}. Accuracy on the whole test set (%; a tag "
             "with `test N`: its first N images, a screen), mean ± standard deviation over seeds (n per cell). "
             "`recal`: no training, BN statistics re-estimated on "
             "training images; `finetune`: SGD from the pruned weights at lr 0.01; `scratch`: the pruned "
             "architecture re-initialised and trained at lr 0.1 (the unpruned row: the full architecture, same "
             "budget). MRP rows are labelled by how their config differs from today's defaults; **bold** is the "
             "default. A cell names its MACs reduction when it is more than a point past the target. "
             "The runs were added by:", "",
             *[f"    {c}" for c in result["commands"]], "", *[f"Note: {n}" for n in result.get("notes", [])],
             *([""] if result.get("notes") else [])]
    for model in sorted({s["model"] for s in summary}):
        for tag in sorted({s["protocol"] for s in summary if s["model"] == model}):
            rows = [s for s in summary if s["model"] == model and s["protocol"] == tag]
            targets = sorted({s["target"] for s in rows if s["method"] != "none"})
            cells = {(s["method"], s["target"]): s for s in rows}
            ref = [s for s in rows if s["method"] == "none"]
            lines += [f"## {model}, {tag}", ""]
            if ref:
                lines += [f"Unpruned: {fmt(ref[0])}.", ""]
            lines += ["| method | " + " | ".join(f"-{t:.0%} MACs" for t in targets) + " |",
                      "|---|" + "---|" * len(targets)]
            methods = sorted({s["method"] for s in rows if s["method"] != "none"},
                             key=lambda m: (-max(cells[(m, t)]["acc_mean"] for t in targets if (m, t) in cells), m))
            for m in methods:
                name = f"**{m}**" if any(cells[(m, t)]["default"] for t in targets if (m, t) in cells) else m
                lines.append(f"| {name} | " + " | ".join(fmt(cells.get((m, t))) for t in targets) + " |")
            lines.append("")
    gaps = missing(result)
    lines += ["## Still missing from the requested grids", ""]
    lines += [f"- {g}" for g in gaps] if gaps else ["Nothing: every cell has its seeds."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Accuracy against MACs removed: a panel per model and protocol (screens left out), a
    line per method (the plain ones and their ``[refit=1]`` twins), error bars over seeds,
    the unpruned model as a dashed line, the default in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def shown(s):
        return s["method"] == "none" or s["default"] or "[" not in s["method"] or s["method"].endswith("[refit=1]")

    summary = [s for s in summarize(result) if shown(s) and ", test " not in s["protocol"]]
    models = sorted({s["model"] for s in summary})
    tags = sorted({s["protocol"] for s in summary})
    if not summary:
        return
    methods = sorted({s["method"] for s in summary if s["method"] != "none"})
    colours = {m: plt.cm.tab20(k % 20) for k, m in enumerate(methods)}
    fig, axes = plt.subplots(len(models), len(tags), figsize=(4.3 * len(tags), 3.6 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        for j, tag in enumerate(tags):
            ax = axes[i][j]
            rows = [s for s in summary if s["model"] == model and s["protocol"] == tag]
            if not rows:
                ax.axis("off")
                continue
            for s in rows:
                if s["method"] == "none":
                    ax.axhline(s["acc_mean"], ls="--", color="grey", lw=1, label="unpruned")
            for m in methods:
                pts = sorted((s for s in rows if s["method"] == m), key=lambda s: s["macs_reduction"])
                if not pts:
                    continue
                default = any(s["default"] for s in pts)
                ax.errorbar([100 * s["macs_reduction"] for s in pts], [s["acc_mean"] for s in pts],
                            yerr=[s["acc_std"] for s in pts], marker="o", ms=3, capsize=2,
                            label=m + (" (default)" if default else ""), color="k" if default else colours[m],
                            lw=2.2 if default else 1, ls="-" if "[" not in m or default else ":")
            ax.set_title(f"{model}: {tag}", fontsize=9)
            ax.set_xlabel("MACs removed (%)")
            ax.set_ylabel("test accuracy (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    tmp.replace(path)


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
