"""The real training images as methods sample them: class-balanced batches, normalised per batch.

The images stay ``uint8`` on the device (a quarter of a float32 copy: 47 MB for MNIST, 4.9 GB -> 1.2 GB
for Tiny-ImageNet) and each sampled batch is normalised on its way out, so the memory cost of a run
does not scale with a float copy of the data set. Methods that need every image at once (kernel
methods, coreset selection) read :attr:`RealData.images`, which materialises the float copy once.
"""
from __future__ import annotations

import torch

from .base import ImageDataset


class RealData:
    """A data set's training split on ``device``, sorted by class, for vectorised per-class sampling.

    Examples
    --------
    >>> from distillset.data import load_dataset
    >>> real = RealData(load_dataset("digits"), torch.device("cpu"))
    >>> x, y = real.sample(4, torch.Generator().manual_seed(0))
    >>> tuple(x.shape), x.dtype, y[:5].tolist()
    ((40, 1, 8, 8), torch.float32, [0, 0, 0, 0, 1])
    """

    def __init__(self, data: ImageDataset, device: torch.device):
        labels = data.train.labels.to(device)
        order = torch.argsort(labels, stable=True)
        self.raw = data.train.images.to(device)[order]  # (N, C, H, W) uint8, class-sorted
        self.labels = labels[order]
        self.num_classes = data.num_classes
        self.normalize = data.normalize
        self.counts = torch.bincount(self.labels, minlength=self.num_classes)  # (K,)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts  # (K,) first index of each class
        self.min_count = int(self.counts.min())
        self._images: torch.Tensor | None = None

    @property
    def images(self) -> torch.Tensor:
        """All images, normalised float32 (N, C, H, W): made on first use, kept afterwards."""
        if self._images is None:
            self._images = self.normalize(self.raw)
        return self._images

    @images.setter
    def images(self, value: torch.Tensor) -> None:  # a method's own transform of every image (e.g. ZCA)
        self._images = value

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """Normalised images at ``idx``, made from the uint8 copy unless the float copy exists."""
        return self._images[idx] if self._images is not None else self.normalize(self.raw[idx])

    def sample_indices(self, n_per_class: int, generator: torch.Generator) -> torch.Tensor:
        """(K * n) indices, n distinct random images of each class, class-major. Needs n <= min_count."""
        assert n_per_class <= self.min_count, (n_per_class, self.min_count)
        perm = torch.randperm(self.labels.shape[0], generator=generator, device=generator.device).to(self.labels.device)
        perm = perm[torch.sort(self.labels[perm], stable=True).indices]  # class-sorted, random order within a class
        pick = self.offsets[:, None] + torch.arange(n_per_class, device=self.labels.device)  # (K, n)
        return perm[pick.flatten()]

    def sample(self, n_per_class: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A class-balanced batch: images (K * n, C, H, W) and labels (K * n,), class-major."""
        idx = self.sample_indices(min(n_per_class, self.min_count), generator)
        return self.take(idx), self.labels[idx]
