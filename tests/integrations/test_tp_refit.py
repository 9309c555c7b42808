import copy

import numpy as np
import pytest
import torch
import torch_pruning as tp
import torchvision

from mrp_gpu.errors import ModelError
from mrp_gpu.finetune import recalibrate_bn
from mrp_gpu.integrations.torch_pruning import kept_indices, refit

SIZE = (3, 64, 64)


def _model(name: str, seed: int = 0):
    """Random weights with BN statistics that fit them (those at initialisation do not)."""
    from mrp_gpu.finetune import recalibrate_bn

    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(num_classes=10)
    return recalibrate_bn(model, torch.randn(32, *SIZE, generator=torch.Generator().manual_seed(seed + 7)))


def _prune(model, x, steps: int, importance=None):
    pruner = tp.pruner.MetaPruner(model, x[:1], importance=importance or tp.importance.GroupMagnitudeImportance(),
                                  pruning_ratio=0.4, iterative_steps=steps, global_pruning=True,
                                  ignored_layers=[m for m in model.modules() if isinstance(m, torch.nn.Linear)])
    for _ in range(steps):
        pruner.step()
    return pruner


def _error(a, b, x):
    with torch.no_grad():
        return float((a(x) - b(x)).pow(2).mean() / a(x).pow(2).mean())


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("with_pruner", [True, False])
def test_the_refit_brings_a_torch_pruning_result_closer_to_the_original(name, steps, with_pruner):
    gen = torch.Generator().manual_seed(0)
    x, held_out = torch.randn(48, *SIZE, generator=gen), torch.randn(16, *SIZE, generator=gen)
    original = _model(name)
    model = copy.deepcopy(original)
    pruner = _prune(model, x, steps)
    plain = recalibrate_bn(copy.deepcopy(model), x)  # fair: BN statistics re-estimated on the same images
    before = {k: v.clone() for k, v in original.state_dict().items()}
    out = refit(original, model, x, pruner if with_pruner else None)
    assert out is model and not model.training
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())  # the original is untouched
    assert _error(original, model, held_out) < 0.8 * _error(original, plain, held_out)


def test_the_channels_it_maps_are_the_ones_pruned():
    original = _model("resnet18")
    model = copy.deepcopy(original)
    x = torch.randn(1, *SIZE)
    graph = tp.DependencyGraph().build_dependency(model, x)
    gone = [0, 5, 17]
    graph.get_pruning_group(model.layer1[0].conv1, tp.prune_conv_out_channels, idxs=gone).prune()
    kept = np.setdiff1d(np.arange(64), gone)
    maps = kept_indices(original, model)
    outs, ins = maps["layer1.0.conv1"]
    assert np.array_equal(outs, kept) and np.array_equal(ins, np.arange(64))
    outs, ins = maps["layer1.0.conv2"]  # its consumer lost those inputs
    assert np.array_equal(ins, kept) and np.array_equal(outs, np.arange(64))


def test_the_pruning_history_maps_what_the_weights_map():
    x = torch.randn(8, *SIZE)
    original = _model("resnet18")
    model = copy.deepcopy(original)
    pruner = _prune(model, x, 2)
    by_history, by_weights = kept_indices(original, model, pruner, x), kept_indices(original, model)
    assert by_history.keys() == by_weights.keys()
    assert all(np.array_equal(a, b) for n in by_history for a, b in zip(by_history[n], by_weights[n]))


def test_a_model_pruned_from_another_original_is_refused_and_left_alone():
    x = torch.randn(8, *SIZE)
    model = _model("resnet18", seed=1)
    _prune(model, x, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ModelError, match="conv1: its weights are not the original's"):
        refit(_model("resnet18", seed=0), model, x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
