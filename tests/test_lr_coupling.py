"""LR coupling: lr = lr_sched · rule(B/B₀) · Π f_k, for chainable and closed-form schedulers."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim import lr_scheduler as sched

from adabatch.lr_coupling import LR_RULES, LRCoupling, lr_scale


def optimizer(lrs=(0.1, 0.02)) -> torch.optim.SGD:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)


def test_rules():
    assert set(LR_RULES) == {"none", "linear", "sqrt"}
    assert lr_scale("none", 512, 128) == 1.0
    assert lr_scale("linear", 512, 128) == 4.0
    assert lr_scale("sqrt", 512, 128) == 2.0
    assert lr_scale("sqrt", 200, 100) == pytest.approx(math.sqrt(2))
    with pytest.raises(ValueError, match="'none', 'linear', 'sqrt'; got 'cubic'"):
        lr_scale("cubic", 2, 1)


SCHEDULERS = {
    # chainable: they multiply the LR found in param_groups
    "step": lambda o: sched.StepLR(o, step_size=3, gamma=0.5),
    "multistep": lambda o: sched.MultiStepLR(o, milestones=[2, 5], gamma=0.1),
    "cosine": lambda o: sched.CosineAnnealingLR(o, T_max=10),
    "warmup": lambda o: sched.LinearLR(o, start_factor=0.1, total_iters=4),
    "exponential": lambda o: sched.ExponentialLR(o, gamma=0.9),
    # closed form: computed from the epoch alone
    "lambda": lambda o: sched.LambdaLR(o, lambda e: 1.0 / (1 + e)),
    "onecycle": lambda o: sched.OneCycleLR(o, max_lr=[1.0, 0.2], total_steps=12),
}


@pytest.mark.parametrize("kind", list(SCHEDULERS))
@pytest.mark.parametrize("rule", ["linear", "sqrt"])
def test_coupled_lr_is_the_twin_schedule_times_the_factor(kind, rule):
    twin = optimizer()  # the same scheduler with no coupling: the unscaled path
    twin_sched = SCHEDULERS[kind](twin)
    opt = optimizer()
    coupling = LRCoupling(opt, rule=rule, base_batch_size=32, scheduler=SCHEDULERS[kind](opt))
    sizes = [32, 32, 64, 64, 64, 256, 256, 512, 512, 512, 512]
    factors = [1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 0.8, 1.0, 1.0]
    product = 1.0
    for size, f in zip(sizes, factors, strict=True):
        opt.step()
        twin.step()
        coupling.scheduler_step()
        twin_sched.step()
        coupling.update(size, lr_factor=f)
        product *= f
        scale = LR_RULES[rule](size / 32) * product
        expected = [g["lr"] * scale for g in twin.param_groups]
        assert coupling.lrs == pytest.approx(expected, rel=1e-12)
        assert coupling.unscaled_lrs == pytest.approx([g["lr"] for g in twin.param_groups])


def test_a_closed_form_scheduler_needs_scheduler_step():
    # Why scheduler_step exists: LambdaLR overwrites param_groups with an unscaled LR.
    opt = optimizer((0.1,))
    direct = sched.LambdaLR(opt, lambda e: 0.5**e)
    coupling = LRCoupling(opt, rule="linear", base_batch_size=1)
    coupling.update(4)  # 0.4
    opt.step()
    direct.step()  # writes 0.05, which the coupling can only read as a scaled LR
    coupling.update(4)
    assert coupling.lrs == pytest.approx([0.05])  # the ×4 is lost

    opt = optimizer((0.1,))
    coupling = LRCoupling(
        opt, rule="linear", base_batch_size=1, scheduler=sched.LambdaLR(opt, lambda e: 0.5**e)
    )
    coupling.update(4)
    opt.step()
    coupling.scheduler_step()
    assert coupling.lrs == pytest.approx([0.2])  # 0.05 × 4


def test_an_lr_set_by_hand_is_taken_as_scaled():
    opt = optimizer((0.1,))
    coupling = LRCoupling(opt, rule="linear", base_batch_size=10)
    coupling.update(20)
    assert coupling.lrs == pytest.approx([0.2])
    opt.param_groups[0]["lr"] = 0.5  # the user's own change, at B = 20
    coupling.update(40)
    assert coupling.lrs == pytest.approx([1.0])
    assert coupling.unscaled_lrs == pytest.approx([0.25])


def test_state_dict_round_trip_with_scheduler():
    def build():
        opt = optimizer()
        return opt, LRCoupling(
            opt, rule="sqrt", base_batch_size=16, scheduler=sched.StepLR(opt, 2, gamma=0.5)
        )

    opt, coupling = build()
    for size in (16, 64, 64):
        opt.step()
        coupling.scheduler_step()
        coupling.update(size, 0.9)
    state = coupling.state_dict()
    _, coupling2 = build()
    coupling2.load_state_dict(state)
    assert coupling2.lrs == pytest.approx(coupling.lrs)
    for c in (coupling, coupling2):
        c.optimizer.step()
        c.scheduler_step()
        c.update(256)
    assert coupling2.lrs == pytest.approx(coupling.lrs)
    with pytest.raises(ValueError, match="rule 'sqrt' with B0=16"):
        LRCoupling(optimizer(), rule="linear", base_batch_size=16).load_state_dict(state)


def test_bad_input():
    param = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(TypeError, match="tensor LR"):
        LRCoupling(torch.optim.SGD([param], lr=torch.tensor(0.1)), base_batch_size=1)
    with pytest.raises(ValueError, match="lr rule must be one of 'none', 'linear', 'sqrt'"):
        LRCoupling(optimizer(), rule="quadratic", base_batch_size=1)
    coupling = LRCoupling(optimizer(), base_batch_size=1)
    with pytest.raises(RuntimeError, match="no scheduler"):
        coupling.scheduler_step()
    with pytest.raises(ValueError, match="lr_factor must be a positive finite number"):
        coupling.update(2, lr_factor=0.0)
