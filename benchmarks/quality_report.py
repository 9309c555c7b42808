"""The results of ``quality.py``: runs summarised per cell, what the requested grids miss,
the markdown table and the plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from quality_methods import _base_config, label

from mrp_gpu.errors import MRPError


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
             "training images (a `distill=N` row: on its distillation images, before the steps); "
             "`finetune`: SGD from the pruned weights at lr 0.01; `scratch`: the pruned "
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
