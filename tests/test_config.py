"""Experiment configurations: value parsing, overrides, suites, LR schedules and data.

Everything here is fast: nothing trains, and the only data built are the generated images and
scikit-learn's bundled digits.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Optional

import pytest
import torch

from adabatch.experiments.build import (
    OPTION_LOOKUPS,
    SCHEDULES,
    build_lr_scheduler,
    optimizer_options,
)
from adabatch.experiments.bundles import build_data
from adabatch.experiments.config import (
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    PolicyConfig,
    TrainConfig,
    apply_overrides,
    parse_overrides,
)
from adabatch.experiments.run import experiment_config
from adabatch.experiments.suites import EXPERIMENTS, SUITES, experiment, suite
from adabatch.options import parse as parse_value

# A base of our own (the suites' bases are tuned over time); like the quick suite's.
QUICK = Config(
    data=DataConfig(name="synthetic-images", options={"num_train": 300, "num_test": 100}),
    model=ModelConfig(name="mlp", options={"hidden": (64,)}),
    optimizer=OptimizerConfig(name="sgd", lr=0.05),
    policy=PolicyConfig(name="constant", batch_size=16),
    train=TrainConfig(epochs=12, log_every=25),
)


def apply(config: Config, *pairs: tuple[str, object]) -> Config:
    return apply_overrides(config, list(pairs), OPTION_LOOKUPS)


def divebatch(*pairs: tuple[str, object]) -> Config:
    """The quick suite's base with the DiveBatch policy, then ``pairs``."""
    return apply(QUICK, ("policy.name", "divebatch"), ("policy.max_batch_size", "64"), *pairs)


# ---------------------------------------------------------------------- parse_value
@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("12", int, 12),
        ("-3", int, -3),
        ("0.25", float, 0.25),
        ("1e-3", float, 1e-3),
        ("7", float, 7.0),
        ("abc", str, "abc"),
        ("3", str, "3"),
        ("", str, ""),
        ("1,2,3", tuple[int, ...], (1, 2, 3)),
        ("(4, 5)", tuple[int, ...], (4, 5)),
        ("8", tuple[int, ...], (8,)),
        ("0.9,0.99", tuple[float, ...], (0.9, 0.99)),
        ("none", Optional[int], None),  # noqa: UP045 - the typing spelling is what is tested
        ("None", int | None, None),
        ("null", int | None, None),
        ("5", int | None, 5),
        ("5", Optional[float], 5.0),  # noqa: UP045
        # no type known: a literal
        ("none", None, None),
        ("true", None, True),
        ("False", None, False),
        ("3", None, 3),
        ("2.5", None, 2.5),
        ("1,2", None, (1, 2)),
        ("a,b", None, ("a", "b")),
        ("word", None, "word"),
    ],
)
def test_parse_value(text: str, kind: object, expected: object) -> None:
    value = parse_value(text, kind, key="s.k")
    assert value == expected
    assert type(value) is type(expected)
    if isinstance(expected, tuple):
        assert [type(v) for v in value] == [type(v) for v in expected]


@pytest.mark.parametrize("word", ["true", "TRUE", "yes", "1", "on", " True "])
def test_parse_value_true_words(word: str) -> None:
    assert parse_value(word, bool, key="k") is True


@pytest.mark.parametrize("word", ["false", "No", "0", "off"])
def test_parse_value_false_words(word: str) -> None:
    assert parse_value(word, bool, key="k") is False


