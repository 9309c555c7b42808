import pytest
import torch

from mrp_gpu.redundancy.features import (
    activation_features,
    bn_scale,
    consumer_energy,
    input_rows,
    row_count,
    weight_features,
    weight_matrix,
)


def test_weight_rows_are_the_producers_filters(resnet20, resnet20_groups):
    g = resnet20_groups["layer1.1.conv1"]
    w = weight_matrix(resnet20, g)
    assert torch.equal(w, resnet20.layer1[1].conv1.weight.detach().flatten(1))
    stage = resnet20_groups["conv1"]  # stem + three conv2 of stage 1: concatenated
    assert weight_matrix(resnet20, stage).shape == (16, 27 + 3 * 144)
    f = weight_features(resnet20, resnet20_groups)
    assert all(torch.allclose(r.norm(dim=1), torch.ones(len(r))) for r in f.rows)


def test_bn_scale(resnet20, resnet20_groups):
    g = resnet20_groups["layer2.1.conv1"]
    bn = resnet20.layer2[1].bn1
    expected = bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps)
    assert torch.allclose(bn_scale(resnet20, g), expected)


def test_activation_features_are_centred_and_normalised(resnet20, resnet20_groups):
    x = torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    f = activation_features(resnet20, resnet20_groups, x, pool=2, chunk=10)
    for r, g in zip(f.rows, resnet20_groups):
        layers = len(g.norms)
        assert r.shape == (g.size, layers * 24 * 4)
        assert torch.allclose(r.norm(dim=1), torch.ones(g.size), atol=1e-5)
        assert r[:, : 24 * 4].sum(1).abs().max() < 1e-4  # each layer's part is centred


def test_consumer_energy_sums_the_weights_that_read_each_channel(resnet20, resnet20_groups):
    g = resnet20_groups["layer2.1.conv1"]  # read by layer2.1.conv2 alone
    w = resnet20.layer2[1].conv2.weight.detach().double()
    assert torch.allclose(consumer_energy(resnet20, g), w.pow(2).sum((0, 2, 3)))
    stage = resnet20_groups["conv1"]  # stage 1: read by every conv1 of the stage and layer2.0's convs
    expected = sum(m.weight.detach().double().pow(2).sum((0, 2, 3))
                   for m in (resnet20.layer1[0].conv1, resnet20.layer1[1].conv1, resnet20.layer1[2].conv1,
                             resnet20.layer2[0].conv1))
    got = consumer_energy(resnet20, stage)
    extra = [s.module for s in stage.consumers if s.module not in
             ("layer1.0.conv1", "layer1.1.conv1", "layer1.2.conv1", "layer2.0.conv1")]
    for name in extra:  # e.g. a shortcut conv of stage 2
        expected = expected + resnet20.get_submodule(name).weight.detach().double().pow(2).sum((0, 2, 3))
    assert torch.allclose(got, expected)


def test_consumer_energy_behind_a_depthwise_conv():
    """A depthwise conv's channels are its input's: the group's consumer is what reads its output."""
    import torch.nn as nn

    from mrp_gpu.dependency.groups import build_groups

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 3))
    (g,) = build_groups(model, (3, 4, 4))
    fc = model[7].weight.detach().double().reshape(3, 8, 16)  # 16 flattened positions per channel
    assert torch.allclose(consumer_energy(model, g), fc.pow(2).sum((0, 2)))


def test_input_covariances_are_those_of_the_layers_patches():
    import torch.nn.functional as F

    from mrp_gpu.redundancy.features import input_covariances

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(3, 4, 3),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 5))
    x = torch.randn(10, 2, 6, 6)
    covs = input_covariances(model, ["2", "4"], x, chunk=4)
    with torch.no_grad():
        h = model[1](model[0](x))
        patches = F.unfold(h, 3).transpose(1, 2).reshape(-1, 27)  # every 3x3 patch of every image
        flat = model[3](model[2](h))
    torch.testing.assert_close(covs["2"], torch.cov(patches.T.double(), correction=0))
    torch.testing.assert_close(covs["4"], torch.cov(flat.T.double(), correction=0))
    few = input_covariances(model, ["2"], x, chunk=4, max_rows=30)  # 10 rows from each of 3 chunks
    assert few["2"].shape == (27, 27) and not torch.allclose(few["2"], covs["2"])


@pytest.mark.parametrize("layer, shape", [
    (torch.nn.Conv2d(3, 4, (3, 2), stride=2, padding=1, dilation=2), (2, 3, 11, 9)),
    (torch.nn.Conv2d(5, 2, 1), (3, 5, 4, 4)),
    (torch.nn.Conv2d(2, 2, 3, padding="same"), (1, 2, 5, 5)),
    (torch.nn.Linear(6, 3), (2, 7, 6)),
])
def test_picked_input_rows_are_those_rows_of_the_whole(layer, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    whole = input_rows(layer, x)
    assert row_count(layer, x) == len(whole)
    pick = torch.randperm(len(whole), generator=torch.Generator().manual_seed(1))[:len(whole) // 2 + 1]
    assert torch.equal(input_rows(layer, x, pick), whole[pick])


@pytest.mark.parametrize("conv", [torch.nn.Conv2d(2, 3, 3, padding="same", dilation=2),
                                  torch.nn.Conv2d(2, 3, (2, 4), padding="same"),
                                  torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"),
                                  torch.nn.Conv2d(2, 3, 3, stride=2, padding="valid")])
def test_input_rows_times_the_weights_are_the_layer_output(conv):
    x = torch.randn(2, 2, 7, 6, generator=torch.Generator().manual_seed(0))
    y = conv(x)
    rows = input_rows(conv, x) @ conv.weight.flatten(1).T + conv.bias
    assert torch.allclose(rows, y.permute(0, 2, 3, 1).reshape(-1, y.shape[1]), atol=1e-5)
