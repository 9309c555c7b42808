import numpy as np
import pytest
import torch
from torch_pruning.ops import OPTYPE

from mrp_gpu import plan
from mrp_gpu.api import check
from mrp_gpu.config import MRPConfig
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.models import create_model


def test_resnet20_groups(resnet20_groups):
    g = resnet20_groups
    # 9 inner groups (conv1 of each block) + 3 residual stages; the classifier's logits are no group
    assert len(g) == 12
    assert g.ids[0] == "conv1" and "fc" not in g
    stage1 = g["conv1"]
    assert stage1.size == 16
    assert {s.module for s in stage1.producers} == {"conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"}
    consumers = {s.module for s in stage1.consumers}
    assert {"layer1.0.conv1", "layer2.0.conv1", "layer2.0.shortcut.0"} <= consumers
    last = g["layer3.0.conv2"]  # the last residual stage feeds the classifier as a consumer
    assert "fc" in {s.module for s in last.consumers}
    assert all(len(s.idxs) == s_.size for s_ in g for s in s_.slices if s.optype != OPTYPE.LINEAR)


def test_ids_are_stable_and_in_model_order(resnet20):
    a = build_groups(resnet20, (3, 32, 32)).ids
    b = build_groups(create_model("resnet20"), (3, 32, 32)).ids
    assert a == b
    order = [n for n, _ in resnet20.named_modules()]
    assert a == sorted(a, key=order.index)


def test_depthwise_convs_join_their_input_group():
    g = build_groups(create_model("mobilenet_v2"), (3, 64, 64))
    dw = [s for grp in g for s in grp.slices if s.optype == OPTYPE.DEPTHWISE_CONV]
    assert dw, "the depthwise convolutions belong to the group of the channels they filter"
    assert all(s.dim == "out" for s in dw)


