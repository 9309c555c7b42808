"""Attention is found by what it computes, whatever class implements it; transformer MLPs are pruned
(nn.MultiheadAttention and the stream it reads: test_transformer.py)."""

import torch
import torch.nn as nn
import torchvision

from mrp_gpu.api import check, plan
from mrp_gpu.dependency.attention import ActivationProducts, inside
from mrp_gpu.dependency.groups import build_groups


class SelfAttention(nn.Module):
    """A library's own attention: separate q, k, v projections, no nn.MultiheadAttention."""

    def __init__(self, d=16):
        super().__init__()
        self.q, self.k, self.v, self.proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        a = (self.q(x) @ self.k(x).transpose(-1, -2)).softmax(-1)
        return self.proj(a @ self.v(x))


class Block(nn.Module):
    def __init__(self, d=16, hidden=32):
        super().__init__()
        self.n1, self.attn, self.n2 = nn.LayerNorm(d), SelfAttention(d), nn.LayerNorm(d)
        self.fc1, self.act, self.fc2 = nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d)

    def forward(self, x):
        x = x + self.attn(self.n1(x))
        return x + self.fc2(self.act(self.fc1(self.n2(x))))


class TinyViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 8, 8)
        self.blocks = nn.Sequential(Block(), Block())
        self.norm, self.head = nn.LayerNorm(16), nn.Linear(16, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(x)).mean(1))


def _found(model, x):
    with ActivationProducts(model) as watch, torch.enable_grad():
        watch.mark(x)
        model(x)
    return watch.found


def test_products_of_two_activations_are_found_where_they_happen():
    torch.manual_seed(0)
    found = _found(TinyViT().eval(), torch.randn(1, 3, 32, 32))
    assert set(found) == {"blocks.0.attn", "blocks.1.attn"} and set(found.values()) == {"matmul"}
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2,
                                               hidden_dim=16, mlp_dim=32).eval()
    assert list(_found(vit, torch.randn(1, 3, 32, 32))) == ["encoder.layers.encoder_layer_0.self_attention"]


def test_weights_times_activations_are_not_attention(resnet20):
    lin = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    assert _found(lin, torch.randn(3, 8)) == {} and _found(resnet20.eval(), torch.randn(1, 3, 32, 32)) == {}


def test_inside():
    assert inside("blocks.0.attn.q", ["blocks.0.attn"]) == "blocks.0.attn"
    assert inside("blocks.0.attn2", ["blocks.0.attn"]) is None and inside("x", []) is None


def test_transformer_mlps_are_pruned_and_attention_left_whole():
    torch.manual_seed(0)
    model = TinyViT().eval()
    groups = build_groups(model, (3, 32, 32))
    # the stream too: this attention is not laid out in heads (its code could tie its inside to its input)
    assert groups.ids == ["blocks.0.fc1", "blocks.1.fc1"]  # the MLP hidden units
    assert any("runs through the attention 'blocks.0.attn'" in h for h in groups.held)
    record = check(model, (3, 32, 32), target_flops=0.1, groups=groups)  # masked == sliced, MACs == counted
    assert record["macs_reduction"] >= 0.1
    p = plan(model, (3, 32, 32), target_flops=0.1, groups=groups)
    assert any("attention" in n for n in p.notes)

