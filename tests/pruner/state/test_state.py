import torch

from mrp_gpu.config import MRPConfig
from mrp_gpu.pruner import calibrate
from mrp_gpu.pruner.state import PlannerState, needs_communities


def test_queued_downdates_equal_a_recomputation(demo, demo_groups):
    """Removing input channels by Gram downdates gives the Gram of the masked weights."""
    from mrp_gpu.executor import apply_masks
    from mrp_gpu.plan import PruningPlan
    from mrp_gpu.redundancy.features import compute_features, weight_matrix

    groups = demo_groups
    cfg = MRPConfig().resolved(has_data=False)  # weight features: removals downdate consumers' Grams
    state = PlannerState(demo, groups, cfg, compute_features(demo, groups), "cpu")
    g = groups.index("layer2.0.conv1")  # its consumer is layer2.0.conv2, a producer of the stage-2 group
    h = groups.index("layer2.0.conv2")
    state.grams[h]  # computed before the removal: the downdate must bring it up to date
    touched = state.remove(g, [1, 5, 7])
    assert touched == [h] and state.pending(h)
    state.refresh([h])
    assert not state.pending(h)
    kept = {groups[g].id: tuple(c for c in range(32) if c not in (1, 5, 7))}
    masked = apply_masks(demo, PruningPlan("demo", (1, 28, 28), {x.id: x.size for x in groups}, kept, "t"), groups)
    w = weight_matrix(masked, groups[h]).double()
    torch.testing.assert_close(state.grams[h].double(), w @ w.T, rtol=1e-4, atol=1e-5)


def test_only_what_the_config_reads_is_built(demo, demo_groups, calib):
    data = MRPConfig().resolved(True)
    assert not needs_communities(data)
    state = PlannerState(demo, demo_groups, data, None, "cpu", calibrate(demo, demo_groups, data, calib))
    assert state.communities is None and state.propagation is None and state.loudness is None
    assert state.pick(0, 1)[0][1] is None  # no community size without communities
    free = MRPConfig().resolved(False)
    assert needs_communities(free) and needs_communities(MRPConfig.paper().resolved(False))