@pytest.mark.parametrize(
    ("text", "kind", "fragment"),
    [
        ("abc", int, "expected an integer"),
        ("2.5", int, "expected an integer"),
        ("", int, "expected an integer"),
        ("none", int, "expected an integer"),
        ("fast", float, "expected a number"),
        ("maybe", bool, "expected a boolean"),
        ("1,x", tuple[int, ...], "expected an integer"),
        ("x", int | None, "expected an integer"),
    ],
)
def test_parse_value_errors_name_the_key_and_the_text(
    text: str, kind: object, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_value(text, kind, key="policy.every")
    message = str(info.value)
    assert message.startswith("policy.every:")
    assert fragment in message
    bad = "x" if kind == tuple[int, ...] else text
    assert repr(bad) in message


def test_parse_value_union_of_two_types_names_key_and_text() -> None:
    with pytest.raises(ConfigError, match=r"^k: cannot parse 'x'$"):
        parse_value("x", int | float, key="k")


def test_parse_value_unsupported_type() -> None:
    with pytest.raises(ConfigError, match=r"k: values of type .*dict.* cannot be set"):
        parse_value("{}", dict, key="k")


# ---------------------------------------------------------------------- parse_overrides
def test_parse_overrides_forms() -> None:
    assert parse_overrides(["--a.b=1", "a.b=2", "--epochs", "5", "--x=", "--y=a=b"]) == [
        ("a.b", "1"),
        ("a.b", "2"),
        ("epochs", "5"),
        ("x", ""),
        ("y", "a=b"),
    ]


def test_parse_overrides_space_form_takes_negative_numbers() -> None:
    assert parse_overrides(["--optimizer.lr", "-1", "--seed", "3"]) == [
        ("optimizer.lr", "-1"),
        ("seed", "3"),
    ]


@pytest.mark.parametrize(
    "items", [["--epochs"], ["--epochs", "--seed=1"], ["epochs"], ["--=1"], ["--seed=1", "--a"]]
)
def test_parse_overrides_missing_value(items: list[str]) -> None:
    with pytest.raises(ConfigError, match=re.escape("has no value; write --section.key=value")):
        parse_overrides(items)


def test_parse_overrides_missing_value_names_the_item() -> None:
    with pytest.raises(ConfigError, match="override '--epochs' has no value"):
        parse_overrides(["--epochs", "--seed=1"])


# ---------------------------------------------------------------------- apply_overrides
def test_field_overrides_typed_and_string() -> None:
    c = apply(
        QUICK,
        ("optimizer.lr", "0.2"),
        ("train.epochs", 3),
        ("train.tensorboard", "no"),
        ("data.train_size", "100"),
        ("data.test_size", None),
        ("train.device", "auto"),
        ("optimizer.lr", 1),  # the later one wins, an int for a float field
    )
    assert c.optimizer.lr == 1.0 and type(c.optimizer.lr) is float
    assert c.train.epochs == 3
    assert c.train.tensorboard is False
    assert c.data.train_size == 100
    assert c.data.test_size is None
    assert c.train.device == "auto"
    # the original is untouched
    assert QUICK.optimizer.lr == 0.05
    assert QUICK.train.epochs == 12
    assert QUICK.data.train_size is None


def test_mapping_overrides() -> None:
    c = apply_overrides(QUICK, {"epochs": "4", "policy.batch_size": 8}, OPTION_LOOKUPS)
    assert (c.train.epochs, c.policy.batch_size) == (4, 8)


def test_optional_field_takes_none_word() -> None:
    c = apply(QUICK, ("data.train_size", "100"))
    assert apply(c, ("data.train_size", "none")).data.train_size is None


def test_option_valid_for_divebatch() -> None:
    c = divebatch(("policy.delta", "0.2"), ("policy.every", "3"), ("policy.every_steps", "6"))
    assert c.policy.options == {
        "max_batch_size": 64,
        "delta": 0.2,
        "every": 3,
        "every_steps": 6,
    }
    assert type(c.policy.options["max_batch_size"]) is int
    schedule = apply(QUICK, ("policy.name", "schedule"), ("policy.lr_fallback", "yes"))
    assert schedule.policy.options["lr_fallback"] is True


def test_option_invalid_for_norm_test_lists_valid_and_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        apply(QUICK, ("policy.name", "norm-test"), ("policy.delta", "0.1"))
    message = str(info.value)
    assert "unknown option policy.delta for policy 'norm-test'" in message
    valid = message.split("valid options: ")[1].split("; the section's own keys")[0].split(", ")
    assert set(valid) == {"eta", "interval", "min_batch_size", "max_batch_size", "multiple_of"}
    assert "did you mean eta?" in message


def test_names_are_applied_before_options_whatever_the_order() -> None:
    c = apply(
        QUICK,
        ("policy.delta", "0.3"),
        ("policy.max_batch_size", "128"),
        ("policy.name", "divebatch"),
    )
    assert c.policy.name == "divebatch"
    assert c.policy.options == {"delta": 0.3, "max_batch_size": 128}
    # and options of the old component do not survive into a name they are invalid for
    with pytest.raises(
        ConfigError, match=re.escape("unknown option policy.delta for policy 'constant'")
    ):
        apply(c, ("policy.name", "constant"))


def test_unknown_section_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        apply(QUICK, ("polcy.delta", "0.1"))
    message = str(info.value)
    assert "unknown section 'polcy' in 'polcy.delta'" in message
    assert "data, model, optimizer, schedule, policy, train" in message
    assert "did you mean policy?" in message


def test_unknown_field_of_a_section_without_options_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        apply(QUICK, ("train.epohcs", "3"))
    message = str(info.value)
    assert "unknown key 'train.epohcs'" in message
    assert "section 'train' has epochs, seed" in message
    assert "did you mean epochs?" in message


def test_two_dots_rejected() -> None:
    with pytest.raises(ConfigError, match="keys have one dot"):
        apply(QUICK, ("policy.delta.x", "1"))


def test_bare_unique_keys_resolve_to_their_section() -> None:
    c = apply(QUICK, ("epochs", "5"), ("seed", "7"), ("lr", "0.3"), ("batch_size", "64"))
    assert c.train.epochs == 5
    assert c.train.seed == 7
    assert c.optimizer.lr == 0.3
    assert c.policy.batch_size == 64


def test_bare_options_key_errors() -> None:
    with pytest.raises(ConfigError, match=re.escape("unknown key 'options'; write section.key")):
        apply(QUICK, ("options", "x"))


def test_bare_name_is_ambiguous_and_lists_every_section() -> None:
    # Every section has a `name`: a bare `--name=divebatch` is ambiguous and the error should
    # say so and list the five sections that have one (the "ambiguous" branch of
    # _resolve_key, which is never reached); it says "unknown key" and suggests data.name only.
    with pytest.raises(ConfigError) as info:
        apply(QUICK, ("name", "divebatch"))
    message = str(info.value)
    assert "ambiguous" in message
    for section in ("data", "model", "optimizer", "schedule", "policy"):
        assert f"{section}.name" in message


def test_unknown_bare_key_errors() -> None:
    with pytest.raises(ConfigError, match=re.escape("unknown key 'nonsense'; write section.key")):
        apply(QUICK, ("nonsense", "1"))


def test_unknown_bare_key_suggests_the_dotted_one() -> None:
    # A misspelt bare key (`--epoch=3` for `--epochs=3`) is the commonest typo of all; the
    # error should point to train.epochs, as it does for a misspelt section or option.
    with pytest.raises(ConfigError) as info:
        apply(QUICK, ("epoch", "3"))
    assert "train.epochs" in str(info.value)


def test_unknown_option_error_mentions_the_section_field_it_resembles() -> None:
    # policy.batchsize: the closest valid key is the field policy.batch_size, not an option;
    # listing and suggesting only the options (min_batch_size, max_batch_size) sends the user
    # to the wrong setting.
    with pytest.raises(ConfigError) as info:
        apply(QUICK, ("policy.batchsize", "64"))
    message = re.sub(r"(min|max)_batch_size", "", str(info.value))
    assert "batch_size" in message


def test_unknown_component_names() -> None:
    with pytest.raises(ConfigError, match="unknown policy 'nope'; valid: constant, schedule"):
        apply(QUICK, ("policy.name", "nope"))
    with pytest.raises(ConfigError, match="unknown model 'nope'; valid: logistic, mlp"):
        apply(QUICK, ("model.name", "nope"))
    with pytest.raises(ConfigError, match="unknown optimizer 'nope'; valid: sgd, adamw"):
        apply(QUICK, ("optimizer.name", "nope"))
    with pytest.raises(ConfigError, match="unknown LR schedule 'nope'; valid: constant, cosine"):
        apply(QUICK, ("schedule.name", "nope"))
    with pytest.raises(ConfigError, match="unknown data set 'nope'; valid: synthetic-images"):
        apply(QUICK, ("data.name", "nope"))


def test_required_option_missing() -> None:
    with pytest.raises(ConfigError) as info:
        apply(QUICK, ("policy.name", "divebatch"))
    message = str(info.value)
    assert "policy 'divebatch' needs option(s) ['max_batch_size']" in message
    assert "--policy.max_batch_size=" in message


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("abc", "policy.every: expected an integer, got 'abc'"),
        ("2.5", "policy.every: expected an integer, got '2.5'"),
        (2.5, "policy.every: expected an integer, got 2.5"),
        # One rule for fields and options: an int refuses an integral float too.
        (2.0, "policy.every: expected an integer, got 2.0"),
        ("x", "policy.every: expected an integer, got 'x'"),
    ],
)
def test_option_type_errors(value: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        divebatch(("policy.every", value))
    assert fragment in str(info.value)


def test_option_int_given_as_an_int_string_is_an_int() -> None:
    c = divebatch(("policy.every", "2"))
    assert c.policy.options["every"] == 2 and type(c.policy.options["every"]) is int


def test_float_option_with_int_default_in_torch_accepts_a_float() -> None:
    # torch declares SGD(momentum=0, weight_decay=0): ints; the option list makes them floats
    assert optimizer_options("sgd")["momentum"].default == 0.0
    assert type(optimizer_options("sgd")["momentum"].default) is float
    base = apply(QUICK, ("optimizer.momentum", "0"))
    c = apply(base, ("optimizer.momentum", "0.9"), ("optimizer.weight_decay", "5e-4"))
    assert c.optimizer.options == {"momentum": 0.9, "weight_decay": 5e-4}
    typed = apply(base, ("optimizer.momentum", 1))
    assert typed.optimizer.options["momentum"] == 1.0
    assert type(typed.optimizer.options["momentum"]) is float
    assert apply(base, ("optimizer.nesterov", "true")).optimizer.options["nesterov"] is True


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("train.epochs", "abc", "train.epochs: expected an integer, got 'abc'"),
        ("train.epochs", 2.0, "train.epochs: expected an integer, got 2.0"),
        ("train.epochs", True, "train.epochs: expected an integer, got True"),
        ("optimizer.lr", "fast", "optimizer.lr: expected a number, got 'fast'"),
        ("train.tensorboard", "maybe", "train.tensorboard: expected a boolean"),
        ("train.tensorboard", 1, "train.tensorboard: expected a boolean, got 1"),
        ("data.train_size", "x", "data.train_size: expected an integer, got 'x'"),
        ("optimizer.nesterov", "maybe", "optimizer.nesterov: expected a boolean"),
        ("optimizer.nesterov", 1, "optimizer.nesterov: expected a boolean, got 1"),
        ("model.hidden", "a,b", "model.hidden: expected an integer, got 'a'"),
    ],
)
def test_field_and_option_type_errors(key: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply(QUICK, (key, value))
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.epochs", "0", "train.epochs must be >= 1, got 0"),
        ("policy.batch_size", "0", "policy.batch_size must be >= 1, got 0"),
        ("train.eval_batch_size", "0", "train.eval_batch_size must be >= 1, got 0"),
        ("train.log_every", "0", "train.log_every must be >= 1, got 0"),
        ("train.checkpoint_every", "-1", "train.checkpoint_every must be >= 0, got -1"),
        ("schedule.warmup_epochs", "-1", "schedule.warmup_epochs must be >= 0, got -1"),
        ("data.train_size", "0", "data.train_size must be >= 1 (or None), got 0"),
        ("optimizer.lr", "0", "optimizer.lr must be a positive finite number, got 0.0"),
        ("optimizer.lr", "-0.1", "optimizer.lr must be a positive finite number, got -0.1"),
        ("optimizer.lr", "nan", "optimizer.lr must be a positive finite number, got nan"),
        ("optimizer.lr", "inf", "optimizer.lr must be a positive finite number, got inf"),
        (
            "policy.lr_rule",
            "cubic",
            "policy.lr_rule must be one of 'none', 'linear', 'sqrt'; got 'cubic'",
        ),
    ],
)
def test_range_checks(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply(QUICK, (key, value))
    assert str(info.value) == message


def test_tuple_options() -> None:
    c = apply(QUICK, ("model.hidden", "64,32"))
    assert c.model.options["hidden"] == (64, 32)
    assert apply(QUICK, ("model.hidden", "64")).model.options["hidden"] == (64,)
    s = apply(QUICK, ("schedule.name", "multistep"), ("schedule.milestones", "3,5"))
    assert s.schedule.options == {"milestones": (3, 5)}
    assert apply(QUICK, ("model.hidden", [8, 4])).model.options["hidden"] == (8, 4)


# ---------------------------------------------------------------------- to_dict / from_dict
def test_to_dict_is_plain_json_data() -> None:
    d = QUICK.to_dict()
    assert set(d) == {"data", "model", "optimizer", "schedule", "policy", "train"}
    assert d["model"]["options"]["hidden"] == [64]  # tuples become lists
    assert json.loads(json.dumps(d)) == d


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_round_trip_through_json_gives_an_equal_config(name: str) -> None:
    s, m = EXPERIMENTS[name]
    config = experiment_config(s, m)
    back = Config.from_dict(json.loads(json.dumps(config.to_dict())))
    assert back.to_dict() == config.to_dict()
    # validation restores the typed values (tuples) of the options
    assert apply_overrides(back, [], OPTION_LOOKUPS) == config


def test_copy_equals_the_original() -> None:
    # `copy` is documented as a deep copy; a copy that compares unequal (tuple options come
    # back as lists) breaks `config == config.copy()` for every suite with a tuple option.
    assert QUICK.copy() == QUICK
    for s in SUITES.values():
        assert s.base.copy() == s.base, s.name


def test_copy_is_deep() -> None:
    c = apply(QUICK, ("optimizer.momentum", "0.5"))
    d = c.copy()
    d.optimizer.options["momentum"] = 0.1
    d.train.epochs = 99
    assert c.optimizer.options["momentum"] == 0.5
    assert c.train.epochs == 12


def test_from_dict_rejects_unknown_sections_and_fields() -> None:
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \['trian'\]; valid:"):
        Config.from_dict({"trian": {"epochs": 3}})
    with pytest.raises(ConfigError) as info:
        Config.from_dict({"train": {"epoch": 3}})
    assert "unknown field(s) ['epoch'] in section 'train'" in str(info.value)
    assert "'epochs'" in str(info.value)


def test_from_dict_missing_sections_take_defaults() -> None:
    c = Config.from_dict({"train": {"epochs": 3}})
    assert c.train.epochs == 3
    assert c.policy == Config().policy
    assert Config.from_dict({}) == Config()


# ---------------------------------------------------------------------- LR schedules
def _optimizer(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=lr)


def _lrs(config: Config, epochs: int) -> list[float]:
    """The LR of each of the first ``epochs`` epochs under ``config``'s schedule."""
    optimizer = _optimizer(config.optimizer.lr)
    scheduler = build_lr_scheduler(config, optimizer)
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return out


def _schedule(name: str, *pairs: tuple[str, object], lr: float = 1.0) -> Config:
    return apply(QUICK, ("schedule.name", name), ("optimizer.lr", lr), *pairs)


def test_schedule_constant_and_warmup() -> None:
    assert _lrs(QUICK, 3) == [0.05, 0.05, 0.05]
    warm = _schedule("constant", ("schedule.warmup_epochs", "2"))
    assert _lrs(warm, 5) == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0])


