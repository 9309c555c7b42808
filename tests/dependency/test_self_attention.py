"""nn.MultiheadAttention called as self-attention is rewritten in heads: the same outputs, the user's
model untouched, and torchvision's ViT then loses whole heads (num_heads follows, masked == sliced,
MACs == counted) and saves and loads; other calls keep their nn.MultiheadAttention."""

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp
import torchvision

from mrp_gpu.api import check, masked_vs_sliced, plan
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.dependency.self_attention import SelfAttention, split_self_attention, with_heads
from mrp_gpu.errors import ModelError, PlanError
from mrp_gpu.executor import load_pruned, save_pruned, slice_model
from mrp_gpu.models import create_model
from mrp_gpu.refit import refit

SIZE = (3, 32, 32)


def _vit():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                               hidden_dim=32, mlp_dim=64, num_classes=5).eval()
    with torch.no_grad():  # torchvision zeroes the projections' biases: make them count
        for p in vit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vit


def test_the_rewritten_attention_computes_what_the_original_did_and_the_original_stays():
    vit = _vit()
    rewritten = with_heads(vit, SIZE)
    assert isinstance(vit.encoder.layers[0].self_attention, nn.MultiheadAttention)  # the user's model
    layers = [m for m in rewritten.modules() if isinstance(m, SelfAttention)]
    assert len(layers) == 2 and not any(isinstance(m, nn.MultiheadAttention) for m in rewritten.modules())
    x = torch.randn(4, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), vit(x), atol=1e-5, rtol=1e-5)
    example = torch.randn(1, *SIZE)
    assert tp.utils.count_ops_and_params(rewritten, example) == tp.utils.count_ops_and_params(vit, example)


class _Calls(nn.Module):
    """One attention called as cross-attention, one asked for its weights, one plain."""

    def __init__(self):
        super().__init__()
        self.cross, self.weights, self.plain = (nn.MultiheadAttention(8, 2, batch_first=True) for _ in range(3))

    def forward(self, x):
        y = x.flip(1)
        return self.cross(x, y, y)[0] + self.weights(x, x, x)[0] + self.plain(x, x, x, need_weights=False)[0]


def test_only_plain_self_attention_is_rewritten():
    model = _Calls().eval()
    assert split_self_attention(model, (5, 8)) == ["plain"]
    assert isinstance(model.plain, SelfAttention)
    assert isinstance(model.cross, nn.MultiheadAttention) and isinstance(model.weights, nn.MultiheadAttention)
    unbatched = _Calls().eval()
    unbatched.plain = nn.MultiheadAttention(8, 2)  # sequence first: left as it is
    assert with_heads(unbatched, (5, 8)) is unbatched


def test_a_rewritten_layer_refuses_a_call_it_cannot_compute():
    attn = SelfAttention.from_mha(nn.MultiheadAttention(8, 2, batch_first=True))
    x = torch.randn(2, 5, 8)
    assert attn(x, x, x, need_weights=False)[0].shape == x.shape
    with pytest.raises(ModelError, match="self-attention only"):
        attn(x, x.flip(1), x.flip(1), need_weights=False)
    with pytest.raises(ModelError, match="self-attention only"):
        attn(x, x, x)  # nn.MultiheadAttention's default: its weights asked for


def test_a_model_reading_its_attention_s_attributes_keeps_it():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True).eval()
    assert split_self_attention(layer, (5, 8)) == []  # its fast path reads batch_first, in_proj_bias...
    assert isinstance(layer.self_attn, nn.MultiheadAttention)
    assert check(layer, (5, 8), target_flops=0.3, method="l1")["kinds"] == {"linear": 1}  # its MLP


@pytest.mark.parametrize("method", ["mrp", "l1"])
def test_torchvision_vit_loses_whole_heads(method):
    vit = _vit()
    record = check(vit, SIZE, target_flops=0.5, method=method)  # masked == sliced, MACs == counted
    assert record["kinds"] == {"linear": 2, "stream": 1, "heads": 2} and not record["held"]
    heads = [k for k in record["kept"] if k.endswith("self_attention.qkv")]
    assert len(heads) == 2 and all(record["kept"][k] <= 4 for k in heads)
    p = plan(vit, SIZE, target_flops=0.5, method=method)
    assert p.kept == plan(with_heads(vit, SIZE), SIZE, target_flops=0.5, method=method).kept
    sliced = slice_model(vit, p)  # without groups: rewritten as the plan's model was
    for k in heads:
        attn = sliced.get_submodule(k.removesuffix(".qkv"))
        assert (attn.num_heads, attn.head_dim) == (p.kept_count(k), 8)
        assert attn.qkv.out_features == 3 * 8 * p.kept_count(k)


def test_refit_and_an_older_plan_on_a_rewritten_vit():
    vit = _vit()
    p = plan(vit, SIZE, target_flops=0.5, method="l1")
    masked, p = refit(vit, p, torch.randn(16, *SIZE))  # traced as the plan's model was
    assert masked_vs_sliced(masked, p, slice_model(masked, p)) < 1e-4
    raw = build_groups(vit, SIZE)  # nn.MultiheadAttention kept: heads narrowed with the stream
    old = plan(vit, SIZE, target_flops=0.5, method="l1", groups=raw)
    with pytest.raises(PlanError, match="groups the plan does not know.*self_attention.qkv"):
        slice_model(vit, old)


def test_a_vit_that_lost_heads_saves_and_loads(tmp_path):
    vit = create_model("vit_demo")
    size = (1, 28, 28)
    p = plan(vit, size, target_flops=0.7, method="l1", model_name="vit_demo")
    groups = build_groups(with_heads(vit, size), size)
    assert any(p.kept_count(g.id) < g.size for g in groups if g.kind == "heads")
    sliced = slice_model(vit, p)
    save_pruned(tmp_path, sliced, p, {"num_classes": 10})
    x = torch.randn(2, *size)
    with torch.no_grad():
        torch.testing.assert_close(load_pruned(tmp_path)(x), sliced(x))


class _Shared(nn.Module):
    """One attention layer reachable under two parents, called twice."""

    def __init__(self):
        super().__init__()
        attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.first, self.second = nn.ModuleDict({"attn": attn}), nn.ModuleDict({"attn": attn})

    def forward(self, x):
        x = x + self.first["attn"](x, x, x, need_weights=False)[0]
        return x + self.second["attn"](x, x, x, need_weights=False)[0]


def test_an_attention_shared_under_two_parents_is_rewritten_under_both():
    torch.manual_seed(0)
    model = _Shared().eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        before = model(x)
    assert split_self_attention(model, (5, 8)) == ["first.attn"]
    assert isinstance(model.second["attn"], SelfAttention) and model.first["attn"] is model.second["attn"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)


class _SharedAndRead(_Shared):
    """The shared layer, and a forward reading its in-projection: the swap is undone under both names."""

    def forward(self, x):
        return super().forward(x) + self.second["attn"].in_proj_weight.sum()


def test_an_undone_swap_restores_the_shared_attention_under_both_parents():
    model = _SharedAndRead().eval()
    attn = model.first["attn"]
    assert split_self_attention(model, (5, 8)) == []
    assert model.first["attn"] is attn and model.second["attn"] is attn
