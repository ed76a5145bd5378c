"""The models and their registry: shapes, parameter counts, options, errors, exact statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _compare import close
from adabatch.models import (
    MLP,
    MODELS,
    LogisticRegression,
    ResNet18,
    SmallCNN,
    build_model,
    model_options,
    resnet18_cifar,
    resnet18_tiny,
)
from adabatch.stats import compute_stats


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


# name, in_shape, num_classes, options: small inputs so every forward is cheap on CPU.
SHAPES = [
    ("logistic", (1, 28, 28), 10, {}),
    ("mlp", (64,), 3, {"hidden": (16, 8)}),
    ("small-cnn", (1, 28, 28), 10, {"channels": (4, 8), "hidden": 16}),
    ("resnet20", (3, 32, 32), 10, {}),
    ("resnet18", (3, 32, 32), 10, {}),
    ("resnet18-tiny", (3, 64, 64), 200, {}),
    ("transformer", (12,), 5, {"vocab_size": 50, "dim": 16, "heads": 2, "ff": 32, "layers": 1}),
    ("gpt", (12,), 40, {"dim": 16, "heads": 2, "ff": 32, "layers": 1}),
]


def test_shape_cases_cover_the_registry() -> None:
    assert [case[0] for case in SHAPES] == list(MODELS)


@pytest.mark.parametrize(("name", "in_shape", "num_classes", "options"), SHAPES)
def test_output_shape(name: str, in_shape, num_classes: int, options) -> None:
    model = build_model(name, in_shape=in_shape, num_classes=num_classes, **options)
    if name == "transformer":
        x = torch.randint(0, options["vocab_size"], (2, *in_shape))
    elif name == "gpt":  # next-token logits at every position; the classes are the vocabulary
        x = torch.randint(0, num_classes, (2, *in_shape))
        assert model(x).shape == (2, *in_shape, num_classes)
        return
    else:
        x = torch.randn(2, *in_shape)
    assert model(x).shape == (2, num_classes)


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        MODELS["new"] = MLP  # type: ignore[index]


def test_builders_match_the_named_models() -> None:
    assert isinstance(build_model("logistic", in_shape=(784,), num_classes=10), LogisticRegression)
    r18 = build_model("resnet18", in_shape=(1, 32, 32), num_classes=100)
    tiny = build_model("resnet18-tiny", in_shape=(3, 64, 64), num_classes=200)
    assert isinstance(r18, ResNet18) and isinstance(tiny, ResNet18)
    assert r18.stem[0].kernel_size == (3, 3) and r18.stem[0].in_channels == 1
    assert tiny.stem[0].kernel_size == (7, 7) and isinstance(tiny.stem[-1], nn.MaxPool2d)
    assert r18.fc.out_features == 100


def test_model_options_have_typed_defaults() -> None:
    assert model_options("logistic") == {}
    assert model_options("mlp") == {"hidden": (512,)}
    assert model_options("small-cnn") == {"norm": "none", "channels": (32, 64), "hidden": 128}
    assert model_options("resnet20") == {"norm": "group"}
    assert model_options("resnet18") == model_options("resnet18-tiny") == {"norm": "group"}
    assert set(model_options("transformer")) == {"vocab_size", "dim", "heads", "ff", "layers"}
    for name in MODELS:
        for key, default in model_options(name).items():
            assert default is not None and default is not ..., (name, key)


def test_options_reach_the_model() -> None:
    model = build_model("small-cnn", in_shape=(3, 32, 32), num_classes=10, norm="group")
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    model = build_model("resnet18", in_shape=(3, 32, 32), num_classes=10, norm="batch")
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


# --- parameter counts ---------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_resnet18_cifar_parameter_count(norm: str) -> None:
    # The well-known figure of the kuangliu/pytorch-cifar ResNet-18; GroupNorm has the same
    # affine parameters per channel as BatchNorm.
    assert _count(resnet18_cifar(norm=norm)) == 11_173_962


def test_resnet18_tiny_parameter_count() -> None:
    # Only the stem (7×7 instead of 3×3) and the classifier (200 classes) differ.
    expected = 11_173_962 - _conv(3, 64, 3, bias=False) + _conv(3, 64, 7, bias=False)
    expected += _linear(512, 200) - _linear(512, 10)
    assert _count(resnet18_tiny()) == expected


def test_logistic_parameter_count() -> None:
    assert _count(LogisticRegression()) == 7850


def test_small_cnn_default_is_unchanged() -> None:
    # Conv(3→32), Conv(32→64), FC(64·8·8→128), FC(128→10) for 32×32 inputs, no norm.
    expected = _conv(3, 32, 3) + _conv(32, 64, 3) + _linear(64 * 8 * 8, 128) + _linear(128, 10)
    assert _count(SmallCNN()) == expected == 545_098
    # MNIST: 28×28 → 7×7 after the two poolings.
    mnist = _conv(1, 32, 3) + _conv(32, 64, 3) + _linear(64 * 7 * 7, 128) + _linear(128, 10)
    assert _count(SmallCNN(in_channels=1, image_size=28)) == mnist


def test_small_cnn_narrow_variant() -> None:
    model = SmallCNN(channels=(16, 32), hidden=64)
    expected = _conv(3, 16, 3) + _conv(16, 32, 3) + _linear(32 * 8 * 8, 64) + _linear(64, 10)
    assert _count(model) == expected
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SmallCNN(norm="group", channels=(8, 16), hidden=8),
        resnet18_cifar,
        resnet18_tiny,
        lambda: build_model("resnet20", in_shape=(3, 32, 32), num_classes=10),
    ],
    ids=["small-cnn", "resnet18", "resnet18-tiny", "resnet20"],
)
def test_group_norm_variants_have_no_batch_norm(make) -> None:
    model = make()
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


# --- exact per-sample statistics ------------------------------------------------------------


def test_resnet18_group_norm_statistics_match_reference() -> None:
    """The hooks engine's S2 = Σᵢ‖gᵢ‖² on ResNet-18 (GroupNorm) equals the per-sample oracle."""
    model = resnet18_cifar(norm="group")
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([0, 3, 7])
    loss = nn.CrossEntropyLoss()
    hooks = compute_stats(model, loss, x, y, engine="hooks", loss_reduction="mean")
    reference = compute_stats(model, loss, x, y, engine="reference", loss_reduction="mean")
    assert hooks.num_samples == reference.num_samples == 3
    # float32 on an 11 M-parameter network: the two computations agree to about 1e-5.
    close(hooks.sum_sq_norms, reference.sum_sq_norms, 1e-4, "sum_sq_norms")