def test_schedule_cosine() -> None:
    c = _schedule("cosine", ("schedule.t_max", "4"), ("schedule.eta_min", "0.1"), ("epochs", "12"))
    expected = [0.1 + 0.9 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)] + [0.1, 0.1]
    lrs = _lrs(c, 11)
    assert lrs[:7] == pytest.approx(expected)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(0.55)
    assert lrs[4] == pytest.approx(0.1)
    assert lrs[10] == pytest.approx(0.1)  # held at η_min after t_max


def test_schedule_cosine_with_warmup() -> None:
    c = _schedule("cosine", ("schedule.warmup_epochs", "1"), ("schedule.t_max", "4"))
    lrs = _lrs(c, 2)
    assert lrs[0] == pytest.approx(0.5 * 1.0)
    assert lrs[1] == pytest.approx((1 + math.cos(math.pi / 4)) / 2)


def test_schedule_multistep() -> None:
    c = _schedule("multistep", ("schedule.milestones", "2,4"), ("schedule.gamma", "0.5"))
    assert _lrs(c, 6) == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])


def test_schedule_step() -> None:
    c = _schedule("step", ("schedule.step_size", "3"), ("schedule.gamma", "0.1"))
    assert _lrs(c, 8) == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])


def test_build_lr_scheduler_none_for_constant() -> None:
    assert build_lr_scheduler(QUICK, _optimizer(0.05)) is None
    warm = apply(QUICK, ("schedule.warmup_epochs", "2"))
    scheduler = build_lr_scheduler(warm, _optimizer(0.05))
    assert isinstance(scheduler, torch.optim.lr_scheduler.LinearLR)  # torch's own
    assert scheduler.get_last_lr() == pytest.approx([0.05 / 3])


