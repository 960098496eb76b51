"""Same seed, same numbers: the CPU scan's parameter gradients are summed in a fixed order."""
from __future__ import annotations

import torch

from avsearch.ops.scan import selective_scan


def test_scan_gradients_are_bitwise_reproducible():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # several workers and blocks, so summation order matters
    try:
        g = torch.Generator().manual_seed(0)
        b, d, length, n = 48, 64, 9, 4
        args = [torch.randn(b, d, length, generator=g), torch.randn(b, d, length, generator=g),
                -torch.rand(d, n, generator=g), torch.randn(b, n, length, generator=g),
                torch.randn(b, n, length, generator=g), torch.randn(d, generator=g), None,
                torch.randn(d, generator=g)]
        for a in args:
            if a is not None:
                a.requires_grad_()
        grads = []
        for _ in range(4):
            y = selective_scan(*args, delta_softplus=True)
            grads.append(torch.autograd.grad(y.square().sum(), [a for a in args if a is not None]))
        for other in grads[1:]:
            assert all(torch.equal(x, y) for x, y in zip(grads[0], other))
    finally:
        torch.set_num_threads(threads)
