"""``report.md`` and its plots: what MRP found and what it removed.

Plots, on request (``prune --plots``: matplotlib costs about a second; PNG, Agg backend,
no display needed):

* ``redundancy.png``: redundancy ``R`` per layer before and after pruning (plans that read ``R``);
* ``channels.png``: channels kept per layer against the original widths;
* ``trajectory.png``: ``R`` of the group pruned at each step (with ``cost_aware`` or
  a ``uniform`` allocation not necessarily the most redundant one), ``R`` of the most
  redundant group, and the MACs reduction, over the steps.
"""

from __future__ import annotations

import io
from pathlib import Path

from .io import atomic_write_bytes, atomic_write_text
from .plan import PruningPlan
from .redundancy.records import RedundancyReport

__all__ = ["plot_redundancy", "plot_channels", "plot_trajectory", "plot_report", "write_report", "after_what"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _short(names: list[str]) -> list[str]:
    return [n if len(n) <= 22 else "…" + n[-21:] for n in names]


def plot_redundancy(path, groups: list[str], before: list[float], after: list[float] | None = None,
                    title: str = "Redundancy per layer") -> None:
    """Bar chart of ``R`` per group (and after pruning, when given)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(groups) + 2), 4))
    x = range(len(groups))
    width = 0.4 if after is not None else 0.8
    ax.bar([i - (width / 2 if after is not None else 0) for i in x], before, width, label="before", color="#4C72B0")
    if after is not None:
        ax.bar([i + width / 2 for i in x], after, width, label="after", color="#DD8452")
        ax.legend()
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xticks(list(x), _short(groups), rotation=90, fontsize=7)
    ax.set_xlabel("channel group (its first producing layer)")
    ax.set_ylabel("R = channels / communities")
    ax.set_title(title)
    _save(fig, Path(path))


def plot_channels(path, plan: PruningPlan) -> None:
    """Original width and kept channels per group."""
    plt = _pyplot()
    ids = list(plan.sizes)
    sizes = [plan.sizes[g] for g in ids]
    kept = [plan.kept_count(g) for g in ids]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(ids) + 2), 4))
    x = list(range(len(ids)))
    ax.bar(x, sizes, 0.8, color="#D0D0D0", label="original")
    ax.bar(x, kept, 0.8, color="#55A868", label="kept")
    for i, (s, k) in enumerate(zip(sizes, kept)):
        ax.text(i, k, f"{k / s:.0%}", ha="center", va="bottom", fontsize=6)
    ax.set_xticks(x, _short(ids), rotation=90, fontsize=7)
    ax.set_ylabel("channels")
    ax.set_title("Channels kept per layer (MRP chose the ratios)")
    ax.legend()
    _save(fig, Path(path))


def plot_trajectory(path, plan: PruningPlan) -> None:
    """``R`` of the group pruned at each step and of the most redundant group, and the MACs reduction."""
    plt = _pyplot()
    steps = [t["step"] for t in plan.trajectory]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [t["R_before"] for t in plan.trajectory], lw=1, color="#4C72B0", label="layer pruned at this step")
    if "R_max" in plan.trajectory[0]:
        ax.plot(steps, [t["R_max"] for t in plan.trajectory], lw=1, ls="--", color="#55A868",
                label="most redundant layer")
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xlabel("step (channels removed)")
    ax.set_ylabel("redundancy R", color="#4C72B0")
    ax2 = ax.twinx()
    ax2.plot(steps, [1 - t["macs"] / plan.macs_before for t in plan.trajectory], color="#C44E52", lw=1)
    ax2.set_ylabel("MACs removed", color="#C44E52")
    ax2.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_title(f"MRP trajectory (allocation {plan.config.get('allocation', 'srp')})")
    _save(fig, Path(path))


def after_what(summary: dict) -> str:
    """What the pruned model's accuracy was measured after: no retraining, or distillation (no labels)."""
    steps = summary.get("config", {}).get("distill")
    return f"distilled {steps} steps, no labels" if steps else "no retraining"


def write_report(directory, plan: PruningPlan, summary: dict, plots: bool = False) -> str:
    """Write ``report.md`` into ``directory`` (and, with ``plots``, the plots it shows); return its name."""
    directory = Path(directory)
    ids = list(plan.sizes)
    before = plan.config.get("redundancy_before", {})
    after = plan.config.get("redundancy_after", {})
    has_r = bool(plan.trajectory) and "R_before" in plan.trajectory[0]  # plans that read R record it
    if plots:
        if before:
            plot_redundancy(directory / "redundancy.png", ids, [before.get(g, 1.0) for g in ids],
                            [after.get(g, 1.0) for g in ids])
        plot_channels(directory / "channels.png", plan)
        if has_r:
            plot_trajectory(directory / "trajectory.png", plan)
    lines = [f"# Pruning report: {plan.model} (method {plan.method})", "",
             "| | before | after | change |", "|---|---|---|---|",
             f"| MACs | {plan.macs_before:,} | {plan.macs_after:,} | -{plan.macs_reduction:.2%} |",
             f"| parameters | {plan.params_before:,} | {plan.params_after:,} | -{plan.params_reduction:.2%} |"]
    if "accuracy_before" in summary:
        lines.append(f"| accuracy ({summary['data']}, {after_what(summary)}) | {summary['accuracy_before']:.2%} | "
                     f"{summary['accuracy_after_no_retraining']:.2%} | "
                     f"{(summary['accuracy_after_no_retraining'] - summary['accuracy_before']) * 100:+.2f} pt |")
    if summary.get("latency_speedup"):
        lines.append("| inference speed-up (best memory format) | | | " + ", ".join(
            f"batch {k.split('@')[1]}: {v:.2f}x" for k, v in summary["latency_speedup"].items()) + " |")
    stages = summary.get("stages", {})
    parts = [k for k in ("calibration", "features") if stages.get(k)]
    planning = stages.get("plan", 0.0) + sum(stages[k] for k in parts)
    refit = (f" The refit took {stages['refit']:.2f} s, the BN re-estimation {stages.get('bn', 0.0):.2f} s."
             if "refit" in stages else "")
    lines += ["", f"Masked and sliced outputs agree to {summary.get('max_abs_diff_masked_vs_sliced', 0):.2e} "
              f"(max abs). Planning took {planning:.2f} s over {len(plan.trajectory)} steps"
              + (" (" + ", ".join(f"{k} {stages[k]:.2f} s" for k in parts) + ")" if parts else "") + "."
              + refit, ""]
    notes = list(plan.notes) + ([f"Weights: {summary['weights']}."] if summary.get("weights", "").startswith("random")
                                else [])
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    if plots:
        lines += ["## Plots", "", *(["![redundancy per layer](redundancy.png)", ""] if before else []),
                  "![channels kept](channels.png)", "", *(["![trajectory](trajectory.png)", ""] if has_r else [])]
    lines += _layer_table(plan, ids, before, after)
    auto = plan.config.get("auto", {})
    cfg = {k: v for k, v in plan.config.items() if not k.startswith("redundancy_") and k != "auto"}
    lines += ["", "## Configuration", "", "```", *(f"{k}: {v}" + (f"  (auto: {auto[k]})" if k in auto else "")
                                                 for k, v in cfg.items()), "```", ""]
    atomic_write_text(directory / "report.md", "\n".join(lines))
    return "report.md"


def _layer_table(plan: PruningPlan, ids: list[str], before: dict, after: dict) -> list[str]:
    """Per layer: width, kept, and what decided its count: ``R`` before and after (plans that
    read communities) and, for the loss allocation, the score of its last removal (MACs saved
    per unit of consumer loss: every layer was cut while its next removal scored highest)."""
    last = {}
    if plan.config.get("allocation") == "loss":
        for t in plan.trajectory:
            last[t["group"]] = t["score"]
    head = "| group | channels | kept |" + (" R before | R after |" if before else "") + \
        (" last removal: MACs saved per unit loss |" if last else "")
    lines = ["## Layers", "", head, "|" + "---|" * (head.count("|") - 1)]
    for g in ids:
        k = plan.kept_count(g)
        row = f"| `{g}` | {plan.sizes[g]} | {k} ({k / plan.sizes[g]:.0%}) |"
        if before:
            row += f" {before.get(g, float('nan')):.2f} | {after.get(g, float('nan')):.2f} |"
        if last:
            row += f" {last[g]:.3g} |" if g in last else " (none removed) |"
        lines.append(row)
    return lines


def plot_report(report: RedundancyReport, path) -> None:
    """The ``analyze --plot`` chart: redundancy per group of one analysis."""
    plot_redundancy(path, [r.group for r in report.layers], [r.redundancy for r in report.layers])
