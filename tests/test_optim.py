"""AdaGradNorm against hand-written updates, its state round trip and its argument checks."""

from __future__ import annotations

import copy
import io
import itertools
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adabatch.optim import NORM_MODES, AdaGradNorm, adagrad_norm_step

EPS = 1e-10


def assert_close64(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# A least-squares problem with three parameters, written out by hand.


def _least_squares_data() -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    X = torch.randn(32, 5, generator=g, dtype=torch.float64)
    Z = torch.randn(32, 3, generator=g, dtype=torch.float64)
    y = torch.randn(32, generator=g, dtype=torch.float64)
    return X, Z, y


def _least_squares_grads(w1: Tensor, w2: Tensor, b: Tensor, data: tuple[Tensor, ...]):
    """Gradients of mean((X w1 + Z w2 + b - y)^2), analytically."""
    X, Z, y = data
    r = X @ w1 + Z @ w2 + b - y
    n = y.shape[0]
    return 2 * X.T @ r / n, 2 * Z.T @ r / n, 2 * r.sum() / n


def _least_squares_loss(w1: Tensor, w2: Tensor, b: Tensor, data: tuple[Tensor, ...]) -> Tensor:
    X, Z, y = data
    return (X @ w1 + Z @ w2 + b - y).square().mean()


def _start() -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(2)
    w1 = torch.randn(5, generator=g, dtype=torch.float64)
    w2 = torch.randn(3, generator=g, dtype=torch.float64)
    return w1, w2, torch.tensor(0.5, dtype=torch.float64)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_global_mode_matches_hand_loop_two_groups(weight_decay: float) -> None:
    data = _least_squares_data()
    w1, w2, b = (t.clone().requires_grad_() for t in _start())
    lrs, v0 = (0.1, 0.05), 0.3
    opt = AdaGradNorm(
        [{"params": [w1, w2]}, {"params": [b], "lr": lrs[1]}],
        lr=lrs[0],
        initial_accumulator_value=v0,
        weight_decay=weight_decay,
    )
    r1, r2, rb = _start()  # the reference: plain tensors, plain arithmetic
    v = [v0, v0]
    for _ in range(20):
        opt.zero_grad()
        _least_squares_loss(w1, w2, b, data).backward()
        opt.step()

        g1, g2, gb = _least_squares_grads(r1, r2, rb, data)
        g1, g2, gb = g1 + weight_decay * r1, g2 + weight_decay * r2, gb + weight_decay * rb
        v[0] = v[0] + float(g1 @ g1 + g2 @ g2)
        v[1] = v[1] + float(gb * gb)
        r1 = r1 - lrs[0] * g1 / (math.sqrt(v[0]) + EPS)
        r2 = r2 - lrs[0] * g2 / (math.sqrt(v[0]) + EPS)
        rb = rb - lrs[1] * gb / (math.sqrt(v[1]) + EPS)

    for actual, expected in [(w1, r1), (w2, r2), (b, rb)]:
        assert_close64(actual.detach(), expected)
    # One scalar per group, kept by the group's first parameter, in the parameter's dtype.
    assert set(opt.state) == {w1, b}
    for holder, expected in [(w1, v[0]), (b, v[1])]:
        acc = opt.state[holder]["norm_sum"]
        assert acc.shape == () and acc.dtype == torch.float64
        assert math.isclose(acc.item(), expected, rel_tol=1e-12)


# ---------------------------------------------------------------------------------------------
# Row-wise mode against a transcription of the AdAdaGrad authors' update (full-size sums).


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.randn(2))  # a vector before any matrix: element-wise
        self.conv = nn.Conv2d(2, 3, 3)  # 4-D weight, then its bias (borrows the conv rows)
        self.fc = nn.Linear(3 * 4 * 4, 2)  # 2-D weight, then its bias (borrows the fc rows)
        self.scale = nn.Parameter(torch.ones(1))  # length 1 after 2 rows: their mean

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.conv(x + self.shift.view(1, 2, 1, 1)))
        return self.fc(h.flatten(1)) * self.scale


