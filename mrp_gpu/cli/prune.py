"""``prune`` (plan, refit, slice, check, save) and ``apply`` (the same from a saved plan.json)."""

from __future__ import annotations

import json
import time

from ..config import METHODS
from ..errors import MRPError
from .common import add_model_args, add_trace_timeout, model_from_args
from .options import add_config_args, config_from_args
from .output import finish

__all__ = ["register", "calibration_for"]


def calibration_for(args, config, size):
    """The calibration images the resolved ``config`` reads (activation features, the
    ``rebuild`` loss, the refit), drawn from ``--data``; None when it reads none.

    Raises :class:`MRPError` when an option asks for images and ``--data`` is missing.
    """
    from ..pruner.rules import RULES

    has_data = bool(getattr(args, "data", None))
    resolved = config.resolved(has_data)
    if not (resolved.features == "activation" or resolved.refit or RULES[resolved.replace].needs_calibration):
        return None
    from ..data import calibration_batch

    return calibration_batch(args.data, size, n=config.calib_size, root=args.data_root, seed=config.seed)


def _print_config(args, config) -> int:
    """``--print-config``: the resolved config and why each ``auto`` went the way it did."""
    resolved, why = config.resolve(bool(args.data))
    print(json.dumps({"method": args.method, "config": resolved.to_dict(), "auto": why}, indent=1))
    return 0


def _cmd_prune(args) -> int:
    from ..api import execute
    from ..api import plan as make_plan
    from ..dependency.self_attention import traced
    from ..executor import slice_model
    from ..finetune import resolve_device
    from ..pruner import calibrate
    from ..timing import Stopwatch

    config = config_from_args(args)
    if args.print_config:
        return _print_config(args, config)
    t0 = time.perf_counter()
    sw = Stopwatch()
    with sw.lap("load"):
        original, size, kwargs = model_from_args(args)
        sw.device = resolve_device(config.device)  # the whole data path runs on the model's device
        original = original.to(sw.device)
    with sw.lap("data"):
        calibration = calibration_for(args, config, size)
    with sw.lap("trace"):  # what is pruned; --measure-latency times the original
        model, groups = traced(original, size, timeout=args.trace_timeout)
    if args.method == "mrp" and calibration is not None:
        with sw.lap("calibration"):  # the one pass the plan reads, made here to be timed and shown apart
            calibration = calibrate(model, groups, config.resolve(True)[0], calibration,
                                    progress=not args.quiet)
    inner = Stopwatch(sw.device)
    with sw.lap("plan"):
        plan = make_plan(model, size, target_flops=args.target_flops, target_params=args.target_params,
                         method=args.method, config=config, groups=groups, model_name=args.model,
                         progress=not args.quiet, calibration=calibration, stopwatch=inner)
    sw.absorb(inner, "plan")
    source, plan = execute(model, plan, groups, config, calibration, progress=not args.quiet, stopwatch=sw)
    with sw.lap("slice"):
        sliced = slice_model(source, plan, groups)
    return finish(args, model, sliced, plan, groups, kwargs, t0, source, sw, original)


def _cmd_apply(args) -> int:
    from ..api import execute
    from ..config import MRPConfig
    from ..dependency.self_attention import traced
    from ..executor import slice_model
    from ..finetune import resolve_device
    from ..plan import PruningPlan
    from ..timing import Stopwatch

    t0 = time.perf_counter()
    sw = Stopwatch()
    plan = PruningPlan.load(args.plan)
    made_for = f"{plan.model} ({'x'.join(map(str, plan.input_size))})"
    if args.model is None:
        args.model = plan.model
    elif args.model != plan.model:
        raise MRPError(f"{args.plan}: this plan was made for {made_for}, not {args.model}")
    with sw.lap("load"):
        original, size, kwargs = model_from_args(args)
        sw.device = resolve_device("auto")
        original = original.to(sw.device)
    if tuple(size) != tuple(plan.input_size) and args.input_size is None:
        size = tuple(plan.input_size)
    with sw.lap("trace"):  # as the plan's model was
        model, groups = traced(original, size, timeout=args.trace_timeout)
    pc = plan.config  # a plan made with the refit is refit again here, on the same calibration images
    if pc.get("distill") and not args.data:
        raise MRPError(f"{args.plan} was made with distillation: pass --data (its training images)")
    config = None
    if pc.get("refit"):
        if not args.data:
            raise MRPError(f"{args.plan} was made with the least-squares refit: pass --data (its training images)")
        config = MRPConfig(refit=True, seed=pc.get("seed", 0), calib_size=pc.get("calib_size", MRPConfig.calib_size))
    with sw.lap("data"):
        images = calibration_for(args, config, size) if config else None
    source, plan = execute(model, plan, groups, config, images, progress=True, stopwatch=sw)
    with sw.lap("slice"):
        sliced = slice_model(source, plan, groups)
    return finish(args, model, sliced, plan, groups, kwargs, t0, source, sw, original)


def register(sub) -> None:
    p = sub.add_parser("prune", help="plan, slice and save a pruned model")
    add_model_args(p)
    p.add_argument("--target-flops", type=float, help="fraction of MACs to remove, e.g. 0.5")
    p.add_argument("--target-params", type=float, help="fraction of parameters to remove")
    p.add_argument("--method", choices=METHODS, default="mrp")
    p.add_argument("--out", default="pruned", help="output directory (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-report", dest="report", action="store_false", help="skip report.md")
    p.add_argument("--plots", action="store_true", help="add the report's plots (PNG: redundancy, channels kept, "
                   "trajectory)")
    p.add_argument("--measure-latency", action="store_true", help="time the pruned model against the unpruned one")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (every 'auto' decided, and why) and exit")
    add_config_args(p)
    p.set_defaults(func=_cmd_prune)

    p = sub.add_parser("apply", help="apply a saved plan.json to a model")
    p.add_argument("plan")
    p.add_argument("--model", help="zoo name (default: the one the plan records; must match it)")
    p.add_argument("--weights")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--in-chans", type=int)
    p.add_argument("--input-size")
    add_trace_timeout(p)
    p.add_argument("--data")
    p.add_argument("--data-root")
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_cmd_apply)
