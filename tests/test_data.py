from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_tune.data import DigitsDataModule


def _labels(dataset) -> np.ndarray:
    return dataset.tensors[1].numpy()


def test_shapes_and_split_sizes_cover_all_digits():
    dm = DigitsDataModule(image_size=32, batch_size=16)
    dm.setup("fit")
    sizes = dm.split_sizes()
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == round(0.15 * 1797) and sizes["val"] == round(0.15 * 1797)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    # the three channels are copies of the grey image
    assert torch.equal(images[:, 0], images[:, 2])
    # normalised with the training statistics
    train_images = dm.train_set.tensors[0]  # train_fraction=1: the statistics' own split
    assert abs(float(train_images.mean())) < 1e-4
    assert abs(float(train_images.std()) - 1.0) < 1e-3


def test_split_is_fixed_by_seed_disjoint_and_stratified():
    a, b, c = (DigitsDataModule(image_size=8, seed=s) for s in (0, 0, 1))
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.val_set.tensors[0], b.val_set.tensors[0])
    assert not torch.equal(a.val_set.tensors[0], c.val_set.tensors[0])
    flat = [ds.tensors[0].flatten(1) for ds in (a.train_set, a.val_set, a.test_set)]
    train_rows = {tuple(r.tolist()) for r in flat[0]}
    # digits has a few exact duplicate images; the split itself must not share rows by index
    assert len(flat[0]) + len(flat[1]) + len(flat[2]) == 1797
    assert sum(tuple(r.tolist()) in train_rows for r in flat[2]) < 5
    for ds in (a.train_set, a.val_set, a.test_set):
        counts = np.bincount(_labels(ds), minlength=10)
        assert counts.min() > 0
        assert counts.max() - counts.min() <= max(3, 0.1 * counts.mean())


def test_class_subset_is_remapped_in_the_given_order():
    dm = DigitsDataModule(image_size=8, classes=[5, 6, 7, 8, 9], channels=1)
    dm.setup()
    assert dm.num_classes == 5 and dm.class_names == ["5", "6", "7", "8", "9"]
    assert set(_labels(dm.train_set)) == {0, 1, 2, 3, 4}
    assert dm.train_set.tensors[0].shape[1:] == (1, 8, 8)
    total = sum(dm.split_sizes().values())
    assert 880 < total < 910  # about half of the 1,797 digits


