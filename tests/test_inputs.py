"""InputBank: batches from a memory map, the next one gathered in a background thread."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from curator.engine.inputs import InputBank, Normalizer


@pytest.fixture()
def bank(tmp_path) -> InputBank:
    images = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.uint8, (500, 1, 8, 8))
    images[:] = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    images.flush()
    inputs = np.load(tmp_path / "x.npy", mmap_mode="r")
    return InputBank(inputs, Normalizer.fit(inputs, "image"), torch.device("cpu"))


def test_prefetched_batches_equal_single_batches_in_order(bank):
    order = torch.randperm(500, generator=torch.Generator().manual_seed(1))
    indices = [order[s:s + 64] for s in range(0, 500, 64)]
    prefetched = list(bank.batches(iter(indices)))
    assert len(prefetched) == len(indices) == 8
    for index, x in zip(indices, prefetched):
        torch.testing.assert_close(x, bank.batch(index), rtol=0, atol=0)
    assert prefetched[-1].shape == (500 - 7 * 64, 1, 8, 8)


def test_the_next_batch_is_gathered_in_the_background_while_this_one_is_used(bank, monkeypatch):
    started = [threading.Event() for _ in range(10)]
    threads = []
    gather = bank._gather

    def spy(index):
        threads.append(threading.current_thread().name)
        started[int(index[0]) // 50].set()
        return gather(index)

    monkeypatch.setattr(bank, "_gather", spy)
    for i, _ in enumerate(bank.batches(torch.arange(s, s + 50) for s in range(0, 500, 50))):
        if i + 1 < 10:            # while the caller holds batch i, batch i + 1 is being gathered
            assert started[i + 1].wait(timeout=10), f"batch {i + 1} was not prefetched"
    assert len(threads) == 10 and all(name.startswith("curator-prefetch") for name in threads)


def test_a_failing_gather_raises_in_the_caller(bank):
    with pytest.raises(IndexError):
        list(bank.batches([torch.arange(10), torch.tensor([10_000])]))


def test_no_indices_give_no_batches(bank):
    assert list(bank.batches([])) == []


def test_one_input_bank_serves_the_training_and_every_scorer(noisy_digits_run, tmp_path):
    from conftest import score_context
    from curator.engine.inputs import release_banks, shared_bank

    root = Path(noisy_digits_run.manifest["dataset"]["path"])
    first, second = score_context(root, noisy_digits_run), score_context(root, noisy_digits_run)
    second = dataclasses.replace(second, inputs_array=first.inputs_array)
    assert first._bank is second._bank                        # one upload to the device, not one per scorer
    assert first._bank is shared_bank(first.inputs_array, first._bank.normalizer, first.device)
    release_banks()
    assert shared_bank(first.inputs_array, first._bank.normalizer, first.device) is not first._bank


def test_normaliser_constants_are_made_once_per_device():
    from curator.engine.inputs import _constants

    norm = Normalizer("image", (0.5,), (0.25,))
    assert _constants(norm, torch.device("cpu"))[0] is _constants(norm, torch.device("cpu"))[0]
    x = torch.full((2, 1, 2, 2), 255, dtype=torch.uint8)
    torch.testing.assert_close(norm(x), torch.full((2, 1, 2, 2), 2.0))
