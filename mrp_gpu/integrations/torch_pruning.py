"""MRP inside Torch-Pruning: an importance criterion and layer-wise ratios.

``MRPImportance`` scores every channel of a Torch-Pruning group so that pruning the
lowest scores removes what MRP would remove first. Scores are computed for the
whole model at once and cached per model state (a fingerprint of its parameters),
so a pruner step costs one MRP analysis, however many groups Torch-Pruning asks
about. Two modes:

``order`` (default)
    MRP's own loop run until every group is at its minimum; a channel's score is the
    step at which it goes. Without calibration images that is the data-free SRP loop;
    with them (``MRPImportance(x, calibration=images)``), the data defaults: the
    ``rebuild`` rule (what the consumers lose once refit) and the ``loss`` allocation
    (the group whose next channel costs least per MAC saved). Global pruning by these
    scores removes MRP's first channels, so the counts it keeps per group follow MRP's
    own allocation, and inside any layer a plan's removed channels are the lowest-scored ones.
``partition``
    One batched analysis (features, graphs, one Louvain call for every group), then
    SRP's order replayed inside every group on that fixed partition: the most
    replaceable member of the largest community goes next; the score is ``1 / R``
    when it goes, so channels of more redundant layers score lower. Faster on big
    models, an approximation of ``srp`` (no re-partitioning between removals).

Channels MRP never removes score highest.

>>> import torch, torch_pruning as tp
>>> from mrp_gpu.models import create_model
>>> from mrp_gpu.integrations.torch_pruning import MRPImportance
>>> model = create_model("demo"); x = torch.randn(1, 1, 28, 28)
>>> pruner = tp.pruner.MetaPruner(model, x, importance=MRPImportance(x), pruning_ratio=0.3,
...                               global_pruning=True, ignored_layers=[model.fc])
>>> pruner.step()

``mrp_pruning_ratio_dict`` gives the per-layer ratios of an SRP plan in the form
``pruning_ratio_dict`` expects, so any importance can prune with MRP's ratios.

``refit(original, model, calibration, pruner=None)`` gives any Torch-Pruning result
MRP's least-squares refit and BN re-estimation (:mod:`.tp_refit`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch_pruning as tp

from ..config import MRPConfig
from ..dependency.groups import ChannelGroups, build_groups
from ..errors import MRPError
from ..pruner import plan_mrp
from ..pruner.state import PlannerState
from ..redundancy.features import weight_matrix
from .tp_refit import kept_indices, refit

__all__ = ["MRPImportance", "mrp_pruning_ratio_dict", "order_scores", "partition_scores", "refit", "kept_indices"]


def _input_size(example_inputs) -> tuple[int, ...]:
    x = example_inputs[0] if isinstance(example_inputs, (list, tuple)) else example_inputs
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise TypeError("example_inputs must be an image batch tensor [B, C, H, W] (or a tuple holding one)")
    return tuple(x.shape[1:])


def order_scores(model: nn.Module, groups: ChannelGroups, config: MRPConfig,
                 calibration: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Per group: the step at which each channel goes in MRP's removal order run to the end
    (``order`` mode of the module docstring): SRP's without ``calibration``, the ``loss``
    allocation's with it."""
    config = config.replace_with(allocation="loss" if calibration is not None else "srp")
    p = plan_mrp(model, groups, None, config, calibration=calibration)
    out = {g.id: np.full(g.size, np.inf) for g in groups}
    for t in p.trajectory:
        out[t["group"]][t["channel"]] = t["step"]
    last = len(p.trajectory)
    for g in groups:  # the channels that stay: after every removal, smallest L1 first
        rest = np.flatnonzero(np.isinf(out[g.id]))
        l1 = weight_matrix(model, g).abs().sum(1).cpu().numpy()[rest]
        out[g.id][rest] = last + np.argsort(np.argsort(l1, kind="stable"), kind="stable")
    return out


