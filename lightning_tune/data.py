"""Real image data that ships offline: scikit-learn's handwritten digits as a DataModule."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Sampler,
    SequentialSampler,
    TensorDataset,
)

from lightning_tune._lightning import LightningDataModule
from lightning_tune._validation import check_int, check_number

__all__ = ["DigitsDataModule"]

_ALL_DIGITS = tuple(range(10))


@functools.lru_cache(maxsize=8)
def _resized_digits(image_size: int) -> tuple[torch.Tensor, np.ndarray]:
    """All 1,797 digits as (N, 1, size, size) floats in [0, 1], and their labels.

    Cached per process: a sweep builds a DataModule for every trial, and reading and resizing
    the digits each time was most of a small trial's time outside the training steps. The
    cached tensor is never modified (``setup`` indexes and normalises into new tensors).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x, digits.target.copy()


class EpochShuffledBatches(Sampler[list[int]]):
    """Shuffled batches of indices whose order is a pure function of ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch (a complete pass also moves on to the
    next epoch by itself). :meth:`state_dict` records the epoch and the batches handed out so
    far, so a run resumed from a checkpoint written mid-epoch continues with the very batch
    the interrupted run would have taken next.

    Example:
        >>> batches = EpochShuffledBatches(5, batch_size=2, seed=0)
        >>> first = list(batches)
        >>> sorted(i for b in first for i in b), len(first)
        ([0, 1, 2, 3, 4], 3)
        >>> batches.set_epoch(0)
        >>> list(batches) == first
        True
    """

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.epoch = 0
        self.taken = 0
        self._pass_epoch = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order the next pass yields."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)

    def order(self, epoch: int) -> list[int]:
        """The shuffled indices of ``epoch``."""
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        self._pass_epoch = self.epoch
        order = self.order(self.epoch)
        resume, self._resume = self._resume, None
        skip = resume[1] if resume is not None and resume[0] == self.epoch else 0
        self.taken = skip
        for start in range(skip * self.batch_size, self.size, self.batch_size):
            self.taken += 1
            yield order[start : start + self.batch_size]
        self.epoch += 1  # a complete pass: the next one shuffles anew (unless set_epoch)

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "taken"}``: where the current pass stands."""
        return {"epoch": self._pass_epoch, "taken": self.taken}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Continue the pass of ``state_dict["epoch"]`` after ``taken`` batches."""
        self._resume = (int(state_dict["epoch"]), int(state_dict["taken"]))
        self.epoch = self._resume[0]


class _ResumableLoader(DataLoader):
    """A ``DataLoader`` that Lightning saves and restores mid-epoch (its ``state_dict``)."""

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()  # type: ignore[union-attr]

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.sampler.load_state_dict(state_dict)  # type: ignore[union-attr]


