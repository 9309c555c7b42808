"""Layers the tracer cannot follow are traced in equivalent forms: ShuffleNet v2's bottlenecks are
pruned and every group through a channel shuffle held whole by name; Swin traces with its relative
position bias constant and its patch merging as one reshape, its MLPs pruned; the layers' own methods are back after."""

import torch
import torchvision

from mrp_gpu.api import check
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.dependency.traceable import traceable

SIZE = (3, 32, 32)


def _shufflenet():
    torch.manual_seed(0)
    return torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval()


def test_traceable_blocks_compute_what_the_blocks_do_and_are_undone():
    model, x = _shufflenet(), torch.randn(2, *SIZE)
    with torch.no_grad():
        ref = model(x)
        with traceable(model) as shuffles:
            assert any("forward" in m.__dict__ for m in model.modules())
            assert torch.equal(model(x), ref)
        assert not any("forward" in m.__dict__ for m in model.modules())
    assert len(shuffles) == 0  # under no_grad there is no grad_fn to record
    with traceable(model) as shuffles:
        model(x)
    assert sorted(set(shuffles.values())) == sorted(n for n, m in model.named_modules()
                                                   if type(m).__name__ == "InvertedResidual")


def test_shufflenet_bottlenecks_are_pruned_and_the_shuffled_channels_held():
    model = _shufflenet()
    groups = build_groups(model, SIZE)
    blocks = [n for n, m in model.named_modules() if type(m).__name__ == "InvertedResidual"]
    assert {f"{b}.branch2.0" for b in blocks} <= set(groups.ids)  # every block's bottleneck
    assert all("runs through the channel shuffle of 'stage" in h for h in groups.held)
    for g in groups:  # no group crosses a shuffle or the chunk after it
        assert not any(s.module.endswith("branch2.5") for s in g.producers), g.id
    record = check(model, SIZE, target_flops=0.3)
    assert record["macs_reduction"] >= 0.3 and record["max_abs_diff_masked_vs_sliced"] < 1e-4


def test_swin_is_traced_with_its_bias_constant_and_its_mlps_pruned():
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                            num_classes=5).eval()
    attn = model.features[1][0].attn
    with traceable(model):
        assert "get_relative_position_bias" in attn.__dict__
        assert not attn.get_relative_position_bias().requires_grad
    assert "get_relative_position_bias" not in attn.__dict__ and attn.get_relative_position_bias().requires_grad
    groups = build_groups(model, SIZE)
    assert groups.kinds() == {"linear": 4}  # every block's MLP hidden units
    # the stream enters the attention through weights the tracer does not see (F.linear on them): whole
    assert any("runs through the attention 'features.1.0.attn'" in h for h in groups.held)
    record = check(model, SIZE, target_flops=0.2, groups=groups)
    assert record["macs_reduction"] >= 0.2 and record["max_abs_diff_masked_vs_sliced"] < 1e-4


def test_swin_v2_attention_traces_as_it_computes():
    from torchvision.models import swin_transformer as S

    torch.manual_seed(0)
    model = S.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                              num_classes=5, block=S.SwinTransformerBlockV2, downsample_layer=S.PatchMergingV2).eval()
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        ref = model(x)
        with traceable(model):
            assert torch.equal(model(x), ref)
    groups = build_groups(model, SIZE, timeout=60)
    assert groups.kinds() == {"linear": 4}
    assert check(model, SIZE, target_flops=0.2, groups=groups)["max_abs_diff_masked_vs_sliced"] < 1e-4


def test_patch_merging_as_one_reshape_equals_the_concatenation():
    from torchvision.models.swin_transformer import _patch_merging_pad

    from mrp_gpu.dependency.traceable import _space_to_depth

    for shape in [(2, 8, 6, 5), (1, 7, 9, 3), (3, 2, 4, 4, 2)]:  # odd sides are padded as Swin pads them
        x = torch.randn(*shape)
        assert torch.equal(_space_to_depth(x), _patch_merging_pad(x))


def test_a_deep_swin_stage_traces():
    """Past a stage of 18 blocks (swin_s, swin_b) the tracer's walk to size the patch merging's
    concatenation runs out of depth and the trace fails; the reshape form has none to size."""
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 18, 2], num_heads=[2, 4, 4],
                            window_size=[4, 4], num_classes=5).eval()
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        ref = model(x)
        with traceable(model):
            assert torch.equal(model(x), ref)
    groups = build_groups(model, SIZE)
    assert groups.kinds() == {"linear": 22}
    assert check(model, SIZE, target_flops=0.2, groups=groups)["max_abs_diff_masked_vs_sliced"] < 1e-4
