"""An attention layer with its own projections (timm's Attention) loses whole heads: num_heads and
attn_dim follow, the masked model computes what the sliced one does, and the rebuild loss and the
refit read the heads' outputs."""

import pytest
import torch
import torch.nn as nn

from mrp_gpu.api import check, execute, masked_vs_sliced, plan
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.dependency.heads import fix_heads
from mrp_gpu.executor import apply_masks, slice_model
from mrp_gpu.pruner.state.losses import rebuild_consumers

timm = pytest.importorskip("timm")
SIZE = (3, 32, 32)


def _vit(**kw):
    torch.manual_seed(0)
    return timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2,
                                                           num_heads=4, num_classes=10, **kw).eval()


@pytest.mark.parametrize("method", ["mrp", "l1"])
def test_timm_attention_loses_whole_heads(method):
    vit = _vit()
    groups = build_groups(vit, SIZE)
    heads = [g for g in groups if g.kind == "heads"]
    assert [(g.id, g.size, g.heads) for g in heads] == [
        (f"blocks.{i}.attn.qkv", 4, f"blocks.{i}.attn") for i in range(2)]
    assert groups.kinds() == {"linear": 2, "stream": 1, "heads": 2} and not groups.held
    record = check(vit, SIZE, target_flops=0.5, method=method, groups=groups)  # masked == sliced, MACs == counted
    assert any(record["kept"][g.id] < 4 for g in heads)
    p = plan(vit, SIZE, target_flops=0.5, method=method, groups=groups)
    sliced = slice_model(vit, p, groups)
    for g in heads:
        attn = sliced.get_submodule(g.heads)
        kept = p.kept_count(g.id)
        assert (attn.num_heads, attn.attn_dim, attn.head_dim) == (kept, kept * 16, 16)
        assert attn.qkv.out_features == 3 * kept * 16 and attn.proj.in_features == kept * 16


def test_a_masked_head_outputs_zero_and_the_data_path_refits_the_projection():
    vit = _vit(qk_norm=True)  # q and k normalised over head_dim: unchanged by removing heads
    groups = build_groups(vit, SIZE)
    assert {"blocks.0.attn.proj", "blocks.1.attn.proj"} <= set(rebuild_consumers(vit, groups))
    calib = torch.randn(48, *SIZE)
    assert plan(vit, SIZE, target_flops=0.4, groups=groups, calibration=calib).config["replace"] == "rebuild"
    p = plan(vit, SIZE, target_flops=0.5, method="l1", groups=groups)
    assert any(p.removed(f"blocks.{i}.attn.qkv").size for i in range(2))
    plain = apply_masks(vit, p, groups)
    masked, p = execute(vit, p, groups, None, calib)
    assert masked_vs_sliced(masked, p, slice_model(masked, p, groups), groups) < 1e-4
    with torch.no_grad():
        ref = vit(calib)
        assert (masked(calib) - ref).norm() < (plain(calib) - ref).norm()


def test_an_attention_normalising_its_heads_outputs_keeps_its_heads_whole():
    # a norm over every head's output together: removing a head would move its statistics
    vit = _vit(qk_norm=False)
    for block in vit.blocks:
        block.attn.norm = nn.LayerNorm(64)
    groups = build_groups(vit.eval(), SIZE)
    assert "heads" not in groups.kinds() and any("blocks.0.attn" in h for h in groups.held)


def test_fix_heads_follows_qkv_of_the_layers_named():
    model = nn.Sequential(timm.layers.Attention(32, num_heads=4), timm.layers.Attention(32, num_heads=4))
    for layer in model:
        layer.qkv = nn.Linear(32, 3 * 2 * 8)
    fix_heads(model, ["0"])
    assert (model[0].num_heads, model[0].attn_dim) == (2, 16) and model[1].num_heads == 4