# --- errors ---------------------------------------------------------------------------------


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet50'.*resnet18-tiny"):
        build_model("resnet50", in_shape=(3, 32, 32), num_classes=10)
    with pytest.raises(ValueError, match=r"'vgg'.*small-cnn"):
        model_options("vgg")


def test_unknown_option_names_it_and_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"\['width'\].*'small-cnn'.*norm, channels, hidden"):
        build_model("small-cnn", in_shape=(1, 28, 28), num_classes=10, width=3)
    with pytest.raises(ValueError, match=r"\['norm'\].*'logistic'.*\(none\)"):
        build_model("logistic", in_shape=(784,), num_classes=10, norm="group")


def test_derived_option_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\['image_size'\].*derived from in_shape"):
        build_model("small-cnn", in_shape=(1, 28, 28), num_classes=10, image_size=32)


@pytest.mark.parametrize(
    ("name", "in_shape", "expected"),
    [
        ("small-cnn", (784,), r"\(channels, size, size\).*got \(784,\)"),
        ("small-cnn", (3, 32, 28), r"square.*got \(3, 32, 28\)"),
        ("resnet18", (32, 32), r"\(channels, height, width\).*got \(32, 32\)"),
        ("resnet18-tiny", (1, 3, 64, 64), r"\(channels, height, width\).*got \(1, 3, 64, 64\)"),
        ("transformer", (3, 32, 32), r"\(seq_len,\).*got \(3, 32, 32\)"),
        ("mlp", (), r"non-empty.*got \(\)"),
        ("mlp", "784", r"non-empty.*got '784'"),
        ("mlp", (0, 28), r"in_shape\[0\] must be >= 1, got 0"),
    ],
)
def test_wrong_in_shape_says_what_is_expected(name: str, in_shape, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        build_model(name, in_shape=in_shape, num_classes=10)


def test_small_cnn_checks_its_image_size_through_the_registry() -> None:
    with pytest.raises(ValueError, match="image_size must be divisible by 4, got 30"):
        build_model("small-cnn", in_shape=(1, 30, 30), num_classes=10)


@pytest.mark.parametrize(
    ("kwargs", "error", "expected"),
    [
        ({"channels": (16,)}, ValueError, r"two entries.*\(16,\)"),
        ({"channels": (16, 0)}, ValueError, r"channels\[1\] must be >= 1, got 0"),
        ({"channels": (16, -4)}, ValueError, r"channels\[1\] must be >= 1, got -4"),
        ({"channels": (16.5, 32)}, TypeError, r"channels\[0\] must be an integer.*16.5"),
        ({"channels": "16,32"}, TypeError, r"pair of integers.*'16,32'"),
        ({"hidden": 0}, ValueError, r"hidden must be >= 1, got 0"),
        ({"image_size": 30}, ValueError, r"divisible by 4, got 30"),
        ({"in_channels": 0}, ValueError, r"in_channels must be >= 1, got 0"),
        ({"norm": "layer"}, ValueError, r"norm must be one of.*'layer'"),
    ],
)
def test_small_cnn_bad_arguments(kwargs, error: type[Exception], expected: str) -> None:
    with pytest.raises(error, match=expected):
        SmallCNN(**kwargs)


def test_resnet18_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"stem must be one of.*got 'tiny'"):
        ResNet18(stem="tiny")
    with pytest.raises(ValueError, match=r"num_classes must be >= 1, got 0"):
        ResNet18(num_classes=0)
    with pytest.raises(ValueError, match=r"norm must be one of.*'instance'"):
        resnet18_cifar(norm="instance")


def test_logistic_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"in_features must be >= 1, got 0"):
        LogisticRegression(in_features=0)
