"""A transformer's residual stream is pruned through its LayerNorms and its nn.MultiheadAttention,
in whole heads' worth of channels, and the masked model computes what the sliced one does."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch_pruning.ops import OPTYPE
from torchvision.models.convnext import CNBlockConfig, ConvNeXt

from mrp_gpu.api import check, execute, masked_vs_sliced, plan
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.dependency.transformer import KeptChannelsNorm, mask_attention, slice_attention
from mrp_gpu.errors import ModelError
from mrp_gpu.executor import apply_masks, load_pruned, save_pruned, slice_model
from mrp_gpu.models import create_model

SIZE = (3, 32, 32)


def _jitter(model: nn.Module, scale: float = 0.2) -> nn.Module:
    """torchvision zero-initialises a ViT's head and class token: outputs would agree trivially."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model.eval()


def _vit(heads=2):
    return _jitter(torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=heads,
                                                        hidden_dim=16, mlp_dim=32, num_classes=5))


def test_kept_channels_norm_is_the_sliced_norm():
    norm = _jitter(nn.LayerNorm(8))
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    x = torch.randn(3, 5, 8) * keep  # what a masked model feeds it: zeros on the removed channels
    got = KeptChannelsNorm(norm, keep)(x)
    want = F.layer_norm(x[..., keep], (6,), norm.weight[keep], norm.bias[keep], norm.eps)
    torch.testing.assert_close(got[..., keep], want)
    assert (got[..., ~keep] == 0).all()
    assert (norm(x)[..., keep] - want).abs().max() > 0.05  # zeroing alone is not removing


def test_slicing_attention_keeps_its_scores():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    removed = np.array([1, 6])  # one from each head of 4 dims
    keep = np.setdiff1d(np.arange(8), removed)
    x = torch.randn(2, 5, 8)
    x[..., removed] = 0
    masked, sliced = mha, nn.MultiheadAttention(8, 2, batch_first=True).eval()
    sliced.load_state_dict(mha.state_dict())
    mask_attention(masked, removed)
    slice_attention(sliced, removed)
    assert sliced.embed_dim == 6 and sliced.head_dim == 3
    a = masked(x, x, x, need_weights=False)[0][..., keep]
    b = sliced(x[..., keep], x[..., keep], x[..., keep], need_weights=False)[0]
    torch.testing.assert_close(a, b)


def test_vit_stream_is_pruned_in_whole_heads():
    vit = _vit()
    groups = build_groups(vit, SIZE)
    assert groups.ids == ["conv_proj", "encoder.layers.encoder_layer_0.mlp.0", "encoder.layers.encoder_layer_1.mlp.0"]
    assert groups["conv_proj"].blocks == 2 and groups.held == ()
    for method in ("mrp", "l1"):  # check(): masked == sliced, and the analytic MACs and params == counted
        p = plan(vit, SIZE, target_flops=0.4, method=method, groups=groups)
        removed = p.removed("conv_proj")
        assert len(removed) and np.bincount(removed // 8, minlength=2).tolist() == [len(removed) // 2] * 2
        record = check(vit, SIZE, target_flops=0.4, method=method, groups=groups)
        assert record["macs_reduction"] >= 0.4 and record["kinds"] == {"linear": 2, "stream": 1, "attention": 2}
        assert record["kept"]["conv_proj"] == 16 - len(removed)
    sliced = slice_model(vit, p, groups)
    assert sliced.hidden_dim == sliced.conv_proj.out_channels == sliced.encoder.ln.normalized_shape[0] < 16


def test_vit_stream_with_data_the_loss_allocation_and_the_refit():
    vit = _vit()
    groups = build_groups(vit, SIZE)
    calib = torch.randn(16, *SIZE)
    p = plan(vit, SIZE, target_flops=0.3, groups=groups, calibration=calib)
    assert p.config["allocation"] == "loss" and p.config["replace"] == "rebuild"
    assert len(p.removed("conv_proj")) % 2 == 0
    masked, p = execute(vit, p, groups, None, calib)
    assert any(isinstance(m, KeptChannelsNorm) for m in masked.modules())
    sliced = slice_model(masked, p, groups)
    assert not any(isinstance(m, KeptChannelsNorm) for m in sliced.modules())
    assert masked_vs_sliced(masked, p, sliced, groups) < 1e-4  # masking a masked model masks afresh


def test_a_pruned_vit_saves_and_loads(tmp_path):
    vit = _jitter(create_model("vit_demo", weights=None), 0.05)
    size = (1, 28, 28)
    p = plan(vit, size, target_flops=0.5, method="l1", model_name="vit_demo")
    sliced = slice_model(vit, p)
    save_pruned(tmp_path, sliced, p, {"num_classes": 10})
    x = torch.randn(2, *size)
    torch.testing.assert_close(load_pruned(tmp_path)(x), sliced(x))


def test_convnext_stream_through_layernorm2d_and_layer_scale():
    model = _jitter(ConvNeXt([CNBlockConfig(16, 32, 2), CNBlockConfig(32, None, 1)], num_classes=5), 0.1)
    groups = build_groups(model, SIZE)
    streams = [g.id for g in groups if any(s.optype == OPTYPE.LN for s in g.slices)]
    assert streams == ["features.0.0", "features.2.1"] and groups.held == ()  # each stage's stream
    assert check(model, SIZE, target_flops=0.3, method="l1", groups=groups)["macs_reduction"] >= 0.3


@pytest.mark.parametrize("norm,why", [(nn.LayerNorm((4, 8)), "normalises over 2 dimensions")])
def test_norms_it_cannot_mask_are_left_whole(norm, why):
    model = nn.Sequential(nn.Linear(8, 32), nn.Unflatten(1, (4, 8)), norm, nn.Flatten(), nn.Linear(32, 3)).eval()
    groups = build_groups(model, (8,))
    assert any(why in h for h in groups.held)


def test_a_masked_vit_is_sliced_and_masked_again_without_its_groups():
    vit = _vit()
    p = plan(vit, SIZE, target_flops=0.4, method="l1")
    masked = apply_masks(vit, p)
    sliced = slice_model(masked, p)  # traced afresh: the wrappers are not part of the model
    assert masked_vs_sliced(masked, p, sliced) < 1e-4


def test_layernorm_without_affine_parameters_is_masked():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16, elementwise_affine=False), nn.GELU(),
                          nn.Linear(16, 3)).eval()
    assert check(model, (8,), target_flops=0.3, method="l1")["kinds"] == {"stream": 1}


def test_a_norm_that_skips_f_layer_norm_is_refused():
    class Fused(nn.LayerNorm):
        def forward(self, x):
            mu, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True, unbiased=False)
            return (x - mu) / torch.sqrt(var + self.eps) * self.weight + self.bias

    with pytest.raises(ModelError, match="does not compute through F.layer_norm"):
        KeptChannelsNorm(Fused(4), torch.tensor([1, 0, 1, 1], dtype=torch.bool))(torch.randn(2, 4))


def test_heads_share_a_quantum_that_is_not_their_multiple():
    from mrp_gpu.config import MRPConfig

    vit = _vit(heads=4)
    p = plan(vit, SIZE, target_flops=0.3, config=MRPConfig(step=6), groups=build_groups(vit, SIZE))
    removed = p.removed("conv_proj")
    assert len(set(np.bincount(removed // 4, minlength=4).tolist())) == 1
