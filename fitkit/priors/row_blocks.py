"""Evaluate a network on fixed-size blocks of rows, so that a row's result does not depend on the batch.

A learned prior (VPoser, the conditional flow) is made of matrix products over
the batch. MKL picks the blocking of a product by its number of rows, so the
same row is rounded differently in a batch of 8 and in a batch of 16, and a
fit that should not depend on the other frames of its batch does, by a few
units in the last place per evaluation (which a solver's accept/reject
decisions can amplify). :func:`in_row_blocks` always hands the network blocks
of exactly :data:`ROW_BLOCK` rows: the rows are cut into consecutive blocks,
the last one filled up by repeating its last row, and the outputs of the
blocks are put back together with the filler rows dropped. Every product then
has the same shape whatever the batch size.

Inside a block, a row's place must not matter either. In float32 it does
not; in float64, MKL's product rounds rows whose memory does not start on a
16-byte boundary differently from those that do, so with an odd input width
(VPoser's 63 pose numbers, the flow's 39 context numbers and 99 hypernetwork
inputs) odd and even rows of a block differed in the last bits.
:func:`align_linear_inputs` therefore gives every linear layer with an odd
input width an extra zero input column (and a zero weight column), which
adds exact zeros to every sum. :func:`frozen_block_copy` is the network copy
both learned priors evaluate: frozen, cast, with aligned inputs.
``tests/test_batch_independence.py`` checks a row at every place of a block
(forward and backward) on this CPU build (AVX-512 MKL).

The arithmetic of each row is unchanged (the blocks are the same network on
fewer rows); gradients and forward-mode tangents flow through the cuts, and
the filler rows receive none. Only networks whose rows are independent may be
evaluated this way: eval mode (batch normalisation with running statistics,
no dropout), never training.
"""
from __future__ import annotations

import types
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fitkit.priors.files import frozen_copy

__all__ = ["ROW_BLOCK", "in_row_blocks", "align_linear_inputs", "frozen_block_copy"]

#: Rows per block. A multiple of the GEMM kernels' row tile; 32 keeps the cost of a lone
#: frame small (one block) while a large batch runs at the speed of 32-row products.
ROW_BLOCK = 32


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x`` (B, ...) with its last row repeated until it has ``rows`` rows."""
    missing = rows - x.shape[0]
    if missing == 0:
        return x
    return torch.cat([x, x[-1:].expand(missing, *x.shape[1:])], dim=0)


def in_row_blocks(fn: Callable, *inputs: torch.Tensor | None, block: int = ROW_BLOCK):
    """``fn(*inputs)`` computed on blocks of exactly ``block`` rows.

    Args:
        fn: maps tensors with the same number of rows (dim 0) to a tensor or a
            tuple of tensors whose dim 0 is that number of rows again; rows
            must not interact (a network in eval mode).
        inputs: (B, ...) tensors with the same B, or None (handed to ``fn``
            as None, e.g. no context). Each block is handed over contiguous.
        block: rows per block (>= 1).
    Returns:
        What ``fn`` returns for all B rows (a tensor or a tuple of tensors),
        each row computed inside a block of ``block`` rows.
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
    total = -(-n // block) * block
    padded = [None if x is None else _pad_rows(x, total) for x in inputs]
    parts = [fn(*(None if x is None else x[s:s + block].contiguous() for x in padded))
             for s in range(0, total, block)]
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts, dim=0)[:n]
    return tuple(torch.cat(list(outs), dim=0)[:n] for outs in zip(*parts))


def _even_width_linear(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, W, b)`` with one zero column appended to ``x`` and to ``W`` (even width)."""
    return F.linear(F.pad(x, (0, 1)), F.pad(self.weight, (0, 1)), self.bias)


def align_linear_inputs(module: nn.Module) -> nn.Module:
    """``module`` (changed in place, and returned) with every linear layer of odd input width
    computing ``[x, 0] @ [W, 0]^T + b`` instead of ``x @ W^T + b``: the same sums plus an exact
    zero, on rows that start on 16-byte boundaries (see the module docstring).

    Linear layers are ``torch.nn.Linear`` and ``zuko.nn.Linear`` without a stack (2-D
    weight; both compute ``F.linear(x, W, b)``). Use it on a frozen evaluation copy
    (:func:`frozen_block_copy`), not on a network being trained.
    """
    for layer in module.modules():
        weight = getattr(layer, "weight", None)
        linear = isinstance(layer, nn.Linear) or (type(layer).__name__ == "Linear"
                                                  and type(layer).__module__.startswith("zuko"))
        if linear and isinstance(weight, torch.Tensor) and weight.ndim == 2 and weight.shape[1] % 2 == 1:
            layer.forward = types.MethodType(_even_width_linear, layer)
    return module


def frozen_block_copy(cache: dict, module: nn.Module, device, dtype) -> nn.Module:
    """:func:`~fitkit.priors.files.frozen_copy` of ``module`` (eval mode, frozen, on ``device`` in
    ``dtype``, cached per (device, dtype) in ``cache``) with :func:`align_linear_inputs` applied:
    the network a learned prior hands to :func:`in_row_blocks`."""
    key = (str(device), dtype)
    if key not in cache:
        cache[key] = align_linear_inputs(frozen_copy({}, module, device, dtype))
    return cache[key]
