"""Small RevNet-style models for tests and the benchmark: a non-invertible stem, RevBlocks, a head.

Each is a flat Sequential whose top-level entries are the natural stage pieces, so `split(model, J)` with J
equal to the number of entries puts one piece per stage (`boundaries` chooses otherwise)."""
from __future__ import annotations

from .. import nn

__all__ = ["tiny_mlp", "revnet_mnist"]


def tiny_mlp(in_features=16, width=8, classes=4, blocks=2, seed=0, dtype="float32"):
    """Flatten+Linear+Tanh stem, `blocks` RevBlocks on (N, width) with Linear-Tanh F and G, a Linear head:
    blocks + 2 top-level entries."""
    import numpy as np
    gen = np.random.default_rng(seed)
    half = width // 2

    def fg():
        return nn.Sequential(nn.Linear(width - half, half, generator=gen, dtype=dtype), nn.Tanh())

    layers = [nn.Sequential(nn.Flatten(), nn.Linear(in_features, width, generator=gen, dtype=dtype), nn.Tanh())]
    for _ in range(blocks):
        layers.append(nn.RevBlock(fg(), fg()))
    layers.append(nn.Linear(width, classes, generator=gen, dtype=dtype))
    return nn.Sequential(*layers)


def revnet_mnist(width=8, blocks=2, seed=0, dtype="float32", in_channels=1, classes=10):
    """A RevNet for 28x28 images: stem conv3x3/2(in, width)-BN-ReLU (14x14), `blocks` RevBlocks with
    F, G = conv3x3(width/2, width/2)-BN-ReLU, and a head avgpool2-conv3x3(width, 2 width)-BN-ReLU-global
    average-Linear(2 width, classes). Top-level entries: stem, one per RevBlock, head."""
    import numpy as np
    gen = np.random.default_rng(seed)
    h = width // 2

    def fg():
        return nn.Sequential(nn.Conv2d(h, h, 3, padding=1, bias=False, generator=gen, dtype=dtype),
                             nn.BatchNorm2d(h, dtype=dtype), nn.ReLU())

    stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False, generator=gen,
                                   dtype=dtype),
                         nn.BatchNorm2d(width, dtype=dtype), nn.ReLU())
    head = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(width, 2 * width, 3, padding=1, bias=False, generator=gen,
                                                     dtype=dtype),
                         nn.BatchNorm2d(2 * width, dtype=dtype), nn.ReLU(), nn.AvgPool2d(7), nn.Flatten(),
                         nn.Linear(2 * width, classes, generator=gen, dtype=dtype))
    return nn.Sequential(stem, *[nn.RevBlock(fg(), fg()) for _ in range(blocks)], head)
