"""The projections inside nn.MultiheadAttention are dense consumers of the stream: their inputs are
tapped as the attention reads them, the rebuild loss counts them and the refit refits them."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

from mrp_gpu.api import execute, masked_vs_sliced, plan
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.dependency.projections import Projection, dense_layer, tap
from mrp_gpu.executor import apply_masks, slice_model
from mrp_gpu.pruner.state.losses import rebuild_consumers

SIZE = (3, 32, 32)


def _taps(model, names):
    seen = {}
    handles = [tap(model, n, lambda layer, x, n=n: seen.setdefault(n, (layer, x))) for n in names]
    return seen, handles


@pytest.mark.parametrize("batch_first", [True, False])
def test_the_tapped_inputs_are_what_the_projections_read(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(12, 3, batch_first=batch_first).eval()
    model = nn.Sequential()
    model.add_module("attn", mha)
    x = torch.randn(2, 5, 12) if batch_first else torch.randn(5, 2, 12)
    seen, handles = _taps(model, ["attn:in_proj", "attn:out_proj"])
    with torch.no_grad():
        out, _ = mha(x, x, x, need_weights=False)
    for h in handles:
        h.remove()
    layer, query = seen["attn:in_proj"]
    assert isinstance(layer, Projection) and layer.weight is mha.in_proj_weight and torch.equal(query, x)
    layer, context = seen["attn:out_proj"]
    assert layer.weight is mha.out_proj.weight
    expected = out if batch_first else out.transpose(0, 1)  # the context is [batch, tokens, embed]
    torch.testing.assert_close(mha.out_proj(context), expected, atol=1e-5, rtol=1e-5)


def test_attention_it_cannot_recompute_is_not_tapped():
    model = nn.Sequential()
    model.add_module("attn", nn.MultiheadAttention(8, 2, batch_first=True))
    x, y = torch.randn(2, 4, 8), torch.randn(2, 6, 8)
    seen, handles = _taps(model, ["attn:in_proj", "attn:out_proj"])
    mask = torch.ones(4, 4, dtype=torch.bool).triu(1)
    with torch.no_grad():
        model[0](x, y, y)  # cross-attention: k and v read y, not the query
        model[0](x, x, x, attn_mask=mask)  # masked
        assert not seen
        model[0](x, x, x)
    for h in handles:
        h.remove()
    assert set(seen) == {"attn:in_proj", "attn:out_proj"}


def _vit():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                               hidden_dim=16, mlp_dim=32, num_classes=5)
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return vit.eval()


def test_the_rebuild_loss_and_the_refit_read_the_attention():
    vit = _vit()
    groups = build_groups(vit, SIZE)
    stream = next(g for g in groups if g.kind == "stream")
    names = {s.module for s in stream.dense_inputs}
    attention = "encoder.layers.encoder_layer_0.self_attention"
    assert {f"{attention}:in_proj", f"{attention}:out_proj"} <= names <= set(rebuild_consumers(vit, groups))
    calib = torch.randn(32, *SIZE)
    p = plan(vit, SIZE, target_flops=0.3, groups=groups, calibration=calib)
    assert len(p.removed(stream.id))
    plain = apply_masks(vit, p, groups)
    masked, p = execute(vit, p, groups, None, calib)
    gone = torch.as_tensor(p.removed(stream.id))
    for model in (plain, masked):
        w = dense_layer(model, f"{attention}:in_proj").weight
        assert not w[torch.cat([gone, gone + 16, gone + 32])].any()  # q, k, v of removed channels stay removed
    refit_w = dense_layer(masked, f"{attention}:out_proj").weight
    assert not torch.equal(refit_w, dense_layer(plain, f"{attention}:out_proj").weight)  # refit, not left
    assert masked_vs_sliced(masked, p, slice_model(masked, p, groups), groups) < 1e-4
    with torch.no_grad():  # the refit brings the masked model closer to the unpruned one on its images
        ref = vit(calib)
        assert (masked(calib) - ref).norm() < (plain(calib) - ref).norm()
    assert np.isfinite(refit_w.detach().numpy()).all()