def test_tracing_leaves_the_model_as_it_was(resnet20):
    resnet20.train()
    before = {k: v.clone() for k, v in resnet20.state_dict().items()}
    with torch.no_grad():  # tracing needs autograd and must turn it on itself
        build_groups(resnet20, (3, 32, 32))
    assert resnet20.training
    resnet20.eval()
    for k, v in resnet20.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_grouped_convs_are_cut_evenly_across_their_groups():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 16, 3, groups=4), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
    groups = build_groups(model, (3, 16, 16))
    assert [(g.id, g.blocks) for g in groups] == [("0", 4), ("3", 4)]  # its inputs and its outputs
    assert groups["0"].block.tolist() == [c // 4 for c in range(16)]
    for method in ("mrp", "l1"):
        p = plan(model, (3, 16, 16), target_flops=0.3, method=method, groups=groups)
        for g in groups:
            removed = p.removed(g.id)
            assert len(removed) % 4 == 0 and len(set(np.bincount(removed // 4, minlength=4).tolist())) == 1, method
        assert check(model, (3, 16, 16), target_flops=0.3, method=method, groups=groups)["macs_reduction"] >= 0.3
    # the greedy allocations take one channel from each block per step, with or without data
    calib = torch.randn(8, 3, 16, 16)
    for config, data in ((MRPConfig(allocation="srp"), None), (MRPConfig(), calib)):
        p = plan(model, (3, 16, 16), target_flops=0.3, config=config, groups=groups, calibration=data)
        assert p.config["allocation"] == ("loss" if data is not None else "srp") and p.macs_reduction >= 0.3
        for g in groups:
            removed = p.removed(g.id)
            assert len(set(np.bincount(removed // 4, minlength=4).tolist())) == 1


def test_channels_normalised_together_are_left_whole():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.GroupNorm(4, 16), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))
    groups = build_groups(model, (3, 16, 16))
    assert groups.ids == ["3"]
    assert groups.held == ("0 (through GroupNorm '1')",)
    p = plan(model, (3, 16, 16), target_flops=0.3, method="l1")
    assert "0" not in p.kept and any("left whole" in n and "GroupNorm" in n for n in p.notes)


class _Split(torch.nn.Module):
    """A conv whose output the model's code splits between two convs (fixed chunk sizes)."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16)
        self.a, self.b = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        u, v = torch.split(torch.relu(self.b1(self.c1(x))), 8, dim=1)
        return self.fc(torch.cat([self.a(u), self.b(v)], 1).mean((2, 3)))


class _Ghost(torch.nn.Module):
    """Ghost-style: ``cat([y, cheap(y)])`` feeds the next conv (two layers side by side)."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.cheap, self.b2 = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.BatchNorm2d(8)
        self.c2, self.b3 = torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.cat([y, self.cheap(y)], 1)
        return self.fc(torch.relu(self.b3(self.c2(y))).mean((2, 3)))


@pytest.mark.parametrize("cls,why", [(_Split, "split into chunks by the model's code"), (_Ghost, None)])
def test_split_and_concatenated_channels_are_pruned_or_left_whole(cls, why):
    torch.manual_seed(0)
    model = cls().eval()
    groups = build_groups(model, (3, 8, 8))
    if why:
        assert any(why in h for h in groups.held)
    for method in ("mrp", "l1"):  # masked == sliced and MACs == counted, whatever was left whole
        assert check(model, (3, 8, 8), target_flops=0.1, method=method, groups=groups)["macs_reduction"] >= 0.1


class _Multiplier(torch.nn.Module):
    """A one-channel stem, then a depthwise convolution with a channel multiplier (each input
    channel makes two outputs), then a pointwise one."""

    def __init__(self):
        super().__init__()
        self.stem, self.b0 = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4)
        self.dw, self.b1 = torch.nn.Conv2d(4, 8, 3, padding=1, groups=4), torch.nn.BatchNorm2d(8)
        self.pw, self.b2 = torch.nn.Conv2d(8, 8, 1), torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.b1(self.dw(torch.relu(self.b0(self.stem(x))))))
        return self.fc(torch.relu(self.b2(self.pw(x))).mean((2, 3)))


class _ChannelsFirstEmbedding(torch.nn.Module):
    """A [1, C, H, W] position embedding: Torch-Pruning cuts a parameter's last dimension."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.pos = torch.nn.Parameter(torch.randn(1, 6, 4, 4))
        self.c2 = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.fc = torch.nn.Linear(6, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.c2(self.c1(x) + self.pos)).mean((2, 3)))


class _TokenMixer(torch.nn.Module):
    """A Mixer block: a linear layer over the tokens (5), on the transposed stream (8 channels)."""

    def __init__(self):
        super().__init__()
        self.embed, self.norm = torch.nn.Linear(4, 8), torch.nn.LayerNorm(8)
        self.tokens, self.fc1, self.fc2 = torch.nn.Linear(5, 5), torch.nn.Linear(8, 16), torch.nn.Linear(16, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.tokens(self.norm(x).transpose(1, 2)).transpose(1, 2)
        return self.head((x + self.fc2(torch.relu(self.fc1(x)))).mean(1))


@pytest.mark.parametrize("cls,size,held,kept", [
    (_Multiplier, (1, 8, 8), "the depthwise convolution with a channel multiplier 'dw'", "pw"),
    (_ChannelsFirstEmbedding, (3, 4, 4), "through the parameter 'pos' (1, 6, 4, 4), whose dimension 3", "c2"),
    (_TokenMixer, (5, 4), "through 'tokens', whose output has 5 positions, not these channels", "fc1")])
def test_layers_torch_pruning_would_cut_wrongly_are_left_whole_by_name(cls, size, held, kept):
    torch.manual_seed(0)
    model = cls().eval()
    groups = build_groups(model, size)
    assert any(held in h for h in groups.held), groups.held
    assert kept in groups.ids and (cls is not _Multiplier or "stem" not in groups.ids)
    assert check(model, size, target_flops=0.05, groups=groups)["max_abs_diff_masked_vs_sliced"] < 1e-4


def test_a_timm_vit_stream_runs_around_its_attention_and_its_inside_is_heads():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2,
                                                          num_heads=2, num_classes=10).eval()
    groups = build_groups(vit, (3, 32, 32))
    stream = [g for g in groups if g.kind == "stream"]
    assert len(stream) == 1 and {"blocks.0.attn.qkv", "blocks.0.attn.proj"} <= {s.module for s in stream[0].slices}
    assert groups["blocks.0.attn.qkv"].kind == "heads" and not groups.held  # inside: whole heads (test_heads.py)
    record = check(vit, (3, 32, 32), target_flops=0.3, groups=groups)
    assert record["kinds"]["stream"] == 1 and record["kept"][stream[0].id] < 32


def test_a_weight_standardised_convolution_is_left_whole_by_name():
    timm = pytest.importorskip("timm")
    model = torch.nn.Sequential(timm.layers.ScaledStdConv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3),
                                torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(8, 2)).eval()
    groups = build_groups(model, (3, 8, 8))
    assert groups.ids == ["2"] and any("the weight-standardised convolution '0' (ScaledStdConv2d)" in h
                                       for h in groups.held)
