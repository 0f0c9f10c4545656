"""Micro-batches as a pure function of (seed, index): micro-batch m is batch m % B of epoch m // B, and
epoch e's order is the permutation drawn from numpy's Generator seeded with (seed, e). No generator state
is carried along, so a resumed run (or another rank) gets the same micro-batches from the index alone."""
from __future__ import annotations

import numpy as np

__all__ = ["MicroBatches"]


class MicroBatches:
    """images (N, ...) uint8 in 0..255 or float; labels (N,). `get(m) -> (x, labels)` as arrays: x scaled to
    [0, 1] (uint8), standardised by `normalize=(mean, std)` if given, in `dtype`; the last partial batch of an
    epoch is dropped."""

    def __init__(self, images, labels, micro_batch, seed=0, shuffle=True, normalize=None, dtype="float32",
                 limit=None):
        images, labels = np.asarray(images), np.asarray(labels).astype(np.int64)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        if images.ndim == 3:                       # (N, H, W) -> (N, 1, H, W)
            images = images[:, None]
        self.images, self.labels = images, labels
        self.micro_batch, self.seed, self.shuffle = int(micro_batch), int(seed), bool(shuffle)
        self.normalize, self.dtype = normalize, np.dtype(dtype)
        self.per_epoch = len(labels) // self.micro_batch
        if self.per_epoch < 1:
            raise ValueError(f"MicroBatches: {len(labels)} samples give no full micro-batch of {micro_batch}")
        self._order_epoch, self._order = None, None

    def order(self, epoch):
        if self._order_epoch != epoch:
            n = len(self.labels)
            self._order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                           else np.arange(n))
            self._order_epoch = epoch
        return self._order

    def get(self, m):
        e, b = divmod(int(m), self.per_epoch)
        idx = self.order(e)[b * self.micro_batch:(b + 1) * self.micro_batch]
        return self.prepare(self.images[idx]), self.labels[idx]

    def prepare(self, x):
        """Raw images (e.g. a test set, (N, H, W) or (N, C, H, W)) -> inputs as the micro-batches have them."""
        if x.ndim == self.images.ndim - 1:
            x = x[:, None]
        x = x.astype(self.dtype) / self.dtype.type(255) if x.dtype == np.uint8 else x.astype(self.dtype)
        if self.normalize is not None:
            mean, std = self.normalize
            x = (x - self.dtype.type(mean)) / self.dtype.type(std)
        return x

    def __len__(self):
        return self.per_epoch
