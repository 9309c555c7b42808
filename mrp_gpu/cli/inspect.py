"""``analyze``, ``check``, ``models`` and ``bench``: look at a model without pruning it for keeps."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import METHODS
from ..errors import MRPError
from .common import add_model_args, command_line, latency_rows, model_from_args
from .options import add_config_args, config_from_args
from .prune import calibration_for

__all__ = ["register"]


def _cmd_analyze(args) -> int:
    from ..api import analyze
    from ..dependency.self_attention import traced
    from ..report import plot_report

    config = config_from_args(args)
    model, size, _ = model_from_args(args)
    model, groups = traced(model, size, timeout=args.trace_timeout)
    report = analyze(model, size, config, calibration=calibration_for(args, config, size), groups=groups)
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
    from ..api import check
    from ..dependency.self_attention import traced

    model, size, _ = model_from_args(args)
    model, groups = traced(model, size, timeout=args.trace_timeout)
    record = check(model, size, target_flops=args.target_flops, method=args.method, groups=groups)
    print(json.dumps({"model": args.model, "input_size": list(size), "supported": True, **record}, indent=1))
    return 0


def _cmd_models(args) -> int:
    from fnmatch import fnmatch

    from ..models import SHIPPED, default_input_size, list_models, model_card, support

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
            kinds = ", ".join(f"{k} {n}" for k, n in status.get("kinds", {}).items())
            note = f"  {status['status']}" + (f" ({kinds})" if kinds else "") + (
                f": {status['reason'][:90]}" if status["status"] != "pruned" else "")
        if name in SHIPPED:
            card = model_card(name)
            note = f"  trained on Fashion-MNIST, {card['epochs']} epochs, test accuracy {card['test_accuracy']:.1%}"
        try:
            size = "x".join(map(str, default_input_size(name)))
        except MRPError:  # a swept timm model without timm installed
            size = "?"
        print(f"{name:28s} {size}{note}")
    return 0


def _cmd_bench(args) -> int:
    from ..bench import KNN_WORKLOAD, bench_plan, bench_rmcd
    from ..finetune import resolve_device
    from ..io import atomic_write_text
    from ..models import create_model, default_input_size

    device = resolve_device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    result = {"device": str(device), "torch": _torch_version(), "command": command_line()}
    if args.latency:
        from ..executor import load_pruned

        arch = json.loads((Path(args.latency) / "arch.json").read_text())
        sliced = load_pruned(args.latency)
        base = create_model(arch["model"], weights=None, **arch["model_kwargs"])
        rows, speedups = latency_rows(base, sliced, tuple(arch["input_size"]), device, batches, args.repeat)
        result["latency"], result["speedup"] = rows, speedups
        for r in rows:
            print(f"{r['model']:9s} batch {r['batch']:3d} {r['format']:13s} {r['ms']:9.2f} ms "
                  f"{r['images_per_s']:9.1f} img/s")
        print("speed-up (best format): " + ", ".join(f"{k} {v:.2f}x" for k, v in speedups.items()))
    else:
        result["models"] = {}
        for name in args.models.split(","):
            workload = {} if name == "demo" else KNN_WORKLOAD
            config = config_from_args(args).replace_with(**workload)
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


def _torch_version() -> str:
    import torch

    return torch.__version__


def register(sub) -> None:
    p = sub.add_parser("analyze", help="redundancy of every layer (RMCD)")
    add_model_args(p)
    p.add_argument("--json", help="write the report as JSON here")
    p.add_argument("--plot", help="write a bar chart of redundancy per layer here (PNG)")
    add_config_args(p)
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser("bench", help="time RMCD stages and plans, or the latency of a pruned model")
    p.add_argument("--models", default="resnet50,resnet152,vgg16,demo")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--plan", action="store_true", help="also time a full MRP plan (--target-flops)")
    p.add_argument("--target-flops", type=float, default=0.5)
    p.add_argument("--latency", metavar="DIR", help="time a pruned directory against its unpruned base")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--json", help="write every figure here")
    add_config_args(p)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("check", help="prune a copy and verify: masked == sliced, costs exact")
    add_model_args(p)
    p.add_argument("--target-flops", type=float, default=0.3)
    p.add_argument("--method", choices=METHODS, default="mrp")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("models", help="list the model names (and input sizes)")
    p.add_argument("pattern", nargs="?", default="*")
    p.set_defaults(func=_cmd_models)