def test_build_lr_scheduler_cosine_defaults_to_the_run_length() -> None:
    c = apply(
        QUICK,
        ("schedule.name", "cosine"),
        ("schedule.eta_min", "0.005"),
        ("optimizer.lr", "0.05"),
        ("epochs", "4"),
    )
    scheduler = build_lr_scheduler(c, _optimizer(0.05))
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert scheduler.T_max == 4
    expected = [0.005 + 0.045 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)] + [0.005]
    assert _lrs(c, 6)[:5] == pytest.approx(expected[:5])


def test_build_lr_scheduler_rejects_zero_step_size() -> None:
    c = apply(QUICK, ("schedule.name", "step"), ("schedule.step_size", "0"))
    with pytest.raises(ConfigError, match="step_size"):
        build_lr_scheduler(c, _optimizer(0.05))


def test_lr_scheduler_state_round_trips_through_a_weights_only_file(tmp_path: Path) -> None:
    c = apply(
        QUICK,
        ("schedule.name", "multistep"),
        ("schedule.milestones", "1,3"),
        ("schedule.gamma", "0.5"),
        ("schedule.warmup_epochs", "1"),
    )
    optimizer = _optimizer(c.optimizer.lr)
    scheduler = build_lr_scheduler(c, optimizer)
    assert scheduler is not None
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    torch.save(scheduler.state_dict(), tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)

    other_optimizer = _optimizer(c.optimizer.lr)
    other = build_lr_scheduler(apply(c, ("schedule.milestones", "7")), other_optimizer)
    assert other is not None
    other.load_state_dict(state)
    other_optimizer.param_groups[0]["lr"] = optimizer.param_groups[0]["lr"]  # as a checkpoint does
    assert other.get_last_lr() == pytest.approx(scheduler.get_last_lr())
    for s, o in ((scheduler, optimizer), (other, other_optimizer)):
        o.step()
        s.step()
    # The saved milestones (1, 3), not its own (7): the LR drops again at epoch 3.
    assert other.get_last_lr() == pytest.approx(scheduler.get_last_lr())
    assert scheduler.get_last_lr() == pytest.approx([0.05 * 0.25])