def _authors_rowwise(params: list[Tensor], sums: list[Tensor], lr: float) -> None:
    """The authors' row-wise rule, sums stored at full size (rows broadcast over entries)."""
    row_norms = None
    for p, s in zip(params, sums, strict=True):
        g = p.grad
        if g.dim() in (2, 4):
            row_norms = g.reshape(g.shape[0], -1).square().sum(dim=1)
            s += row_norms[:, None]
        else:
            if row_norms is not None and row_norms.numel() % g.shape[0] == 0:
                s += row_norms.reshape(g.shape[0], -1).mean(dim=1)
            s += g * g
        p -= lr * g / (s.sqrt() + EPS).reshape(g.shape)


def _batch(n: int = 8, seed: int = 3) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 6, 6, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 2, (n,), generator=g)


def test_rowwise_mode_matches_authors_update() -> None:
    model = _Net().double()
    ref = copy.deepcopy(model)
    opt = AdaGradNorm(model.parameters(), lr=0.05, mode="rowwise")
    ref_params = list(ref.parameters())
    sums = [
        torch.full((p.shape[0], p[0].numel()) if p.dim() == 4 else p.shape, 1e-2, dtype=p.dtype)
        for p in ref_params
    ]
    for step in range(10):
        x, y = _batch(seed=step)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        ref.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        with torch.no_grad():
            _authors_rowwise(ref_params, sums, lr=0.05)

    for (name, p), q, s in zip(model.named_parameters(), ref_params, sums, strict=True):
        assert_close64(p.detach(), q.detach())
        acc = opt.state[p]["row_sum"]
        assert acc.shape == p.shape[:1] and acc.dtype == torch.float64, name
        assert_close64(acc, s.reshape(p.shape[0], -1)[:, 0])
    # The bias really borrowed its weight's rows, the shift did not borrow anything.
    bias_sum = opt.state[model.fc.bias]["row_sum"]
    assert (bias_sum > opt.state[model.fc.weight]["row_sum"]).all()


def test_rowwise_three_dim_parameter_is_rowwise_and_zero_dim_is_scalar() -> None:
    w = torch.randn(4, 3, 2, dtype=torch.float64)
    c = torch.tensor(2.0, dtype=torch.float64)
    gw, gc = torch.randn_like(w), torch.tensor(-0.5, dtype=torch.float64)
    accs = [torch.full((4,), 0.1, dtype=torch.float64), torch.tensor(0.1, dtype=torch.float64)]
    w0, c0 = w.clone(), c.clone()
    adagrad_norm_step([w, c], [gw, gc], accs, lr=0.3, mode="rowwise", eps=0.0)
    rows = 0.1 + gw.square().sum(dim=(1, 2))
    assert_close64(accs[0], rows)
    assert_close64(w, w0 - 0.3 * gw / rows.sqrt()[:, None, None])
    assert_close64(accs[1], torch.tensor(0.1 + 0.25, dtype=torch.float64))
    assert_close64(c, c0 - 0.3 * gc / math.sqrt(0.35))


# ---------------------------------------------------------------------------------------------
# Options: maximize, closure, parameters without a gradient.


@pytest.mark.parametrize("mode", NORM_MODES)
def test_maximize_equals_minimizing_the_negated_loss(mode: str) -> None:
    model = _Net().double()
    twin = copy.deepcopy(model)
    kw = {"lr": 0.05, "mode": mode, "weight_decay": 0.01}
    opt = AdaGradNorm(model.parameters(), maximize=True, **kw)
    opt_twin = AdaGradNorm(twin.parameters(), **kw)
    for step in range(3):
        x, y = _batch(seed=step)
        opt.zero_grad()
        (-F.cross_entropy(model(x), y)).backward()
        opt.step()
        opt_twin.zero_grad()
        F.cross_entropy(twin(x), y).backward()
        opt_twin.step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_step_returns_closure_loss_and_closure_runs_with_grad() -> None:
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = AdaGradNorm([w], lr=0.1)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = w.square().sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, Tensor) and loss.item() == pytest.approx(5.0)
    assert opt.step() is None
    assert w.detach().norm() < math.sqrt(5.0)