def partition_scores(model: nn.Module, groups: ChannelGroups, config: MRPConfig) -> dict[str, np.ndarray]:
    """Per group: ``1 / R`` when each channel goes on a fixed partition (``partition`` mode)."""
    from ..finetune import resolve_device
    from ..redundancy.features import compute_features

    device = resolve_device(config.device)
    feats = compute_features(model, groups, features=config.features, device=device)
    state = PlannerState(model, groups, config, feats, device)
    if state.communities is None:
        raise MRPError(f"mode='partition' needs communities; replace={config.replace!r} with "
                       f"allocation={config.allocation!r} and no merges reads none")
    state.refresh(list(range(len(groups))))  # one batched Louvain call for every group
    out = {}
    for g, group in enumerate(groups):
        labels, n = state.communities.labels[g], group.size
        communities = len(np.unique(labels))
        order = state.pick(g, n - communities)  # SRP inside the group, partition fixed
        score = np.empty(n)
        for k, (channel, _, _) in enumerate(order):
            score[channel] = communities / (n - k)  # 1 / R just before this channel goes
        rest = np.setdiff1d(np.arange(n), [c for c, _, _ in order])
        norms = state.norms(g)[rest]
        score[rest] = 1.0 + np.argsort(np.argsort(norms, kind="stable"), kind="stable") / max(len(rest), 1)
        out[group.id] = score
    return out


class MRPImportance(tp.importance.Importance):
    """Torch-Pruning importance from MRP (lowest = what MRP removes first).

    Parameters
    ----------
    example_inputs : Tensor
        An input batch of the model (its shape sets where MACs are counted).
    config : MRPConfig, optional
        Features, threshold, Louvain backend, replace rule.
    mode : {"order", "partition"}
        MRP's exact removal order, or the one-partition approximation (data-free only;
        module docstring).
    calibration : Tensor, optional
        Training images: the scores come from MRP's data defaults (module docstring).
    """

    def __init__(self, example_inputs, config: MRPConfig | None = None, mode: str = "order", *,
                 calibration: torch.Tensor | None = None):
        if mode not in ("order", "partition"):
            raise ValueError(f"mode must be 'order' or 'partition', got {mode!r}")
        if mode == "partition" and calibration is not None:
            raise ValueError("mode='partition' reads weight features: it takes no calibration images")
        self.input_size = _input_size(example_inputs)
        self.calibration = calibration
        self.config = (config or MRPConfig()).resolved(has_data=calibration is not None)
        self.mode = mode
        self._key = None
        self._scores: dict[str, np.ndarray] = {}
        self._position: dict[str, tuple[str, np.ndarray]] = {}
        self.batched_calls = 0  # how many batched analyses were made (one per model state)

    @staticmethod
    def _fingerprint(model: nn.Module) -> tuple:
        return tuple((name, p.data_ptr(), tuple(p.shape)) for name, p in model.named_parameters())

    def _refresh(self, model: nn.Module) -> None:
        key = self._fingerprint(model)
        if key == self._key:
            return
        groups = build_groups(model, self.input_size)
        if self.mode == "order":
            self._scores = order_scores(model, groups, self.config, self.calibration)
        else:
            self._scores = partition_scores(model, groups, self.config)
        # every producer's output position -> (group, channel)
        self._position = {}
        for g in groups:
            for s in g.producers:
                channel = np.full(int(s.idxs.max()) + 1, -1)
                channel[s.idxs] = s.channel
                self._position[s.module] = (g.id, channel)
        self._key = key
        self.batched_calls += 1

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        DG = group._DG
        self._refresh(DG.model)
        root = group[0].dep.target.module
        name = DG._module2name.get(root)
        if name not in self._position:
            return None  # not a group MRP prunes (e.g. the classifier's logits): leave it alone
        gid, channel = self._position[name]
        idxs = np.asarray(group[0].idxs)
        if idxs.max() >= len(channel) or (channel[idxs] < 0).any():
            return None
        return torch.as_tensor(self._scores[gid][channel[idxs]], dtype=torch.float32)


def mrp_pruning_ratio_dict(model: nn.Module, example_inputs, *, target_flops: float | None = None,
                           target_params: float | None = None, config: MRPConfig | None = None,
                           ) -> dict[nn.Module, float]:
    """Per-layer pruning ratios of an SRP plan, as Torch-Pruning's ``pruning_ratio_dict``.

    Keys are the first producing layer of each group; a ratio ``r`` is chosen so that
    Torch-Pruning keeps exactly the plan's channel count
    (``int(N * (1 - r)) == kept``). Use ``iterative_steps=1``. Without ``config`` the
    plan is MRP's own allocation (``allocation="srp"``), not the package default.
    """
    from ..api import plan

    size = _input_size(example_inputs)
    groups = build_groups(model, size)
    p = plan(model, size, target_flops=target_flops, target_params=target_params, method="mrp",
             config=config or MRPConfig(allocation="srp"), groups=groups)
    return {model.get_submodule(g.id): 1.0 - (p.kept_count(g.id) + 0.5) / g.size for g in groups}