def test_train_fraction_keeps_a_stratified_subset_and_leaves_val_alone():
    full = DigitsDataModule(image_size=8)
    small = DigitsDataModule(image_size=8, train_fraction=0.1)
    full.setup()
    small.setup()
    assert small.split_sizes()["train"] == round(0.1 * full.split_sizes()["train"])
    assert set(_labels(small.train_set)) == set(range(10))
    assert torch.equal(full.val_set.tensors[0], small.val_set.tensors[0])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"classes": [1, 12]}, ValueError, r"unknown classes \[12\]"),
        ({"classes": [3]}, ValueError, "at least 2 digits"),
        ({"classes": "0123"}, TypeError, "iterable of digits"),
        (
            {"train_fraction": 0.0},
            ValueError,
            r"`train_fraction` must be a number > 0 and <= 1, but got train_fraction=0.0",
        ),
        ({"val_fraction": 0.6, "test_fraction": 0.4}, ValueError, "training split is not empty"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"image_size": 4}, ValueError, "image_size"),
        ({"channels": 2}, ValueError, "channels"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        DigitsDataModule(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train_fraction": 0.001}, "train_fraction=0.001` keeps 1 of"),
        ({"test_fraction": 0.002}, "`test_fraction` leaves 4 images for 10 classes"),
    ],
)
def test_a_split_that_leaves_classes_empty_fails(kwargs, match):
    dm = DigitsDataModule(image_size=8, **kwargs)
    with pytest.raises(ValueError, match=match):
        dm.setup()


def test_the_per_process_cache_of_resized_digits_is_never_modified():
    from lightning_tune.data import _resized_digits

    images, targets = _resized_digits(12)
    before = images.clone()
    for classes in ([0, 1], [7, 8, 9]):
        dm = DigitsDataModule(image_size=12, classes=classes, channels=1)
        dm.setup()
        dm.train_set.tensors[0].mul_(0)  # a user changing their tensors in place
    assert torch.equal(_resized_digits(12)[0], before)
    assert images.shape == (1797, 1, 12, 12) and float(images.max()) <= 1.0
    assert targets.shape == (1797,) and set(targets.tolist()) == set(range(10))


def test_loaders_yield_the_same_batches_as_a_plain_dataloader():
    from torch.utils.data import DataLoader

    dm = DigitsDataModule(image_size=8, batch_size=50)
    dm.setup()
    ours = list(dm.dataloader("val"))
    plain = list(DataLoader(dm.val_set, batch_size=50, shuffle=False))
    assert len(ours) == len(plain) == len(dm.dataloader("val"))
    for (x, y), (px, py) in zip(ours, plain):
        assert torch.equal(x, px) and torch.equal(y, py)
    # the training order: the indices of EpochShuffledBatches, batch by batch
    loader = dm.train_dataloader()
    order = loader.sampler.order(0)
    for i, (x, y) in enumerate(loader):
        batch = order[i * 50 : (i + 1) * 50]
        assert torch.equal(x, dm.train_set.tensors[0][batch])
        assert torch.equal(y, dm.train_set.tensors[1][batch])
    x, _ = next(iter(dm.dataloader("test", batch_size=3)))
    assert x.shape[0] == 3


def test_training_order_is_a_function_of_the_seed_and_the_epoch():
    torch.manual_seed(3)
    dm = DigitsDataModule(image_size=8, batch_size=64)
    loader = dm.train_dataloader()
    first, second = (torch.cat([y for _, y in loader]) for _ in range(2))
    assert not torch.equal(first, second)  # a new pass is a new epoch, a new order
    assert torch.equal(first.sort().values, dm.train_set.tensors[1].sort().values)
    loader.sampler.set_epoch(0)
    assert torch.equal(torch.cat([y for _, y in loader]), first)
    torch.manual_seed(3)
    again = DigitsDataModule(image_size=8, batch_size=64)
    assert again.shuffle_seed() == dm.shuffle_seed()
    restored = DigitsDataModule(image_size=8, batch_size=64)
    restored.load_state_dict(dm.state_dict())
    assert torch.equal(torch.cat([y for _, y in restored.train_dataloader()]), first)


def test_the_training_loader_resumes_mid_epoch():
    torch.manual_seed(0)
    dm = DigitsDataModule(image_size=8, batch_size=100)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(2)
    full = [y for _, y in loader]
    loader.sampler.set_epoch(2)
    iterator = iter(loader)
    for _ in range(4):
        next(iterator)
    state = loader.state_dict()
    assert state == {"epoch": 2, "taken": 4}
    fresh = DigitsDataModule(image_size=8, batch_size=100)
    fresh.load_state_dict(dm.state_dict())
    resumed = fresh.train_dataloader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)  # what Lightning calls before the resumed epoch
    rest = [y for _, y in resumed]
    assert len(rest) == len(full) - 4
    assert all(torch.equal(a, b) for a, b in zip(rest, full[4:]))
    resumed.load_state_dict({"epoch": 2, "taken": len(full)})  # saved at the last batch
    resumed.sampler.set_epoch(3)
    assert len(list(resumed)) == len(full)


def test_dataloader_rejects_unknown_split_and_bad_batch_size():
    dm = DigitsDataModule(image_size=8)
    with pytest.raises(ValueError, match=r"`split` must be one of .*split='validation'"):
        dm.dataloader("validation")
    with pytest.raises(ValueError, match=r"`batch_size` must be an int >= 1, but got batch_size=0"):
        dm.dataloader("train", batch_size=0)
