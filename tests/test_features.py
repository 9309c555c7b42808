import torch

from mrp_gpu.features import activation_features, bn_scale, weight_features, weight_matrix


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
    f = weight_features(resnet20, resnet20_groups, bn=True)
    assert f.rows[resnet20_groups.index("layer2.1.conv1")].shape[1] == 32 * 9 + 1


def test_activation_features_are_centred_and_normalised(resnet20, resnet20_groups):
    x = torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    f = activation_features(resnet20, resnet20_groups, x, pool=2, chunk=10)
    for r, g in zip(f.rows, resnet20_groups):
        layers = len(g.norms)
        assert r.shape == (g.size, layers * 24 * 4)
        assert torch.allclose(r.norm(dim=1), torch.ones(g.size), atol=1e-5)
        assert r[:, : 24 * 4].sum(1).abs().max() < 1e-4  # each layer's part is centred
