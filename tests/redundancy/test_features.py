import torch

from mrp_gpu.redundancy.features import (
    activation_features,
    bn_scale,
    consumer_energy,
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
