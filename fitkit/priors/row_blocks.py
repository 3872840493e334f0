"""Evaluate a learned prior so that a row's result does not depend on the other rows of the batch.

A learned prior (VPoser, the conditional flow) is made of matrix products over
the batch. MKL picks the blocking of a product by its number of rows, so the
same row is rounded differently in a batch of 8 and in a batch of 16, and a
fit that should not depend on the other frames of its batch does, by a few
units in the last place per evaluation (which a solver's accept/reject
decisions can amplify). Two pieces remove that:

- :func:`block_linear_layers` makes every linear layer of a network multiply
  in blocks of exactly :data:`ROW_BLOCK` rows (the rows are cut into
  consecutive blocks, the last one filled up by repeating its last row, the
  filler outputs dropped). Every matrix product then has the same shape
  whatever the batch size.
- :func:`in_row_blocks` hands the network a batch padded the same way to a
  multiple of :data:`ROW_BLOCK` rows, so that the elementwise kernels between
  the products never see a batch whose size would put a row into their scalar
  remainder loop (which may round transcendental functions differently from
  the vectorized body).

Inside a block, a row's place must not matter either. In float32 it does
not; in float64, MKL's product rounds rows whose memory does not start on a
16-byte boundary differently from those that do, so with an odd input width
(VPoser's 63 pose numbers, the flow's 39 context numbers and 99 hypernetwork
inputs) odd and even rows of a block differed in the last bits. The blocked
layers therefore append one zero column to an odd-width input (and to the
weight), which adds exact zeros to every sum. ``tests/test_batch_independence.py``
checks a row at every place of a block (forward and backward) on this CPU
build (AVX-512 MKL).

The arithmetic of each row is unchanged (the same network, the products cut
into blocks); gradients and forward-mode tangents flow through the cuts, and
filler rows receive none. Only networks whose rows are independent may be
evaluated this way: eval mode (batch normalisation with running statistics,
no dropout), never training. :func:`frozen_block_copy` is the network copy
both learned priors evaluate: frozen, cast, with blocked linear layers.
"""
from __future__ import annotations

import types
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fitkit.priors.files import frozen_copy

__all__ = ["ROW_BLOCK", "in_row_blocks", "blocked_linear", "block_linear_layers", "frozen_block_copy"]

#: Rows per matrix-product block. A multiple of the GEMM kernels' row tile; 32 keeps the cost
#: of a lone frame small (one block) while a large batch runs at the speed of 32-row products.
ROW_BLOCK = 32


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x`` (B, ...) with its last row repeated until it has ``rows`` rows."""
    missing = rows - x.shape[0]
    if missing == 0:
        return x
    return torch.cat([x, x[-1:].expand(missing, *x.shape[1:])], dim=0)


def _padded_size(n: int, block: int) -> int:
    return -(-n // block) * block


def blocked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   block: int = ROW_BLOCK) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for (B, K) ``x``, multiplied in blocks of ``block`` rows.

    An odd K gets one zero column in ``x`` and in ``weight`` (rows then start
    on 16-byte boundaries; the sums gain an exact zero). Inputs that are not
    2-D are multiplied whole (with the zero column).

    Returns:
        (B, N) (or ``x.shape[:-1] + (N,)``).
    """
    if weight.shape[1] % 2 == 1:
        x, weight = F.pad(x, (0, 1)), F.pad(weight, (0, 1))
    if x.ndim != 2:
        return F.linear(x, weight, bias)
    n = x.shape[0]
    if n == 0:
        return F.linear(x, weight, bias)
    padded = _pad_rows(x, _padded_size(n, block))
    parts = [F.linear(padded[s:s + block].contiguous(), weight, bias) for s in range(0, padded.shape[0], block)]
    out = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
    return out[:n]


def _blocked_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return blocked_linear(x, self.weight, self.bias)


def block_linear_layers(module: nn.Module) -> nn.Module:
    """``module`` (changed in place, and returned) with every linear layer computing
    :func:`blocked_linear` (see the module docstring).

    Linear layers are ``torch.nn.Linear`` and ``zuko.nn.Linear`` without a stack (2-D
    weight; both compute ``F.linear(x, W, b)``). Use it on a frozen evaluation copy
    (:func:`frozen_block_copy`), not on a network being trained.
    """
    for layer in module.modules():
        weight = getattr(layer, "weight", None)
        linear = isinstance(layer, nn.Linear) or (type(layer).__name__ == "Linear"
                                                  and type(layer).__module__.startswith("zuko"))
        if linear and isinstance(weight, torch.Tensor) and weight.ndim == 2:
            layer.forward = types.MethodType(_blocked_forward, layer)
    return module


def frozen_block_copy(cache: dict, module: nn.Module, device, dtype) -> nn.Module:
    """:func:`~fitkit.priors.files.frozen_copy` of ``module`` (eval mode, frozen, on ``device`` in
    ``dtype``, cached per (device, dtype) in ``cache``) with :func:`block_linear_layers`
    applied: the network a learned prior hands to :func:`in_row_blocks`."""
    key = (str(device), dtype)
    if key not in cache:
        cache[key] = block_linear_layers(frozen_copy({}, module, device, dtype))
    return cache[key]


def in_row_blocks(fn: Callable, *inputs: torch.Tensor | None, block: int = ROW_BLOCK):
    """``fn(*inputs)`` on the rows padded to a multiple of ``block`` (the last row repeated),
    with the filler rows' outputs dropped.

    ``fn`` is a network evaluation whose linear layers are blocked
    (:func:`frozen_block_copy`), so that every row sits in products and
    elementwise kernels of the same shapes whatever the batch size.

    Args:
        fn: maps tensors with the same number of rows (dim 0) to a tensor or a
            tuple of tensors whose dim 0 is that number of rows again; rows
            must not interact (a network in eval mode).
        inputs: (B, ...) tensors with the same B, or None (handed to ``fn``
            as None, e.g. no context). They are handed over contiguous.
        block: pad to a multiple of this many rows (>= 1).
    Returns:
        What ``fn`` returns for the B rows (a tensor or a tuple of tensors).
    Raises:
        ValueError: inputs with different numbers of rows, no tensor input, or ``block < 1``.
    """
    if int(block) < 1:
        raise ValueError(f"in_row_blocks: block must be >= 1, got {block}")
    block = int(block)
    sizes = {x.shape[0] for x in inputs if x is not None}
    if len(sizes) != 1:
        raise ValueError(f"in_row_blocks: the inputs must have one number of rows, got "
                         f"{[None if x is None else tuple(x.shape) for x in inputs]}")
    n = sizes.pop()
    if n == 0:
        return fn(*inputs)
    total = _padded_size(n, block)
    out = fn(*(None if x is None else _pad_rows(x, total).contiguous() for x in inputs))
    if isinstance(out, torch.Tensor):
        return out[:n]
    return tuple(o[:n] for o in out)