@pytest.mark.parametrize("mode", NORM_MODES)
def test_parameters_without_grad_are_skipped(mode: str) -> None:
    frozen = torch.randn(3, 2, requires_grad=True)  # first of its group, never gets a grad
    w = torch.randn(3, 2, requires_grad=True)
    alone = w.detach().clone().requires_grad_()
    opt = AdaGradNorm([frozen, w], lr=0.1, mode=mode)
    opt_alone = AdaGradNorm([alone], lr=0.1, mode=mode)
    before = frozen.detach().clone()
    for _ in range(3):
        for p, o in ((w, opt), (alone, opt_alone)):
            o.zero_grad()
            (p * torch.arange(6.0).view(3, 2)).sum().backward()
            o.step()
    assert frozen.grad is None and torch.equal(frozen, before)
    assert torch.equal(w, alone)
    if mode == "global":  # the group's scalar lives with its first parameter regardless
        assert set(opt.state) == {frozen}
    else:
        assert set(opt.state) == {w}


def test_sparse_gradient_is_refused_with_the_shape() -> None:
    emb = nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    opt = AdaGradNorm(emb.parameters())
    with pytest.raises(RuntimeError, match=r"sparse.*\(10, 3\).*torch\.optim\.Adagrad"):
        opt.step()


# ---------------------------------------------------------------------------------------------
# state_dict round trip: a resumed run continues bit for bit.


def _make_groups(model: _Net) -> list[dict]:
    return [
        {"params": [model.shift, *model.conv.parameters()], "mode": "rowwise"},
        {"params": [*model.fc.parameters(), model.scale], "lr": 0.02, "weight_decay": 0.01},
    ]


def test_state_dict_round_trip_continues_identically() -> None:
    model = _Net().double()
    opt = AdaGradNorm(_make_groups(model), lr=0.05)

    def train(m: nn.Module, o: AdaGradNorm, steps: range) -> None:
        for step in steps:
            x, y = _batch(seed=step)
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            o.step()

    train(model, opt, range(3))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)

    resumed = _Net().double()
    plain_groups = [{"params": group["params"]} for group in _make_groups(resumed)]
    opt_resumed = AdaGradNorm(plain_groups, lr=0.7)  # the hyper-parameters come from the dict
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed.load_state_dict(saved["model"])
    opt_resumed.load_state_dict(saved["opt"])

    train(model, opt, range(3, 7))
    train(resumed, opt_resumed, range(3, 7))
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    for (_, a), (_, b) in zip(
        sorted(opt.state_dict()["state"].items()),
        sorted(opt_resumed.state_dict()["state"].items()),
        strict=True,
    ):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert opt_resumed.param_groups[0]["mode"] == "rowwise"
    assert opt_resumed.param_groups[1]["lr"] == 0.02


def test_state_of_another_mode_is_refused() -> None:
    w = torch.randn(2, 2, requires_grad=True)
    opt = AdaGradNorm([w], mode="rowwise")
    w.sum().backward()
    opt.step()
    state = opt.state_dict()
    state["param_groups"][0]["mode"] = "global"
    other = AdaGradNorm([w])
    other.load_state_dict(state)
    with pytest.raises(ValueError, match=r"'row_sum'.*mode='global'"):
        other.step()


# ---------------------------------------------------------------------------------------------
# Argument checks.


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"lr": 0.0}, ValueError, "lr must be a positive finite number, got 0.0"),
        ({"lr": -0.1}, ValueError, "lr must be a positive finite number, got -0.1"),
        ({"lr": float("nan")}, ValueError, "lr must be a positive finite number, got nan"),
        ({"lr": float("inf")}, ValueError, "lr must be a positive finite number, got inf"),
        ({"lr": "0.1"}, TypeError, "lr must be a number, got str '0.1'"),
        (
            {"weight_decay": -1e-4},
            ValueError,
            "weight_decay must be a finite number >= 0, got -0.0001",
        ),
        ({"eps": -1.0}, ValueError, "eps must be a finite number >= 0, got -1.0"),
        (
            {"initial_accumulator_value": -0.5},
            ValueError,
            "initial_accumulator_value must be a finite number >= 0, got -0.5",
        ),
        ({"initial_accumulator_value": 0.0}, ValueError, "must be > 0 in mode='global', got 0.0"),
        (
            {"mode": "layerwise"},
            ValueError,
            "mode must be one of 'global', 'rowwise'; got 'layerwise'",
        ),
        ({"maximize": "yes"}, TypeError, "maximize must be a bool, got 'yes'"),
        (
            {"mode": "rowwise", "initial_accumulator_value": 0.0, "eps": 0.0},
            ValueError,
            "initial_accumulator_value = 0 with eps = 0 divides 0 by 0",
        ),
    ],
)
def test_bad_arguments_raise_an_error_with_the_value(
    kwargs: dict, error: type[Exception], fragment: str
) -> None:
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(error, match=re.escape(fragment)):
        AdaGradNorm([w], **kwargs)


