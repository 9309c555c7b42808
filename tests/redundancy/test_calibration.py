import pytest
import torch

from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.redundancy.calibration import input_rows, measure, row_count
from mrp_gpu.redundancy.features import activation_features


def test_input_covariances_are_those_of_the_layers_patches():
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(3, 4, 3),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 5))
    x = torch.randn(10, 2, 6, 6)
    groups = build_groups(model, (2, 6, 6))

    def input_covariances(names, chunk, **kw):
        return measure(model, groups, x, consumers=names, chunk=chunk, **kw).covariances

    covs = input_covariances(["2", "4"], chunk=4)
    with torch.no_grad():
        h = model[1](model[0](x))
        patches = F.unfold(h, 3).transpose(1, 2).reshape(-1, 27)  # every 3x3 patch of every image
        flat = model[3](model[2](h))
    torch.testing.assert_close(covs["2"], torch.cov(patches.T.double(), correction=0))
    torch.testing.assert_close(covs["4"], torch.cov(flat.T.double(), correction=0))
    few = input_covariances(["2"], chunk=4, max_rows=30)  # 10 rows from each of 3 chunks
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


def test_one_pass_measures_the_features_and_the_covariances_the_separate_passes_do(resnet20, resnet20_groups):
    x = torch.randn(20, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    names = ["layer1.0.conv2", "layer2.0.conv1", "fc"]
    cal = measure(resnet20, resnet20_groups, x, features=True, consumers=names, pool=2, chunk=8, max_rows=500)
    apart = measure(resnet20, resnet20_groups, x, consumers=names, chunk=8, max_rows=500).covariances
    feats = activation_features(resnet20, resnet20_groups, x, pool=2, chunk=8)
    assert set(cal.covariances) == set(names)
    assert all(torch.equal(cal.covariances[n], apart[n]) for n in names)
    assert all(torch.equal(a, b) for a, b in zip(cal.features.rows, feats.rows))
    assert cal.nbytes == sum(c.numel() * 8 for c in apart.values()) + sum(r.numel() * 4 for r in feats.rows)
    assert measure(resnet20, resnet20_groups, x).covariances == {}  # nothing asked: no pass


def test_non_finite_activations_name_the_group(resnet20, resnet20_groups):
    from mrp_gpu.errors import ModelError

    x = torch.randn(4, 3, 32, 32)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ModelError, match="NaN or Inf activations"):
        measure(resnet20, resnet20_groups, x, features=True)


def test_a_calibration_of_another_model_is_refused_by_what_differs(resnet20, resnet20_groups):
    from mrp_gpu.errors import DataError
    from mrp_gpu.models import create_model

    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cal = measure(resnet20, resnet20_groups, x, features=True, consumers=["layer1.0.conv2"], pool=2)
    cal.validate(resnet20, resnet20_groups)  # its own model: fine
    other = create_model("vgg_demo")
    with pytest.raises(DataError, match="activation features are of other channel groups"):
        cal.validate(other, build_groups(other, (1, 28, 28)))
    covs_only = type(cal)(x, None, cal.covariances)
    with pytest.raises(DataError, match="'layer1.0.conv2', a layer this model does not have"):
        covs_only.validate(other, build_groups(other, (1, 28, 28)))
    narrow = type(cal)(x, None, {"layer1.0.conv2": torch.eye(3)})
    with pytest.raises(DataError, match="covariance of 'layer1.0.conv2' is 3 wide, the layer reads 144"):
        narrow.validate(resnet20, resnet20_groups)
    import mrp_gpu

    with pytest.raises(DataError, match="measure it on this model"):  # a plan reusing it checks it first
        mrp_gpu.plan(other, (1, 28, 28), target_flops=0.3, calibration=cal)