def test_schedule_options_are_the_documented_ones() -> None:
    options = {
        name: {k: o.default for k, o in OPTION_LOOKUPS["schedule"](name).items()}
        for name in SCHEDULES
    }
    assert options == {
        "constant": {},
        "cosine": {"t_max": 0, "eta_min": 0.0},
        "multistep": {"milestones": (), "gamma": 0.1},
        "step": {"step_size": 30, "gamma": 0.1},
    }


def test_options_fixed_tuples_and_literals() -> None:
    from typing import Literal

    from adabatch.options import check

    # Adam's betas: a fixed pair, torch annotates it tuple[float | Tensor, float | Tensor].
    assert apply(
        QUICK, ("optimizer.name", "adam"), ("optimizer.betas", "0.8,0.9")
    ).optimizer.options["betas"] == (0.8, 0.9)
    with pytest.raises(ConfigError, match=r"optimizer.betas: expected 2 values, got '0.8'"):
        apply(QUICK, ("optimizer.name", "adam"), ("optimizer.betas", "0.8"))
    assert parse_value("b", Literal["a", "b"], key="k") == "b"
    with pytest.raises(ConfigError, match=r"k: expected one of 'a', 'b', got 'c'"):
        check("c", Literal["a", "b"], key="k")


# ---------------------------------------------------------------------- suites
@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_config_validates(name: str) -> None:
    s, m = experiment(name)
    assert f"{s.name}/{m.label}" == name
    config = experiment_config(s, m)
    for key, value in m.overrides.items():
        section, _, field = key.partition(".")
        target = getattr(config, section)
        actual = getattr(target, field) if hasattr(target, field) else target.options[field]
        assert actual == value, key
    # and the LR schedule can be built from it
    scheduler = build_lr_scheduler(config, _optimizer(config.optimizer.lr))
    assert (scheduler is None) == (
        config.schedule.name == "constant" and config.schedule.warmup_epochs == 0
    )