def test_zero_initial_value_allowed_rowwise_and_explained_globally() -> None:
    w = torch.zeros(2, requires_grad=True)
    AdaGradNorm([w], mode="rowwise", initial_accumulator_value=0.0)
    with pytest.raises(ValueError, match=r"v_0 > 0.*0/0"):
        AdaGradNorm([w], initial_accumulator_value=0)


def test_group_overrides_are_checked() -> None:
    w, b = torch.zeros(2, requires_grad=True), torch.zeros(1, requires_grad=True)
    with pytest.raises(ValueError, match=re.escape("lr must be a positive finite number, got -1")):
        AdaGradNorm([{"params": [w]}, {"params": [b], "lr": -1}])
    opt = AdaGradNorm([w])
    with pytest.raises(ValueError, match="got 'diagonal'"):
        opt.add_param_group({"params": [b], "mode": "diagonal"})
    assert len(opt.param_groups) == 1


def test_complex_parameter_is_refused() -> None:
    z = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    with pytest.raises(ValueError, match=r"complex.*\(3,\)"):
        AdaGradNorm([z])
    opt = AdaGradNorm([torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match="complex"):
        opt.add_param_group({"params": [z]})
    assert len(opt.param_groups) == 1


def test_generators_and_named_parameters_are_accepted() -> None:
    model = nn.Linear(3, 2)
    named = AdaGradNorm(model.named_parameters(), mode="rowwise")
    assert named.param_groups[0]["param_names"] == ["weight", "bias"]
    opt = AdaGradNorm([model.weight])
    opt.add_param_group({"params": (p for p in [model.bias]), "lr": 0.5})
    assert [len(group["params"]) for group in opt.param_groups] == [1, 1]


def test_functional_core_checks_the_accumulator_layout() -> None:
    p, g = [torch.zeros(2, 2)], [torch.ones(2, 2)]
    with pytest.raises(ValueError, match="0-D accumulator"):
        adagrad_norm_step(p, g, [torch.zeros(())], lr=0.1, mode="global")
    with pytest.raises(ValueError, match="one accumulator per param"):
        adagrad_norm_step(p, g, torch.zeros(()), lr=0.1, mode="rowwise")
    with pytest.raises(ValueError, match=r"shape \(3,\).*expected \(2,\)"):
        adagrad_norm_step(p, g, [torch.zeros(3)], lr=0.1, mode="rowwise")
    with pytest.raises(ValueError, match="got 'other'"):
        adagrad_norm_step(p, g, torch.zeros(()), lr=0.1, mode="other")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Sanity: it minimises a convex loss.


@pytest.mark.parametrize("mode", NORM_MODES)
def test_decreases_a_logistic_regression_loss(mode: str) -> None:
    g = torch.Generator().manual_seed(4)
    X = torch.randn(64, 4, generator=g)
    y = (X @ torch.tensor([1.0, -2.0, 0.5, 3.0]) > 0).float()
    model = nn.Linear(4, 1)
    opt = AdaGradNorm(model.parameters(), lr=0.5, mode=mode)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(X).squeeze(1), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(losses))


def test_functional_core_accepts_leaf_parameters_and_matches_the_formula() -> None:
    p = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    v = torch.tensor(11.0, dtype=torch.float64)
    adagrad_norm_step([p], [torch.tensor([3.0, 4.0], dtype=torch.float64)], v, lr=1.0, eps=0.0)
    assert v.item() == 36.0  # 11 + 3² + 4²
    assert torch.equal(p.detach(), torch.tensor([2.5, 10 / 3], dtype=torch.float64))