class DigitsDataModule(LightningDataModule):
    """The 1,797 8x8 handwritten digits bundled with scikit-learn, as images for timm models.

    The images are resized to ``image_size`` (bilinear), repeated to ``channels`` channels and
    normalised with the mean and standard deviation of the (whole) training split. The train/val/test
    split is stratified and fixed by ``seed``, so two modules with the same arguments see exactly
    the same images. Nothing is downloaded. The training order is resumable: the DataModule's
    ``state_dict`` holds its seed and the training loader's ``state_dict`` the position in the
    epoch, so resuming from any checkpoint continues with exactly the batches of the run that
    never stopped.

    Args:
        image_size: side of the square images fed to the model (the raw digits are 8x8).
        batch_size: batch size of every loader.
        classes: optional subset of the digits 0-9 (e.g. ``[0, 1, 2, 3, 4]``); labels are
            remapped to ``0..len(classes)-1`` in the order given.
        train_fraction: fraction of the training split to keep (stratified, seeded): a cheap
            fidelity knob for sweeps and a low-label regime for fine-tuning.
        val_fraction: fraction of all images used for validation.
        test_fraction: fraction of all images used for testing.
        seed: seed of the split and of the training subset.
        channels: 1 or 3 image channels.
        num_workers: ``DataLoader`` workers (the whole set is a few MB in memory; 0 is fastest).

    Example:
        >>> dm = DigitsDataModule(image_size=16, classes=[0, 1, 2], batch_size=8)
        >>> dm.setup("fit")
        >>> images, labels = next(iter(dm.train_dataloader()))
        >>> tuple(images.shape), dm.num_classes, set(labels.tolist()) <= {0, 1, 2}
        ((8, 3, 16, 16), 3, True)
    """

    def __init__(
        self,
        image_size: int = 32,
        batch_size: int = 64,
        classes: Iterable[int] | None = None,
        train_fraction: float = 1.0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        channels: int = 3,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        check_int("image_size", image_size, minimum=8)  # the digits are 8x8
        check_int("batch_size", batch_size, minimum=1, type_error=ValueError)
        if channels not in (1, 3):
            raise ValueError(f"`channels` must be 1 or 3, but got {channels=!r}")
        if num_workers < 0:
            raise ValueError(f"`num_workers` must be >= 0, but got {num_workers=}")
        self.classes: tuple[int, ...] = self._check_classes(classes)
        self.train_fraction = check_number(
            "train_fraction", train_fraction, low=0, low_open=True, high=1
        )
        inside = {"low": 0, "low_open": True, "high": 1, "high_open": True}  # in (0, 1)
        self.val_fraction = check_number("val_fraction", val_fraction, **inside)
        self.test_fraction = check_number("test_fraction", test_fraction, **inside)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                "`val_fraction + test_fraction` must be < 1 so the training split is not empty, "
                f"but got {val_fraction=} + {test_fraction=}"
            )
        self.image_size = image_size
        self.batch_size = batch_size
        self.seed = int(seed)
        self.channels = channels
        self.num_workers = num_workers
        self.save_hyperparameters()
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None
        self.mean: float | None = None
        self.std: float | None = None
        self._shuffle_seed: int | None = None

    @staticmethod
    def _check_classes(classes: Iterable[int] | None) -> tuple[int, ...]:
        if classes is None:
            return _ALL_DIGITS
        if isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable):
            raise TypeError(f"`classes` must be an iterable of digits 0-9, but got {classes!r}")
        chosen = tuple(classes)
        unknown = [c for c in chosen if isinstance(c, bool) or c not in _ALL_DIGITS]
        if unknown:
            raise ValueError(
                f"`classes` may only contain the digits 0-9, but got unknown classes {unknown} "
                f"in classes={list(chosen)}"
            )
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"`classes` has duplicates: classes={list(chosen)}")
        if len(chosen) < 2:
            raise ValueError(f"`classes` needs at least 2 digits, but got classes={list(chosen)}")
        return tuple(int(c) for c in chosen)

    @property
    def num_classes(self) -> int:
        """Number of classes the labels range over."""
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        """Names of the classes, index = label."""
        return [str(c) for c in self.classes]

    def _split_indices(
        self, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        from sklearn.model_selection import train_test_split

        n = len(labels)
        idx = np.arange(n)
        n_test = round(self.test_fraction * n)
        n_val = round(self.val_fraction * n)
        n_classes = len(self.classes)
        for name, size in (("test_fraction", n_test), ("val_fraction", n_val)):
            if size < n_classes:
                raise ValueError(
                    f"`{name}` leaves {size} images for {n_classes} classes ({n} images in "
                    "total); every class needs at least one: raise the fraction"
                )
        rest, test = train_test_split(
            idx, test_size=n_test, stratify=labels, random_state=self.seed
        )
        train, val = train_test_split(
            rest, test_size=n_val, stratify=labels[rest], random_state=self.seed + 1
        )
        full_train = train
        if self.train_fraction < 1.0:
            keep = round(self.train_fraction * len(train))
            if keep < n_classes:
                raise ValueError(
                    f"`train_fraction={self.train_fraction}` keeps {keep} of {len(train)} "
                    f"training images, fewer than the {n_classes} classes: raise it to at least "
                    f"{n_classes / len(train):.3f}"
                )
            train, _ = train_test_split(
                train, train_size=keep, stratify=labels[train], random_state=self.seed + 2
            )
        return np.sort(train), np.sort(val), np.sort(test), full_train

    def setup(self, stage: str | None = None) -> None:
        """Load, split and normalise once; later calls reuse the tensors."""
        if self.train_set is not None:
            return
        all_images, all_targets = _resized_digits(self.image_size)
        mask = np.isin(all_targets, self.classes)
        remap = {c: i for i, c in enumerate(self.classes)}
        labels = np.array([remap[int(t)] for t in all_targets[mask]], dtype=np.int64)
        train, val, test, full_train = self._split_indices(labels)
        images = all_images[torch.from_numpy(mask)]
        # Statistics of the whole training split, so `train_fraction` does not move val/test.
        self.mean = float(images[full_train].mean())
        self.std = float(images[full_train].std())
        images = (images - self.mean) / self.std
        if self.channels == 3:
            images = images.expand(-1, 3, -1, -1).contiguous()
        targets = torch.from_numpy(labels)
        self.train_set = TensorDataset(images[train], targets[train])
        self.val_set = TensorDataset(images[val], targets[val])
        self.test_set = TensorDataset(images[test], targets[test])

    def dataloader(self, split: str, batch_size: int | None = None) -> DataLoader:
        """A loader over one split, built for speed on in-memory tensors.

        Each step indexes the split's tensors once with the batch's indices (a
        ``BatchSampler`` as the sampler, no per-image ``__getitem__`` and no collation), which
        is 3-4x cheaper per batch than ``DataLoader(dataset, batch_size=...)``. The training split
        is shuffled anew every epoch, in an order that is a pure function of
        :meth:`shuffle_seed` (drawn from the global seed, ``seed_everything``) and the epoch;
        its loader is resumable (``state_dict``/``load_state_dict``, which Lightning saves in
        checkpoints), so a run resumed mid-epoch sees exactly the batches of the run that never
        stopped. Validation and test are not shuffled.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            batch_size: images per batch (default: the module's ``batch_size``).

        Example:
            >>> dm = DigitsDataModule(image_size=8, batch_size=100)
            >>> images, labels = next(iter(dm.dataloader("val", batch_size=7)))
            >>> tuple(images.shape), len(dm.dataloader("test"))
            ((7, 3, 8, 8), 3)
        """
        sets = {"train": "train_set", "val": "val_set", "test": "test_set"}
        if split not in sets:
            raise ValueError(f"`split` must be one of {list(sets)}, but got split={split!r}")
        if batch_size is None:
            batch_size = self.batch_size
        check_int("batch_size", batch_size, minimum=1, type_error=ValueError)
        self.setup()
        dataset = getattr(self, sets[split])
        settings: dict[str, Any] = {
            "batch_size": None,  # the sampler yields whole batches of indices
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
        }
        if split == "train":
            batches = EpochShuffledBatches(len(dataset), batch_size, self.shuffle_seed())
            return _ResumableLoader(dataset, sampler=batches, **settings)
        order = BatchSampler(SequentialSampler(dataset), batch_size, drop_last=False)
        return DataLoader(dataset, sampler=order, **settings)

    def shuffle_seed(self) -> int:
        """The seed of the training order: drawn once from torch's global RNG (so
        ``seed_everything`` decides it), then kept, and saved in checkpoints (:meth:`state_dict`).

        Example:
            >>> _ = torch.manual_seed(0)
            >>> dm = DigitsDataModule(image_size=8)
            >>> dm.shuffle_seed() == dm.shuffle_seed()
            True
        """
        if self._shuffle_seed is None:
            self._shuffle_seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        return self._shuffle_seed

    def state_dict(self) -> dict[str, Any]:
        """The training order's seed (the position in an epoch is saved by the loader)."""
        return {"shuffle_seed": self._shuffle_seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the training order of the checkpointed run."""
        seed = state_dict.get("shuffle_seed")
        self._shuffle_seed = None if seed is None else int(seed)

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train")

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test")

    def split_sizes(self) -> dict[str, int]:
        """Number of images in each split (after ``train_fraction``)."""
        self.setup()
        assert self.train_set is not None and self.val_set is not None and self.test_set is not None
        return {"train": len(self.train_set), "val": len(self.val_set), "test": len(self.test_set)}
