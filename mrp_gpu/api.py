"""The small public API: ``plan``, ``prune``, ``apply_plan`` (and ``analyze``, see below).

Each function takes a model and its input shape ``(C, H, W)``, works on copies, and
returns plain objects; nothing here touches the caller's model.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn

from .community import cpu_backend, louvain_graph, modularity
from .community.graph import symmetric_union
from .config import METHODS, MRPConfig
from .criteria import group_scores
from .dependency.groups import ChannelGroups, example_input, model_device
from .dependency.self_attention import traced
from .distill import distill
from .errors import ModelError, MRPError, stage
from .executor import apply_masks, slice_model
from .finetune import resolve_device
from .plan import PruningPlan
from .pruner import Target, plan_global, plan_mrp, plan_uniform
from .redundancy.calibration import Calibration
from .redundancy.features import GroupFeatures, compute_features
from .redundancy.records import LayerRedundancy, RedundancyReport, layer_records
from .redundancy.similarity import build_graphs
from .timing import Stopwatch

__all__ = ["METHODS", "analyze", "redundancy_of", "plan", "prune", "execute", "apply_plan", "masked_vs_sliced",
           "check"]



def redundancy_of(feats, config: MRPConfig, stopwatch: Stopwatch | None = None) -> tuple[LayerRedundancy, ...]:
    """Similarity graphs, batched Louvain and per-group records for ready features.

    A GPU that runs out of memory is not the end: the stage is redone on the CPU
    (torch similarity, igraph Louvain) with a warning.
    """
    try:
        return _redundancy_of(feats, config, stopwatch)
    except torch.OutOfMemoryError:
        warnings.warn("the GPU ran out of memory during similarity/Louvain; redoing them on the CPU",
                      RuntimeWarning, stacklevel=2)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        cpu = GroupFeatures(feats.ids, tuple(r.cpu() for r in feats.rows))
        return _redundancy_of(cpu, config.replace_with(device="cpu", similarity="torch",
                                                         backend=cpu_backend()), stopwatch)


def _redundancy_of(feats, config: MRPConfig, stopwatch: Stopwatch | None) -> tuple[LayerRedundancy, ...]:
    sw = stopwatch or Stopwatch(feats.rows[0].device if len(feats) else "cpu")
    with sw.lap("similarity"):
        graph = build_graphs(feats, z=config.z, tau=config.tau, k_max=config.k_max,
                             chance_degree=config.chance_degree,
                             engine=config.similarity)
    with sw.lap("louvain"):
        ug = symmetric_union(graph.edge_index, graph.edge_weight, graph.num_nodes, graph.ptr)
        labels = louvain_graph(ug, backend=config.backend, resolution=config.resolution, seed=config.seed)
    with sw.lap("redundancy"):
        q = modularity(ug, labels, config.resolution).tolist()
        records = layer_records(graph.ids, graph.ptr, labels, graph.edges_per_graph().tolist(), q, graph.tau)
    return records


def analyze(model: nn.Module, input_size, config: MRPConfig | None = None, *,
            calibration: torch.Tensor | None = None, groups: ChannelGroups | None = None) -> RedundancyReport:
    """Redundancy of every channel group (RMCD), in one batched pass.

    Parameters
    ----------
    model : nn.Module
        A trained model (random weights show no redundancy).
    input_size : tuple of int
        (C, H, W).
    config : MRPConfig, optional
        Features, threshold (``z`` or ``tau``), ``k_max``, Louvain backend, device.
    calibration : Tensor, optional
        Images for ``features="activation"``.

    Returns
    -------
    RedundancyReport
        One :class:`LayerRedundancy` per group, and the time of each stage.

    Examples
    --------
    >>> import mrp_gpu
    >>> from mrp_gpu.models import create_model
    >>> report = mrp_gpu.analyze(create_model("resnet20"), (3, 32, 32))
    >>> len(report.layers)
    12
    """
    config = (config or MRPConfig()).resolved(calibration is not None)
    device = resolve_device(config.device)
    sw = Stopwatch(device)
    with sw.lap("groups"):
        if groups is None:
            model, groups = traced(model, input_size)
    with sw.lap("features"):
        here = model_device(model) == device or config.features == "weight"
        work = model if here else copy.deepcopy(model).to(device)
        feats = compute_features(work, groups, features=config.features,
                                 calibration=calibration, pool=config.pool, device=device)
    records = redundancy_of(feats, config, sw)
    return RedundancyReport(records, config.to_dict(), {k: round(v, 6) for k, v in sw.laps.items()})


def plan(model: nn.Module, input_size, *, target_flops: float | None = None, target_params: float | None = None,
         method: str = "mrp", config: MRPConfig | None = None, groups: ChannelGroups | None = None,
         model_name: str = "model", progress: bool = False, calibration: torch.Tensor | Calibration | None = None,
         stopwatch: Stopwatch | None = None) -> PruningPlan:
    """Decide which channels to remove so that the target is met.

    Parameters
    ----------
    model : nn.Module
        A trained model (MRP finds no redundancy in random weights).
    input_size : tuple of int
        (C, H, W) at which MACs are counted.
    target_flops, target_params : float, optional
        Fractions to remove; at least one.
    method : {"mrp", "l1", "fpgm", "random", "uniform"}
    config : MRPConfig, optional
    groups : ChannelGroups, optional
        Reuse a trace made earlier with :func:`mrp_gpu.dependency.groups.build_groups`.
    calibration : Tensor or Calibration, optional
        Training images for the data-driven plan (the ``rebuild`` loss, activation
        features), or what :func:`mrp_gpu.pruner.calibrate` measured on them.
    stopwatch : Stopwatch, optional
        MRP records its calibration pass and its features in laps of these names.

    Returns
    -------
    PruningPlan
    """
    if method not in METHODS:
        raise MRPError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    asked = config or MRPConfig()
    target = Target(target_flops, target_params)
    if groups is None:
        model, groups = traced(model, input_size)
    with stage("planning", model):
        if method == "mrp":
            # unresolved: plan_mrp makes the ``auto`` choices, some of which depend on the groups
            return plan_mrp(model, groups, target, asked, model_name=model_name, progress=progress,
                            calibration=calibration, stopwatch=stopwatch)
        # a baseline reads only these: MRP's other options (and their combinations) do not concern it
        read = ("min_channels", "seed", "refit", "calib_size", "distill", "distill_size")
        config = MRPConfig(**{k: getattr(asked, k) for k in read}).resolved(calibration is not None)
        cfg = {k: getattr(config, k) for k in read}
        if method == "uniform":
            return plan_uniform(groups, group_scores(model, groups, "l1"), target, model=model_name,
                                min_channels=config.min_channels, config=cfg)
        scores = group_scores(model, groups, method, seed=config.seed)
        return plan_global(groups, scores, target, model=model_name, method=method,
                           min_channels=config.min_channels, config=cfg)


def apply_plan(model: nn.Module, plan: PruningPlan, groups: ChannelGroups | None = None) -> nn.Module:
    """A sliced copy of ``model`` (the plan is checked against the model first)."""
    return slice_model(model, plan, groups)


SLICING_TOLERANCE = 1e-3  # relative: beyond float rounding, slicing changed what the model computes


@torch.no_grad()
def masked_vs_sliced(model: nn.Module, plan: PruningPlan, sliced: nn.Module,
                     groups: ChannelGroups | None = None, batch: int = 2) -> float:
    """Largest absolute difference between the masked and the sliced model's outputs.

    Raises
    ------
    ModelError
        When the outputs differ in shape or by more than ``SLICING_TOLERANCE`` of their
        scale: some layer of the model is not sliced the way it is masked (an
        unsupported operation), so the pruned model would be wrong and is refused.
    """
    masked = apply_masks(model, plan, groups).eval()
    x = example_input(plan.input_size, batch=batch, device=model_device(model))
    was = sliced.training
    sliced.eval()
    try:
        with stage("checking the masked model", masked):
            a = masked(x)
        with stage("checking the sliced model", sliced):
            b = sliced(x)
    finally:
        sliced.train(was)
    if a.shape != b.shape:
        raise ModelError(f"slicing changed the output shape from {tuple(a.shape)} to {tuple(b.shape)}: "
                         "this model has layers mrp_gpu cannot prune")
    diff = float((a - b).abs().max())
    if not diff <= SLICING_TOLERANCE * max(float(a.abs().max()), 1e-6):
        raise ModelError(f"the sliced model computes something else than the masked one (max |diff| {diff:.3g}): "
                         "this model has operations mrp_gpu cannot slice consistently")
    return diff


def prune(model: nn.Module, input_size, *, target_flops: float | None = None, target_params: float | None = None,
          method: str = "mrp", config: MRPConfig | None = None, model_name: str = "model",
          calibration: torch.Tensor | None = None,
          distill_images: torch.Tensor | None = None) -> tuple[nn.Module, PruningPlan]:
    """Plan and slice in one call: returns ``(pruned copy, plan)``.

    ``calibration`` (training images) is needed by the data-driven plan and by ``refit``
    (consumers refit by least squares before slicing); the calibration pass the plan
    makes on them is made once. With ``config.distill`` steps, the sliced model is then
    distilled from ``model`` (:func:`mrp_gpu.distill.distill`) on ``distill_images``
    (default: ``calibration``). ``model`` is left as it is; in the pruned copy, each
    ``nn.MultiheadAttention`` called as self-attention is an equal
    :class:`~mrp_gpu.dependency.self_attention.SelfAttention`, so that it can lose whole heads.

    Examples
    --------
    >>> import mrp_gpu
    >>> from mrp_gpu.models import create_model
    >>> pruned, p = mrp_gpu.prune(create_model("resnet20"), (3, 32, 32), target_flops=0.3, method="l1")
    >>> p.macs_reduction >= 0.3
    True
    """
    teacher = model
    model, groups = traced(model, input_size)
    p = plan(model, input_size, target_flops=target_flops, target_params=target_params, method=method,
             config=config, groups=groups, model_name=model_name, calibration=calibration)
    source, p = execute(model, p, groups, config, calibration)
    sliced = slice_model(source, p, groups)
    masked_vs_sliced(source, p, sliced, groups)  # refuse a model whose slicing would change it
    if p.config.get("distill"):
        images = calibration if distill_images is None else distill_images
        if images is None:
            raise MRPError("distill needs training images: pass distill_images= or calibration=")
        distill(sliced, teacher, images, steps=p.config["distill"], seed=p.config.get("seed", 0))
    return sliced, p


def execute(model: nn.Module, plan: PruningPlan, groups: ChannelGroups, config: MRPConfig | None = None,
            calibration: torch.Tensor | Calibration | None = None, *, progress: bool = False,
            stopwatch: Stopwatch | None = None) -> tuple[nn.Module, PruningPlan]:
    """What to slice and how: ``(model, plan)`` as they are, or, with ``config.refit``, the
    model with its consumers refit by least squares on the ``calibration`` images (and its
    BN statistics re-estimated on them) and the plan without merges
    (:func:`mrp_gpu.refit.refit`; ``stopwatch`` gets ``refit`` and ``bn`` laps)."""
    config = config or MRPConfig()
    if not (calibration is not None if config.refit == "auto" else config.refit):  # only ``refit`` is read here
        return model, plan
    if calibration is None:
        raise MRPError("refit needs calibration images (training data): pass calibration= or --data")
    from .finetune import recalibrate_bn
    from .refit import refit

    images = calibration.images if isinstance(calibration, Calibration) else calibration
    sw = stopwatch or Stopwatch(model_device(model))
    with stage("refit", model):
        with sw.lap("refit"):
            masked, plan = refit(model, plan, images, groups, seed=config.seed, progress=progress)
        with sw.lap("bn"):
            return recalibrate_bn(masked, images), plan


def check(model: nn.Module, input_size, *, target_flops: float = 0.3, method: str = "mrp",
          config: MRPConfig | None = None, groups: ChannelGroups | None = None) -> dict:
    """Can mrp_gpu prune this model correctly? Prune a copy and verify everything.

    Plans ``target_flops`` with ``method``, slices, and checks that the masked and
    sliced models agree, that the output shape is unchanged, and that the analytic
    MACs and parameters equal what Torch-Pruning's counter measures on the sliced
    model. Returns what was pruned (``kinds``: groups of each kind, see
    :meth:`~mrp_gpu.dependency.groups.ChannelGroups.kinds`; ``kept``: each group's kept
    width), what was left whole and why (``held``), and the costs. Raises
    :class:`ModelError` (naming the layer type) when the model is refused.
    """
    import torch_pruning as tp

    if groups is None:
        model, groups = traced(model, input_size)
    if len(groups) == 0:
        why = f": {len(groups.held)} left whole, e.g. {groups.held[0]}" if groups.held else ""
        raise ModelError(f"{type(model).__name__} has no channel group mrp_gpu can prune{why}")
    p = plan(model, input_size, target_flops=target_flops, method=method, config=config, groups=groups)
    sliced = slice_model(model, p, groups)
    diff = masked_vs_sliced(model, p, sliced, groups)
    macs, params = tp.utils.count_ops_and_params(sliced, example_input(input_size, device=model_device(model)))
    ok_cost = (int(macs), int(params)) == (p.macs_after, p.params_after)
    if not ok_cost:
        raise ModelError(f"analytic costs ({p.macs_after} MACs, {p.params_after} params) differ from the counted "
                         f"ones ({int(macs)}, {int(params)}) on the sliced model")
    return {"groups": len(groups), "kinds": groups.kinds(), "held": list(groups.held),
            "channels": int(groups.sizes.sum()), "kept": {g.id: p.kept_count(g.id) for g in groups},
            "macs_before": p.macs_before,
            "macs_after": p.macs_after, "macs_reduction": p.macs_reduction, "params_before": p.params_before,
            "params_after": p.params_after, "max_abs_diff_masked_vs_sliced": diff}
