"""AdaptiveLoader: both paths, resizes never applied late, resume, empty rank batches."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import Dataset, TensorDataset

from _plans import run
from adabatch.data import AdaptiveLoader, ResizableBatchSampler, ResizeEvent, epoch_order
from adabatch.datasets import ArrayDataset


def data(n: int = 40) -> TensorDataset:
    # Row i holds i in both tensors: a batch reveals which indices it holds.
    return TensorDataset(torch.arange(n, dtype=torch.float32).repeat(3, 1).T, torch.arange(n))


class PerSample(Dataset):
    """No gather method: only the DataLoader path applies."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return {"x": torch.full((2,), float(i)), "y": i}


def consume(loader, plan: dict[int, int], epochs: int = 1, step0: int = 0):
    out, step = [], step0
    for _ in range(epochs):
        epoch = []
        for _, y in loader:
            epoch.append(y.tolist())
            step += 1
            if step in plan:
                loader.set_batch_size(plan[step])
        out.append(epoch)
    return out


PATHS = [
    dict(),  # tensor fast path
    dict(fast_path=False),  # DataLoader, main process
    dict(fast_path=False, num_workers=2),  # workers prefetching, persistent
    dict(fast_path=False, num_workers=2, persistent_workers=False, prefetch_factor=3),
]
PATH_IDS = ["fast", "dataloader", "workers", "workers-nonpersistent"]


@pytest.mark.parametrize("opts", PATHS, ids=PATH_IDS)
def test_resize_applies_to_the_next_batch_on_every_path(opts):
    loader = AdaptiveLoader(data(40), 4, seed=5, **opts)
    assert loader.fast_path == (opts == {})
    plan = {2: 7, 4: 3, 9: 11}
    got = consume(loader, plan, epochs=2)
    # The plain sampler with the same plan is the reference: no batch of the old size
    # arrives after a resize, whatever the workers had prefetched.
    assert got == run(ResizableBatchSampler(40, 4, seed=5), plan, epochs=2)
    for e, epoch in enumerate(got):
        assert [i for b in epoch for i in b] == epoch_order(40, 5, e).tolist()
    assert loader.resizes[0] == ResizeEvent(0, 8, 4, 7, 7)
    assert [(r.old_size, r.new_size) for r in loader.resizes] == [(4, 7), (7, 3), (3, 11)]


def test_resize_at_epoch_waits_for_the_next_epoch():
    loader = AdaptiveLoader(data(20), 4, resize_at="epoch", fast_path=False, num_workers=1)
    sizes = []
    for k, (_, y) in enumerate(loader):
        sizes.append(len(y))
        if k == 0:
            loader.set_batch_size(10)
            assert loader.batch_size == 10  # requested
    assert sizes == [4] * 5
    assert [len(y) for _, y in loader] == [10, 10]


def drive(loader, plan: dict[int, int], total: int, step: int = 0):
    """The next ``total`` batches, across epochs; ``plan[k]`` is set after k batches in all."""
    out = []
    while len(out) < total:
        for _, y in loader:
            out.append(y.tolist())
            step += 1
            if step in plan:
                loader.set_batch_size(plan[step])
            if len(out) == total:
                break
    return out


