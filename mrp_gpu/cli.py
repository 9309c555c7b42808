"""The ``mrp-gpu`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import TRACE_TIMEOUT
from .errors import MRPError, stage

__all__ = ["main"]


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="zoo name: resnet20..110, vgg16_cifar, demo, vgg_demo, or a torchvision model")
    p.add_argument("--weights", help="local state_dict (.safetensors/.pt) or torchvision weights name")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--in-chans", type=int)
    p.add_argument("--input-size", help="CxHxW (default: the model's own, e.g. 3x224x224)")
    _add_trace_timeout(p)


def _add_trace_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trace-timeout", type=float, default=TRACE_TIMEOUT, metavar="S",
                   help=f"give up tracing the model's dependencies after S seconds (default {TRACE_TIMEOUT:g}; "
                        "0: no limit)")


def _model_from_args(args):
    import torch

    from .models import create_model, default_input_size, parse_input_size

    weights = args.weights if args.weights else "default"
    torch.manual_seed(getattr(args, "seed", 0))  # models without weights: the same random init every run
    model = create_model(args.model, num_classes=args.num_classes, in_chans=args.in_chans, weights=weights)
    size = parse_input_size(args.input_size) if args.input_size else default_input_size(args.model, args.in_chans)
    kwargs = {k: v for k, v in (("num_classes", args.num_classes), ("in_chans", args.in_chans)) if v is not None}
    return model, tuple(size), kwargs


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
    from .data import get_dataset
    from .finetune import TrainConfig, fit

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


def _save_weights(path: Path, model) -> None:
    from safetensors.torch import save

    from .io import atomic_write_bytes

    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}))


def _cmd_train(args) -> int:
    from .data import num_classes
    from .io import atomic_write_text

    args.num_classes = args.num_classes or num_classes(args.data, args.data_root)
    model, size, kwargs = _model_from_args(args)
    out = Path(args.out)

    def finalize(history):
        _save_weights(out / "model.safetensors", model)
        atomic_write_text(out / "model.json", json.dumps(
            {"model": args.model, "model_kwargs": kwargs, "input_size": list(size), "data": args.data,
             "epochs": args.epochs, "seed": args.seed, "test_acc": history[-1]["test_acc"],
             "command": " ".join(["mrp-gpu"] + sys.argv[1:])}, indent=1))

    return _train(args, model, size, out, finalize)


def _cmd_finetune(args) -> int:
    """Retrain a pruned model directory; the result loads with ``load_pruned`` like the input."""
    from .executor import load_pruned
    from .io import atomic_write_text

    src = Path(args.directory)
    model = load_pruned(src)
    arch = json.loads((src / "arch.json").read_text())
    out = Path(args.out) if args.out else src / "finetuned"

    def finalize(history):
        _save_weights(out / "model.safetensors", model)
        atomic_write_text(out / "arch.json", json.dumps(arch, indent=1))
        atomic_write_text(out / "finetune.json", json.dumps(
            {"source": str(src), "data": args.data, "epochs": args.epochs, "lr": args.lr,
             "test_acc": history[-1]["test_acc"], "command": " ".join(["mrp-gpu"] + sys.argv[1:])}, indent=1))

    return _train(args, model, tuple(arch["input_size"]), out, finalize)


def _cmd_eval(args) -> int:
    from .executor import load_pruned

    target = Path(args.target)
    if target.is_dir():
        model, size = load_pruned(target), tuple(json.loads((target / "arch.json").read_text())["input_size"])
    else:
        args.model = args.target
        model, size, _ = _model_from_args(args)
    from .finetune import resolve_device

    model.to(resolve_device(args.device))
    acc = _accuracy(model, args.data, args.data_root, size)
    print(json.dumps({"target": str(target), "data": args.data, "accuracy": acc}))
    return 0


def _add_rmcd_args(p: argparse.ArgumentParser) -> None:
    from .config import ALLOCATIONS, FEATURES, PAPER, REPLACE_RULES, MRPConfig

    d = MRPConfig()
    g = p.add_argument_group("redundancy (RMCD) options")
    g.add_argument("--features", choices=FEATURES, default=d.features)
    g.add_argument("--z", type=float, help="one z for every group: tau_g = z / sqrt(d_g) "
                   "(default: per group, from --chance-degree)")
    g.add_argument("--chance-degree", type=float, default=d.chance_degree,
                   help="chance neighbours per channel the default threshold allows (default %(default)s)")
    g.add_argument("--raw-dim", action="store_true", help="d_g = feature length, not its participation ratio")
    g.add_argument("--bn-scale", action="store_true",
                   help="append BN scales to weight features (pair it with --tau: see MRPConfig.bn_scale)")
    g.add_argument("--tau", type=float, help="absolute cosine threshold for every group (overrides --z)")
    g.add_argument("--k-max", type=int, help="at most this many strongest neighbours per channel")
    g.add_argument("--resolution", type=float, default=d.resolution)
    g.add_argument("--similarity", choices=("torch", "kernel"), default=d.similarity,
                   help="graph builder: torch, or the fused Numba CUDA kernel (GPU)")
    g.add_argument("--backend", default=d.backend,
                   help="Louvain engine: auto, numba, igraph, leiden, torch, cugraph, networkx")
    g.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--data", help="dataset for activation features and accuracy (e.g. fashion-mnist)")
    g.add_argument("--data-root", help="where the dataset lives (default: its standard place)")
    g = p.add_argument_group("pruning (SRP) options")
    g.add_argument("--replace", choices=REPLACE_RULES, default=d.replace,
                   help="which channel goes: auto (rebuild with --data, error-in-community without), rebuild "
                   "(what the refit consumers lose least), ... (see MRPConfig.replace)")
    g.add_argument("--step", type=float, default=d.step,
                   help="channels per iteration: a count, or a fraction (<1) of the group's width")
    g.add_argument("--min-channels", type=float, default=d.min_channels)
    g.add_argument("--round-to", type=int, default=d.round_to)
    g.add_argument("--cost-aware", action=argparse.BooleanOptionalAction, default=d.cost_aware,
                   help="rank groups by R times the MACs a channel costs (default on: see MRPConfig.cost_aware)")
    g.add_argument("--no-compensate", dest="compensate", action="store_false",
                   help="do not fold removed channels into their most similar community partner")
    g.add_argument("--allocation", choices=ALLOCATIONS, default=d.allocation,
                   help="how the cut is spread over layers: uniform, srp (the paper's loop), log-r, loss (the "
                   "layer whose next channel costs least per MAC saved)")
    g.add_argument("--floor-communities", action="store_true",
                   help="no layer goes below the number of communities it had before pruning")
    g.add_argument("--refit", action=argparse.BooleanOptionalAction, default=d.refit,
                   help="refit the layers that read pruned channels by least squares on --data training images")
    g.add_argument("--paper", action="store_true",
                   help="MRP as published: " + ", ".join(f"{k}={v}" for k, v in PAPER.items())
                   + " (overrides those options)")
    g.add_argument("--refresh-every", type=int, default=d.refresh_every)


def _config_from_args(args):
    from .config import PAPER, MRPConfig

    mc = args.min_channels
    config = MRPConfig(features=args.features, z=args.z, chance_degree=args.chance_degree,
                       corrected_dim=not args.raw_dim, bn_scale=args.bn_scale, tau=args.tau, k_max=args.k_max,
                       resolution=args.resolution, similarity=args.similarity,
                       backend=args.backend, device=args.device, seed=args.seed, replace=args.replace,
                       step=int(args.step) if args.step >= 1 else args.step,
                       min_channels=int(mc) if mc >= 1 else mc, round_to=args.round_to,
                       cost_aware=args.cost_aware, compensate=args.compensate, allocation=args.allocation,
                       floor_communities=args.floor_communities, refit=args.refit,
                       refresh_every=args.refresh_every)
    return config.replace_with(**PAPER) if args.paper else config


def _eval_dataset(args):
    """The dataset to report accuracy on: --data, or Fashion-MNIST for a shipped model when it is installed."""
    from .models import SHIPPED

    if args.data:
        return args.data
    if args.model in SHIPPED:
        from .data import fashion_mnist_available

        return "fashion-mnist" if fashion_mnist_available(args.data_root) else None
    return None


def _accuracy(model, data, root, size, progress: bool = True) -> float:
    from .data import get_dataset, make_loader
    from .finetune import evaluate

    ds = get_dataset(data, train=False, input_size=size, root=root, augment=False)
    loader = make_loader(ds, batch_size=256, train=False, workers=0)
    return evaluate(model, loader, next(model.parameters()).device, progress=progress)["acc"]


def _finish(args, model, sliced, plan, groups, kwargs, t0, source, sw) -> int:
    """Check, then write plan, weights, arch and summary atomically into --out; print the table.

    ``source`` is what was sliced (``model`` itself, or ``model`` refit with ``--refit``);
    ``model`` is the unpruned one; ``sw`` holds the laps of the stages before.
    """
    import time

    from .api import masked_vs_sliced
    from .executor import save_pruned
    from .io import atomic_output_dir, atomic_write_text

    with sw.lap("check"):
        diff = masked_vs_sliced(source, plan, sliced, groups)
    summary = {"model": args.model, "method": plan.method,
               "macs_before": plan.macs_before, "macs_after": plan.macs_after,
               "params_before": plan.params_before, "params_after": plan.params_after,
               "macs_reduction": round(plan.macs_reduction, 6), "params_reduction": round(plan.params_reduction, 6),
               "max_abs_diff_masked_vs_sliced": diff,
               "weights": _weights_note(args), "config": plan.config}
    if getattr(args, "measure_latency", False):
        device = next(model.parameters()).device
        rows, speedups = _latency_rows(model, sliced, plan.input_size, device, (1, 64), 10)
        summary["latency"], summary["latency_speedup"] = rows, speedups
    data = _eval_dataset(args)
    if data:
        summary["data"] = data
        show = not getattr(args, "quiet", False)
        with sw.lap("accuracy"):
            summary["accuracy_before"] = _accuracy(model, data, args.data_root, plan.input_size, show)
            summary["accuracy_after_no_retraining"] = _accuracy(sliced, data, args.data_root, plan.input_size, show)
    with atomic_output_dir(args.out, force=args.force) as tmp:
        with sw.lap("save"), stage("saving", sliced):
            plan.save(tmp / "plan.json")
            save_pruned(tmp, sliced, plan, kwargs)
        if getattr(args, "report", False):
            from .report import write_report

            with sw.lap("report"):
                summary["report"] = write_report(tmp, plan, summary)
        summary["seconds"] = round(time.perf_counter() - t0, 3)
        summary["stages"] = _stages(sw)
        atomic_write_text(tmp / "summary.json", json.dumps(summary, indent=1))
    _print_summary(summary, args.out)
    return 0


def _stages(sw) -> dict[str, float]:
    """Seconds per stage, in the order they ran; ``plan`` without the ``features`` it contains."""
    laps = dict(sw.laps)
    if "features" in laps and "plan" in laps:
        laps["plan"] -= laps["features"]
    return {k: round(v, 3) for k, v in laps.items()}


def _weights_note(args) -> str:
    """Where the weights came from; random ones are said to be meaningless for redundancy."""
    from .models import SHIPPED

    if args.weights:
        return str(args.weights)
    if args.model in SHIPPED:
        return f"shipped ({args.model}, trained)"
    return (f"random init, seed {getattr(args, 'seed', 0)}: redundancy of random weights means nothing "
            "(pass --weights)")


def _fmt(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def _print_summary(s: dict, out) -> None:
    rows = [("model", f"{s['model']}  (method {s['method']})"),
            ("MACs", f"{_fmt(s['macs_before'])} -> {_fmt(s['macs_after'])}  (-{s['macs_reduction']:.1%})"),
            ("params", f"{_fmt(s['params_before'])} -> {_fmt(s['params_after'])}  (-{s['params_reduction']:.1%})"),
            ("masked vs sliced", f"max |diff| {s['max_abs_diff_masked_vs_sliced']:.2e}"),
            ("time", f"{s['seconds']:.2f} s  (" + ", ".join(f"{k} {v:.2f}" for k, v in s["stages"].items()
                                                             if v >= 0.005) + ")")]
    if s.get("weights", "").startswith("random"):
        rows.insert(1, ("weights", s["weights"]))
    if "accuracy_before" in s:
        rows.append((f"accuracy ({s['data']})", f"{s['accuracy_before']:.2%} -> "
                     f"{s['accuracy_after_no_retraining']:.2%}  (no retraining)"))
    if s.get("latency_speedup"):
        rows.append(("latency speed-up", ", ".join(f"batch {k.split('@')[1]}: {v:.2f}x"
                                                   for k, v in s["latency_speedup"].items())))
    if s.get("report"):
        rows.append(("report", str(Path(out) / "report.md")))
    rows.append(("outputs", str(out)))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def _cmd_prune(args) -> int:
    import time

    from .api import execute
    from .api import plan as make_plan
    from .executor import slice_model
    from .groups import build_groups
    from .timing import Stopwatch

    t0 = time.perf_counter()
    sw = Stopwatch()
    config = _config_from_args(args)
    with sw.lap("load"):
        model, size, kwargs = _model_from_args(args)
    with sw.lap("calibration"):
        calibration = _calibration(args, config, size)
    with sw.lap("trace"):
        groups = build_groups(model, size, timeout=args.trace_timeout)
    with sw.lap("plan"):
        plan = make_plan(model, size, target_flops=args.target_flops, target_params=args.target_params,
                         method=args.method, config=config, groups=groups, model_name=args.model,
                         progress=not args.quiet, calibration=calibration, stopwatch=sw)
    with sw.lap("refit"):
        source, plan = execute(model, plan, groups, config, calibration)
    with sw.lap("slice"):
        sliced = slice_model(source, plan, groups)
    return _finish(args, model, sliced, plan, groups, kwargs, t0, source, sw)


def _calibration(args, config, size):
    """Training images for activation features and the least-squares refit.

    Loaded when an option asks for them, and with ``--data`` for the ``auto`` defaults
    (data-driven MRP when there is data); None otherwise.
    """
    wants = config.features == "activation" or config.refit is True
    auto = config.features == "auto" or config.refit is None
    if not getattr(args, "data", None):
        if wants:
            need = "--features activation" if config.features == "activation" else "--refit"
            raise MRPError(f"{need} needs --data (a calibration batch of training images)")
        return None
    if not (wants or auto):
        return None
    from .data import calibration_batch

    return calibration_batch(args.data, size, n=config.calib_size, root=args.data_root, seed=config.seed)


def _cmd_analyze(args) -> int:
    from .api import analyze
    from .groups import build_groups
    from .report import plot_report

    config = _config_from_args(args)
    model, size, _ = _model_from_args(args)
    report = analyze(model, size, config, calibration=_calibration(args, config, size),
                     groups=build_groups(model, size, timeout=args.trace_timeout))
    if args.json:
        report.save_json(args.json)
    if args.plot:
        plot_report(report, args.plot)
    width = max(len(r.group) for r in report.layers)
    print(f"{'group':<{width}}  channels  communities  redundancy  modularity  edges")
    for r in report.layers:
        print(f"{r.group:<{width}}  {r.channels:8d}  {r.communities:11d}  {r.redundancy:10.3f}  "
              f"{r.modularity:10.3f}  {r.edges:5d}")
    t = report.timings
    print("time: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in t.items()))
    return 0


def _cmd_check(args) -> int:
    from .api import check
    from .groups import build_groups

    model, size, _ = _model_from_args(args)
    record = check(model, size, target_flops=args.target_flops, method=args.method,
                   groups=build_groups(model, size, timeout=args.trace_timeout))
    print(json.dumps({"model": args.model, "input_size": list(size), "supported": True, **record}, indent=1))
    return 0


def _cmd_models(args) -> int:
    from fnmatch import fnmatch

    from .models import SHIPPED, default_input_size, list_models, model_card, support

    swept = support()
    if swept["models"]:
        dates = ", ".join(f"{zoo} {day}" for zoo, day in swept.get("dates", {}).items())
        print(f"# status: the zoo sweeps ({dates}; MRP to -{swept['target']:.0%} MACs, benchmarks/zoo_sweep.py): "
              "pruned, partly pruned (groups left whole), refused; no status: not swept. Any timm model: "
              "timm/<name>")
    timm_swept = [n for n in swept["models"] if n.startswith("timm/") and fnmatch(n, args.pattern)]
    for name in list_models(args.pattern) + timm_swept:
        note = ""
        status = swept["models"].get(name)
        if status is not None:
            note = f"  {status['status']}" + (f": {status['reason'][:90]}" if status["status"] != "pruned" else "")
        if name in SHIPPED:
            card = model_card(name)
            note = f"  trained on Fashion-MNIST, {card['epochs']} epochs, test accuracy {card['test_accuracy']:.1%}"
        try:
            size = "x".join(map(str, default_input_size(name)))
        except MRPError:  # a swept timm model without timm installed
            size = "?"
        print(f"{name:28s} {size}{note}")
    return 0


def _latency_rows(base, sliced, size, device, batches, repeat):
    from .bench import bench_latency, latency_speedups

    rows = bench_latency({"unpruned": base, "pruned": sliced}, size, batches=batches, device=device, repeat=repeat,
                         progress=True)
    return rows, latency_speedups(rows, "unpruned")


def _cmd_bench(args) -> int:
    from .bench import KNN_WORKLOAD, bench_plan, bench_rmcd
    from .finetune import resolve_device
    from .io import atomic_write_text
    from .models import create_model, default_input_size

    device = resolve_device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    result = {"device": str(device), "torch": torch_version(), "command": " ".join(["mrp-gpu", *sys.argv[1:]])}
    if args.latency:
        from .executor import load_pruned

        arch = json.loads((Path(args.latency) / "arch.json").read_text())
        sliced = load_pruned(args.latency)
        base = create_model(arch["model"], weights=None, **arch["model_kwargs"])
        rows, speedups = _latency_rows(base, sliced, tuple(arch["input_size"]), device, batches, args.repeat)
        result["latency"], result["speedup"] = rows, speedups
        for r in rows:
            print(f"{r['model']:9s} batch {r['batch']:3d} {r['format']:13s} {r['ms']:9.2f} ms "
                  f"{r['images_per_s']:9.1f} img/s")
        print("speed-up (best format): " + ", ".join(f"{k} {v:.2f}x" for k, v in speedups.items()))
    else:
        result["models"] = {}
        for name in args.models.split(","):
            workload = {} if name == "demo" else KNN_WORKLOAD
            config = _config_from_args(args).replace_with(**workload)
            model = create_model(name).to(device)
            size = default_input_size(name)
            row = bench_rmcd(model, size, config, repeat=args.repeat)
            if args.plan:
                row.update(bench_plan(model, size, config, target_flops=args.target_flops))
            result["models"][name] = row
            print(f"{name:16s} RMCD {row['rmcd'] * 1e3:8.1f} ms (features {row['features'] * 1e3:.1f}, similarity "
                  f"{row['similarity'] * 1e3:.1f}, louvain {row['louvain'] * 1e3:.1f}, redundancy "
                  f"{row['redundancy'] * 1e3:.1f}); {row['filters']} filters, {row['filters_per_s']:.3g} filters/s, "
                  f"{row['edges_per_s']:.3g} edges/s" + (f"; plan {row['plan_s']:.2f} s ({row['steps']} steps)"
                                                         if args.plan else ""))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1))
    return 0


def torch_version() -> str:
    import torch

    return torch.__version__


def _cmd_apply(args) -> int:
    import time

    from .api import execute
    from .config import MRPConfig
    from .executor import slice_model
    from .groups import build_groups
    from .plan import PruningPlan
    from .timing import Stopwatch

    t0 = time.perf_counter()
    sw = Stopwatch()
    plan = PruningPlan.load(args.plan)
    made_for = f"{plan.model} ({'x'.join(map(str, plan.input_size))})"
    if args.model is None:
        args.model = plan.model
    elif args.model != plan.model:
        raise MRPError(f"{args.plan}: this plan was made for {made_for}, not {args.model}")
    with sw.lap("load"):
        model, size, kwargs = _model_from_args(args)
    if tuple(size) != tuple(plan.input_size) and args.input_size is None:
        size = tuple(plan.input_size)
    with sw.lap("trace"):
        groups = build_groups(model, size, timeout=args.trace_timeout)
    pc = plan.config  # a plan made with --refit is refit again here, on the same calibration images
    config = MRPConfig(refit=True, seed=pc.get("seed", 0), calib_size=pc.get("calib_size", MRPConfig.calib_size)) \
        if pc.get("refit") else None
    with sw.lap("refit"):
        source, plan = execute(model, plan, groups, config,
                               _calibration(args, config, size) if config else None)
    with sw.lap("slice"):
        sliced = slice_model(source, plan, groups)
    return _finish(args, model, sliced, plan, groups, kwargs, t0, source, sw)


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="mrp-gpu", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mrp-gpu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a zoo model on a local dataset")
    _add_model_args(p)
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

    from .config import METHODS

    p = sub.add_parser("prune", help="plan, slice and save a pruned model")
    _add_model_args(p)
    p.add_argument("--target-flops", type=float, help="fraction of MACs to remove, e.g. 0.5")
    p.add_argument("--target-params", type=float, help="fraction of parameters to remove")
    p.add_argument("--method", choices=METHODS, default="mrp")
    p.add_argument("--out", default="pruned", help="output directory (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-report", dest="report", action="store_false", help="skip report.md and plots")
    p.add_argument("--measure-latency", action="store_true", help="time the pruned model against the unpruned one")
    _add_rmcd_args(p)
    p.set_defaults(func=_cmd_prune)

    p = sub.add_parser("analyze", help="redundancy of every layer (RMCD)")
    _add_model_args(p)
    p.add_argument("--json", help="write the report as JSON here")
    p.add_argument("--plot", help="write a bar chart of redundancy per layer here (PNG)")
    _add_rmcd_args(p)
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser("bench", help="time RMCD stages and plans, or the latency of a pruned model")
    p.add_argument("--models", default="resnet50,resnet152,vgg16,demo")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--plan", action="store_true", help="also time a full MRP plan (--target-flops)")
    p.add_argument("--target-flops", type=float, default=0.5)
    p.add_argument("--latency", metavar="DIR", help="time a pruned directory against its unpruned base")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--json", help="write every figure here")
    _add_rmcd_args(p)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("check", help="prune a copy and verify: masked == sliced, costs exact")
    _add_model_args(p)
    p.add_argument("--target-flops", type=float, default=0.3)
    p.add_argument("--method", choices=METHODS, default="mrp")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("models", help="list the model names (and input sizes)")
    p.add_argument("pattern", nargs="?", default="*")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("apply", help="apply a saved plan.json to a model")
    p.add_argument("plan")
    p.add_argument("--model", help="zoo name (default: the one the plan records; must match it)")
    p.add_argument("--weights")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--in-chans", type=int)
    p.add_argument("--input-size")
    _add_trace_timeout(p)
    p.add_argument("--data")
    p.add_argument("--data-root")
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_cmd_apply)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "out", None) and args.command in ("prune", "apply"):
            from .io import check_output_dir

            check_output_dir(args.out, force=args.force)  # before any work, not after it
        return args.func(args)
    except MRPError as e:
        print(f"mrp-gpu {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        atomic = args.command in ("prune", "apply")  # outputs appear whole or not at all
        print(f"mrp-gpu {args.command}: interrupted" + (f"; nothing was written to {args.out}" if atomic else ""),
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
