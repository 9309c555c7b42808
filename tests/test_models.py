import pytest
import torch

from mrp_gpu.errors import ModelError, WeightsError
from mrp_gpu.models import create_model, default_input_size, list_models, load_weights, parse_input_size


@pytest.mark.parametrize("name,channels", [("resnet20", 64), ("resnet32", 64), ("resnet110", 64),
                                            ("vgg16_cifar", 512)])
def test_cifar_models_run_at_their_default_size(name, channels):
    model = create_model(name, num_classes=7)
    size = default_input_size(name)
    assert size == (3, 32, 32)
    assert model(torch.randn(2, *size)).shape == (2, 7)
    assert not model.training


def test_resnet_depth_and_projection_shortcuts():
    model = create_model("resnet56")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    shortcuts = [m for m in convs if m.kernel_size == (1, 1)]
    assert len(convs) - len(shortcuts) == 55  # 6n+1 3x3 convs, + the fc = 56 layers
    assert len(shortcuts) == 2  # one 1x1 projection per stage change


def test_in_chans_and_demo_shape():
    model = create_model("resnet20", in_chans=1)
    assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)
    assert default_input_size("demo") == (1, 28, 28)


def test_torchvision_model_by_name_and_stem_adaptation():
    model = create_model("resnet18", num_classes=5, in_chans=1)
    assert default_input_size("resnet18", 1) == (1, 224, 224)
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 5)
    assert default_input_size("inception_v3") == (3, 299, 299)
    assert "mobilenet_v2" in list_models("mobile*")


def test_unknown_model_names_close_matches():
    with pytest.raises(ModelError, match="did you mean resnet56"):
        create_model("resnet57")


def test_parse_input_size():
    assert parse_input_size("3x64x48") == (3, 64, 48)
    assert parse_input_size("64") == (3, 64, 64)
    for bad in ("3x64", "axb", "0x3x3"):
        with pytest.raises(ModelError, match="--input-size"):
            parse_input_size(bad)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_weights_round_trip(tmp_path, suffix):
    src = create_model("resnet20")
    path = tmp_path / f"w{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": src.state_dict()}, path)  # a wrapped checkpoint is unwrapped
    else:
        from safetensors.torch import save_file

        save_file(src.state_dict(), str(path))
    dst = create_model("resnet20", weights=path)
    for a, b in zip(src.state_dict().values(), dst.state_dict().values()):
        assert torch.equal(a, b)


def test_weights_errors_name_the_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        create_model("resnet20", weights=tmp_path / "missing.pt")
    other = tmp_path / "r32.pt"
    torch.save(create_model("resnet32").state_dict(), other)
    with pytest.raises(WeightsError, match=r"r32\.pt.*does not fit CifarResNet: unexpected keys"):
        create_model("resnet20", weights=other)
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        load_weights(create_model("resnet20"), corrupt)


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, path)
    with pytest.raises(WeightsError, match="cannot read weights file"):
        create_model("resnet20", weights=path)


def test_torchvision_enum_without_network_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached
    import torchvision

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(WeightsError, match="Without internet, pass a local state_dict"):
        create_model("resnet18", weights="IMAGENET1K_V1")


@pytest.mark.parametrize("name", ["demo", "vgg_demo", "resnet56_demo", "vit_demo"])
def test_shipped_models_score_what_their_cards_say(name):
    """Accuracy on the card's fixed test subset, within 1 point of the card (needs Fashion-MNIST)."""
    from mrp_gpu.data import fashion_mnist_available, get_dataset, make_loader
    from mrp_gpu.finetune import evaluate
    from mrp_gpu.models import model_card

    card = model_card(name)
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == card["parameters"]
    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    check = card["check"]
    test = get_dataset("fashion-mnist", train=False, input_size=default_input_size(name), augment=False)
    subset = torch.utils.data.Subset(test, range(check["first_test_images"]))
    acc = evaluate(model, make_loader(subset, batch_size=500, train=False, workers=0))["acc"]
    assert abs(acc - check["accuracy"]) <= 0.01, (acc, check)