def test_experiments_are_every_method_of_every_suite() -> None:
    expected = {f"{s.name}/{m.label}" for s in SUITES.values() for m in s.methods}
    assert set(EXPERIMENTS) == expected
    assert len(EXPERIMENTS) == sum(len(s.methods) for s in SUITES.values())


@pytest.mark.parametrize("name", sorted(SUITES))
def test_suite_definitions_are_consistent(name: str) -> None:
    s = suite(name)
    labels = [m.label for m in s.methods]
    assert len(labels) == len(set(labels))
    assert set(s.baselines) <= set(labels)
    assert s.hardware in ("cpu", "gpu")
    assert s.seeds >= 1
    info = s.report_info()
    assert info["methods"] == labels
    assert info["baselines"] == list(s.baselines)
    for m in s.methods:
        config = experiment_config(s, m)
        # a label "sgd-128" or "adagrad-16": a constant batch of that size
        size = re.fullmatch(r"(?:sgd|adagrad)-(\d+)(?:-lr)?", m.label)
        if size:
            assert config.policy.name == "constant", m.label
            assert config.policy.batch_size == int(size.group(1)), m.label
        # "cap N" and "δ = D" in a description are the policy's max_batch_size and delta
        cap = re.search(r"cap (\d+)", m.description)
        if cap:
            assert config.policy.options["max_batch_size"] == int(cap.group(1)), m.label
        delta = re.search(r"δ = ([0-9.]+)", m.description)
        if delta:
            assert config.policy.options["delta"] == float(delta.group(1)), m.label