@pytest.mark.parametrize("opts", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("stop", [0, 3, 7, 12])
def test_state_dict_resumes_after_the_last_delivered_batch(opts, stop):
    """Checkpoint after ``stop`` batches (7: exactly at the end of epoch 0), resize after it."""
    plan = {1: 6, 5: 2, 8: 9, 14: 4}

    def make():
        return AdaptiveLoader(data(30), 3, seed=2, **opts)

    reference = drive(make(), plan, 20)
    original = make()
    head = drive(original, plan, stop)
    state = original.state_dict()  # workers have read ahead; this is the delivered position
    restored = make()
    restored.set_batch_size(17)  # overwritten by the state
    restored.load_state_dict(state)
    rest = drive(restored, plan, 20 - stop, step=stop)
    assert head + rest == reference
    assert drive(original, plan, 20 - stop, step=stop) == rest


@settings(max_examples=30, deadline=None)
@given(
    plan=st.dictionaries(st.integers(1, 25), st.integers(1, 45), max_size=5),
    stop=st.integers(0, 25),
)
def test_resume_equality_fast_path(plan, stop):
    def make():
        return AdaptiveLoader(data(37), 5, seed=9)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sizes above 37 are clamped
        reference = drive(make(), plan, 30)
        original = make()
        head = drive(original, plan, stop)
        restored = make()
        restored.load_state_dict(original.state_dict())
        assert head + drive(restored, plan, 30 - stop, step=stop) == reference


@pytest.mark.parametrize("opts", [dict(), dict(fast_path=False)], ids=["fast", "dataloader"])
def test_ranks_with_an_empty_share_get_empty_batches_of_the_right_shape(opts):
    n, world = 10, 4  # the last global batch of 2 leaves ranks 2 and 3 empty
    per_rank = []
    for r in range(world):
        loader = AdaptiveLoader(data(n), 4, seed=0, rank=r, world_size=world, **opts)
        batches = list(loader)
        per_rank.append(batches)
        assert loader.last_global_batch_size == 2
        assert loader.loss_weight == pytest.approx(loader.last_batch_size * world / 2)
    assert {len(b) for b in per_rank} == {3}
    for r in (2, 3):
        x, y = per_rank[r][-1]
        assert x.shape == (0, 3) and y.shape == (0,) and y.dtype == torch.int64
    seen = sorted(i for batches in per_rank for _, y in batches for i in y.tolist())
    assert seen == list(range(n))


def test_loss_weight_makes_the_average_of_rank_means_the_global_mean():
    """n_r·W/L times rank r's mean, averaged over ranks, is the mean of the global batch."""
    world, n = 3, 11
    x = torch.randn(n)
    loaders = [AdaptiveLoader(TensorDataset(x), 11, rank=r, world_size=world) for r in range(3)]
    terms = []
    for loader in loaders:
        (xb,) = next(iter(loader))
        terms.append(loader.loss_weight * xb.mean())
    assert loaders[0].last_batch_size == 4 and loaders[2].last_batch_size == 3
    torch.testing.assert_close(sum(terms) / world, x.mean())


def test_dataloader_path_for_dict_samples_and_custom_collate():
    loader = AdaptiveLoader(PerSample(9), 4, shuffle=False)
    assert not loader.fast_path
    batches = list(loader)
    assert [b["y"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    assert batches[0]["x"].shape == (4, 2)
    custom = AdaptiveLoader(data(6), 4, shuffle=False, collate_fn=lambda s: len(s))
    assert not custom.fast_path and list(custom) == [4, 2]


def test_gather_protocol_device_and_batch_transform():
    ds = ArrayDataset(torch.arange(12.0).reshape(6, 2), torch.arange(6), num_classes=6)
    seen = []
    loader = AdaptiveLoader(
        ds, 4, shuffle=False, device="cpu", batch_transform=lambda b: (b[0] * 10, b[1])
    )
    for x, y in loader:
        seen.append((x.tolist(), y.tolist()))
    assert seen[0] == ([[0.0, 10.0], [20.0, 30.0], [40.0, 50.0], [60.0, 70.0]], [0, 1, 2, 3])
    assert loader.last_batch_size == 2


def test_resizes_are_logged_with_the_requested_and_the_real_size(caplog):
    loader = AdaptiveLoader(data(20), 4, shuffle=False)
    with caplog.at_level(logging.INFO, logger="adabatch.data"):
        for k, _ in enumerate(loader):
            if k == 0:
                with pytest.warns(UserWarning, match="clamped to 20"):
                    loader.set_batch_size(50)  # only 16 are left
    assert loader.resizes == [ResizeEvent(0, 4, 4, 20, 16)]
    assert loader.last_global_batch_size == 16
    assert "batch size 4 -> 20 from epoch 0, position 4 (this batch: 16 samples)" in caplog.text


def test_set_epoch_and_len():
    loader = AdaptiveLoader(data(10), 3, seed=1)
    assert len(loader) == 4
    first = next(iter(loader))[1].tolist()
    loader.set_epoch(0)  # in progress: resumes
    rest = [y.tolist() for _, y in loader]
    assert [i for b in [first, *rest] for i in b] == epoch_order(10, 1, 0).tolist()
    loader.set_epoch(3)
    assert [i for _, y in loader for i in y.tolist()] == epoch_order(10, 1, 3).tolist()
    assert loader.epoch == 4
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        loader.set_epoch(-1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="fast_path=True is not possible: PerSample has no gather"):
        AdaptiveLoader(PerSample(4), 2, fast_path=True)
    with pytest.raises(ValueError, match="num_workers=0"):
        AdaptiveLoader(data(4), 2, fast_path=True, num_workers=1)
    with pytest.raises(ValueError, match="resize_at must be one of"):
        AdaptiveLoader(data(4), 2, resize_at="now")
    with pytest.raises(ValueError, match="data set is empty"):
        AdaptiveLoader(data(0), 2)
    with pytest.raises(TypeError, match="map-style data set with __len__"):
        AdaptiveLoader(iter(range(3)), 2)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        AdaptiveLoader(data(4), 2).set_batch_size(0)


@pytest.mark.parametrize("opts", PATHS[1:], ids=PATH_IDS[1:])
@pytest.mark.parametrize(
    ("n", "b0", "plan"),
    [
        (12, 2, {3: 8}),  # the rest (6) is shorter than the new size: the epoch ends
        (10, 4, {2: 2}),  # the dropped rest (2) fits the new size: it is served
        (23, 3, {1: 5, 3: 2, 6: 7, 9: 1}),
    ],
)
def test_drop_last_on_every_path_matches_the_fast_path(opts, n, b0, plan):
    fast = consume(AdaptiveLoader(data(n), b0, seed=1, drop_last=True), plan, epochs=3)
    other = consume(AdaptiveLoader(data(n), b0, seed=1, drop_last=True, **opts), plan, epochs=3)
    assert other == fast
    assert fast == run(ResizableBatchSampler(n, b0, seed=1, drop_last=True), plan, epochs=3)


@pytest.mark.parametrize("opts", PATHS, ids=PATH_IDS)
def test_set_epoch_inside_the_loop_ends_the_iteration_on_every_path(opts):
    loader = AdaptiveLoader(data(20), 4, seed=3, **opts)
    first = []
    for _, y in loader:
        first.append(y.tolist())
        loader.set_epoch(5)
    assert len(first) == 1  # the batch in hand, then the iteration ends
    assert loader.epoch == 5
    rest = [i for _, y in loader for i in y.tolist()]
    assert rest == epoch_order(20, 3, 5).tolist() and loader.epoch == 6


@pytest.mark.parametrize("opts", PATHS[:3], ids=PATH_IDS[:3])
def test_a_second_concurrent_iteration_makes_the_first_one_stale(opts):
    loader = AdaptiveLoader(data(20), 4, **opts)
    a = iter(loader)
    next(a)
    b = iter(loader)
    next(b)
    with pytest.raises(RuntimeError, match="another iteration of this AdaptiveLoader started"):
        next(a)


def test_empty_share_of_dict_samples_with_strings():
    class Named(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return {"x": torch.full((2,), float(i)), "name": f"s{i}", "w": torch.tensor(1.0)}

    # 5 samples, global batch 4, 4 ranks: the last batch (1 sample) leaves ranks 1-3 empty
    last = list(AdaptiveLoader(Named(), 4, shuffle=False, rank=3, world_size=4))[-1]
    assert last["x"].shape == (0, 2) and last["name"] == [] and last["w"].shape == (0,)


def test_len_follows_a_pending_resize():
    loader = AdaptiveLoader(data(20), 4, resize_at="epoch")
    loader.set_batch_size(10)
    assert len(loader) == 2
    assert [len(y) for _, y in loader] == [10, 10]  # at an epoch boundary: applies now


def test_load_state_dict_checks_the_version():
    loader = AdaptiveLoader(data(8), 2)
    with pytest.raises(ValueError, match="sampler state version 99 is not supported"):
        loader.load_state_dict({**loader.state_dict(), "version": 99})


def test_too_small_a_data_set_for_the_world():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 8 is first clamped to 3
        with pytest.raises(ValueError, match="the data set has 3 samples, fewer than world_size"):
            ResizableBatchSampler(3, 8, world_size=4)
