"""What ``prune`` and ``apply`` write and print: the check, the accuracy, the output directory, the table."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import stage
from .common import accuracy, latency_rows

__all__ = ["finish"]


def _eval_dataset(args):
    """The dataset to report accuracy on: --data, or Fashion-MNIST for a shipped model when it is installed."""
    from ..models import SHIPPED

    if args.data:
        return args.data
    if args.model in SHIPPED:
        from ..data import fashion_mnist_available

        return "fashion-mnist" if fashion_mnist_available(args.data_root) else None
    return None


def finish(args, model, sliced, plan, groups, kwargs, t0, source, sw, original=None) -> int:
    """Check, then write plan, weights, arch and summary atomically into --out; print the table.

    ``source`` is what was sliced (``model`` itself, or ``model`` refit with ``--refit``);
    ``model`` is the unpruned one as traced; ``original`` the user's, before its
    self-attention was rewritten (``--measure-latency``'s baseline; default ``model``);
    ``sw`` holds the laps of the stages before.
    """
    import time

    from ..api import masked_vs_sliced
    from ..executor import save_pruned
    from ..io import atomic_output_dir, atomic_write_text

    with sw.lap("check"):
        diff = masked_vs_sliced(source, plan, sliced, groups)
    if plan.config.get("distill"):  # after the check: distillation changes what the sliced model computes
        _distill(args, model, sliced, plan, sw)
    summary = {"model": args.model, "method": plan.method,
               "macs_before": plan.macs_before, "macs_after": plan.macs_after,
               "params_before": plan.params_before, "params_after": plan.params_after,
               "macs_reduction": round(plan.macs_reduction, 6), "params_reduction": round(plan.params_reduction, 6),
               "max_abs_diff_masked_vs_sliced": diff,
               "weights": _weights_note(args), "config": plan.config}
    if getattr(args, "measure_latency", False):
        device = next(model.parameters()).device
        rows, speedups = latency_rows(original or model, sliced, plan.input_size, device, (1, 64), 10)
        summary["latency"], summary["latency_speedup"] = rows, speedups
    data = _eval_dataset(args)
    if data:
        summary["data"] = data
        show = not getattr(args, "quiet", False)
        with sw.lap("accuracy"):
            summary["accuracy_before"] = accuracy(model, data, args.data_root, plan.input_size, show)
            summary["accuracy_after_no_retraining"] = accuracy(sliced, data, args.data_root, plan.input_size, show)
    with atomic_output_dir(args.out, force=args.force) as tmp:
        with sw.lap("save"), stage("saving", sliced):
            plan.save(tmp / "plan.json")
            save_pruned(tmp, sliced, plan, kwargs)
        if getattr(args, "report", False):
            from ..report import write_report

            summary["stages"] = _stages(sw)  # what the report says planning took
            with sw.lap("report"):
                summary["report"] = write_report(tmp, plan, summary, plots=args.plots)
        summary["seconds"] = round(time.perf_counter() - t0, 3)
        summary["stages"] = _stages(sw)
        atomic_write_text(tmp / "summary.json", json.dumps(summary, indent=1))
    _print_summary(summary, args.out)
    return 0


def _distill(args, model, sliced, plan, sw) -> None:
    """``--distill`` steps on ``--distill-size`` training images of ``--data`` (drawn with the
    plan's seed, so that the first ``--calib-size`` are the calibration images)."""
    from ..data import calibration_batch
    from ..distill import distill

    c = plan.config
    with sw.lap("distill"):
        images = calibration_batch(args.data, plan.input_size, n=c["distill_size"], root=args.data_root,
                                   seed=c.get("seed", 0))
        distill(sliced, model, images, steps=c["distill"], seed=c.get("seed", 0),
                progress=not getattr(args, "quiet", False))


def _stages(sw) -> dict[str, float]:
    """Seconds per stage, in the order they ran."""
    return {k: round(v, 3) for k, v in sw.laps.items()}


def _weights_note(args) -> str:
    """Where the weights came from; random ones are said to be meaningless for redundancy."""
    from ..models import SHIPPED

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
        from ..report import after_what

        rows.append((f"accuracy ({s['data']})", f"{s['accuracy_before']:.2%} -> "
                     f"{s['accuracy_after_no_retraining']:.2%}  ({after_what(s)})"))
    if s.get("latency_speedup"):
        rows.append(("latency speed-up", ", ".join(f"batch {k.split('@')[1]}: {v:.2f}x"
                                                   for k, v in s["latency_speedup"].items())))
    if s.get("report"):
        rows.append(("report", str(Path(out) / "report.md")))
    rows.append(("outputs", str(out)))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