def test_gpu_suites() -> None:
    gpu = {name for name, s in SUITES.items() if s.hardware == "gpu"}
    assert gpu == {"fashion-mnist-resnet18", "cifar10", "cifar100", "tiny-imagenet", "lm-gpu"}
    for name in gpu:
        assert SUITES[name].base.train.device == "auto"
    for name in set(SUITES) - gpu:
        assert SUITES[name].base.train.device == "cpu"


def test_composite_suite_parts() -> None:
    mnist = suite("mnist")
    assert mnist.parts == ("mnist-mlp", "mnist-logreg", "mnist-cnn")
    assert mnist.methods == ()
    for part in mnist.parts:
        assert SUITES[part].methods
        assert not SUITES[part].parts
        assert SUITES[part].base.data.name == "mnist"
    for s in SUITES.values():
        if s.runner == "trainer":
            assert bool(s.parts) != bool(s.methods), s.name
        else:  # the sparse suite runs numpy solvers: neither methods nor parts
            assert not s.parts and not s.methods, s.name


def test_paper_schedule_of_cifar100() -> None:
    s, m = experiment("cifar100/sgd-128")
    config = experiment_config(s, m)
    lrs = [lr / config.optimizer.lr for lr in _lrs(config, 200)]
    assert lrs[0] == pytest.approx(0.5)  # one warm-up epoch
    assert [lrs[e] for e in (1, 59, 60, 119, 120, 160, 199)] == pytest.approx(
        [1, 1, 0.2, 0.2, 0.04, 0.008, 0.008]
    )


def test_experiment_of_a_suite_name_suggests_its_methods() -> None:
    with pytest.raises(ConfigError) as info:
        experiment("quick")
    message = str(info.value)
    assert "'quick' is a suite" in message
    assert "sgd-small, sgd-large, adabatch, divebatch, norm-test" in message
    assert "adabatch compare quick" in message


def test_unknown_method_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="suite 'quick' has no method 'nope'; valid: sgd-small"):
        experiment("quick/nope")


@pytest.mark.parametrize("name", ["nope/x", "quikc/divebatch", ""])
def test_unknown_experiment(name: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown experiment '{name}'.*adabatch list"):
        experiment(name)


def test_unknown_suite() -> None:
    with pytest.raises(ConfigError, match="unknown suite 'nope'; valid suites: quick, mnist"):
        suite("nope")


# ---------------------------------------------------------------------- data
def test_synthetic_images_are_standardised() -> None:
    options = {"num_train": 300, "num_test": 100}
    b = build_data(DataConfig(name="synthetic-images", options=options), seed=0)
    assert (len(b.train), len(b.test)) == (300, 100)
    assert b.in_shape == (1, 16, 16)
    assert b.num_classes == 10
    assert b.train.inputs.dtype == torch.float32
    assert abs(b.train.inputs.mean().item()) < 0.1
    assert abs(b.train.inputs.std().item() - 1) < 0.1
    assert b.train_transform is None and b.eval_transform is None and b.generators == ()
    assert "synthetic-images: 300 train, 100 test" in b.description


def test_digits_standardised_by_the_train_split() -> None:
    b = build_data(DataConfig(name="digits"), seed=0)
    assert (len(b.train), len(b.test)) == (1437, 360)
    assert b.in_shape == (1, 8, 8)
    assert b.num_classes == 10
    assert abs(b.train.inputs.mean().item()) < 1e-5
    assert b.train.inputs.std().item() == pytest.approx(1.0, abs=1e-4)
    assert abs(b.test.inputs.mean().item()) < 0.1
    assert abs(b.test.inputs.std().item() - 1) < 0.1
    assert set(b.train.targets.tolist()) == set(range(10))


def test_subsets_are_the_same_for_every_seed() -> None:
    config = DataConfig(name="digits", train_size=100, test_size=50)
    a = build_data(config, seed=0)
    b = build_data(config, seed=5)
    assert (len(a.train), len(a.test)) == (100, 50)
    assert torch.equal(a.train.inputs, b.train.inputs)
    assert torch.equal(a.train.targets, b.train.targets)
    assert torch.equal(a.test.targets, b.test.targets)
    # a subset of the full split, not a copy of its head
    full = build_data(DataConfig(name="digits"), seed=0)
    rows = {tuple(x.flatten().tolist()) for x in full.train.inputs}
    assert all(tuple(x.flatten().tolist()) in rows for x in a.train.inputs)
    assert not torch.equal(a.train.targets, full.train.targets[:100])
    # the whole split when train_size is its size
    assert len(build_data(DataConfig(name="digits", train_size=1437), seed=0).train) == 1437


def test_subset_larger_than_the_data() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("data.train_size=5000 exceeds the 1437 samples")
    ):
        build_data(DataConfig(name="digits", train_size=5000), seed=0)
    with pytest.raises(ConfigError, match=re.escape("data.test_size=361 exceeds the 360 samples")):
        build_data(DataConfig(name="digits", test_size=361), seed=0)


def test_augment_on_images() -> None:
    b = build_data(DataConfig(name="digits", augment=True), seed=3)
    assert b.train_transform is not None
    assert b.eval_transform is None
    assert len(b.generators) == 1
    (generator,) = b.generators
    x, y = b.train.inputs[:32], b.train.targets[:32]
    state = generator.get_state()
    out, out_y = b.train_transform((x, y))
    assert out.shape == x.shape
    assert torch.equal(out_y, y)
    assert not torch.equal(out, x)
    generator.set_state(state)
    again, _ = b.train_transform((x, y))
    assert torch.equal(again, out)  # drawn from the checkpointed generator only
    other = build_data(DataConfig(name="digits", augment=True), seed=4)
    assert not torch.equal(other.train_transform((x, y))[0], out)


def test_unknown_data_options() -> None:
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['foo'\] for data set 'digits'"):
        build_data(DataConfig(name="digits", options={"foo": 1}), seed=0)
    with pytest.raises(
        ConfigError, match=re.escape("unknown option data.foo for data 'synthetic-images'")
    ):
        apply(QUICK, ("data.foo", "1"))


def test_missing_data_set_names_the_fetch_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("root", "env", "cache"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("ADABATCH_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as info:
        build_data(DataConfig(name="mnist", root=str(tmp_path / "root")), seed=0)
    message = str(info.value)
    assert "adabatch data fetch mnist" in message
    for name in ("root", "env", "cache"):
        assert str(tmp_path / name) in message
