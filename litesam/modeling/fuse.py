"""Inference-time re-parameterisation: fold BatchNorm into the convolution before it.

A model marks a foldable unit by giving it a ``fused() -> nn.Module`` method; :func:`fuse_modules`
swaps every such unit for its fused replacement. The result computes the same function (up to float
rounding) with fewer ops, but no longer has the official state_dict keys: fuse after loading weights.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One conv equal to ``bn(conv(x))`` with ``bn`` in eval mode (running statistics).

    With s = gamma / sqrt(running_var + eps): weight' = weight * s (per output channel),
    bias' = (bias - running_mean) * s + beta, where a conv without bias counts as bias 0.
    """
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


def fuse_modules(model: nn.Module) -> nn.Module:
    """Replace, in place, every submodule that has a ``fused()`` method by what it returns; returns ``model``.

    Meant for eval mode only (the folded BatchNorm statistics are frozen).
    """
    for name, child in model.named_children():
        if callable(getattr(child, "fused", None)):
            setattr(model, name, child.fused())
        else:
            fuse_modules(child)
    return model


def _centered_kernel(conv: nn.Conv2d, size: int) -> torch.Tensor:
    """``conv.weight`` zero-padded symmetrically to ``size`` x ``size`` (same output with padding size//2)."""
    kh, kw = conv.kernel_size
    if kh != kw or kh % 2 == 0 or conv.padding != (kh // 2, kw // 2) or conv.dilation != (1, 1):
        raise ValueError(f"need an odd square undilated kernel with 'same' padding, got {conv}")
    pad = (size - kh) // 2
    return nn.functional.pad(conv.weight, (pad, pad, pad, pad))


@torch.no_grad()
def merge_parallel_convs(convs: list[nn.Conv2d], identity: bool = False) -> nn.Conv2d:
    """One conv equal to ``sum(conv(x) for conv in convs)``, plus ``x`` itself when ``identity`` (RepVGG).

    The convs must agree on channels, groups and stride and use odd square undilated kernels with
    'same' padding; smaller kernels are zero-padded to the largest, whose centre they share.
    Missing biases count as 0. ``identity`` needs as many output as input channels.
    """
    first = convs[0]
    for conv in convs[1:]:
        layout = (conv.in_channels, conv.out_channels, conv.groups, conv.stride)
        if layout != (first.in_channels, first.out_channels, first.groups, first.stride):
            raise ValueError(f"cannot merge {conv} into {first}")
    size = max(conv.kernel_size[0] for conv in convs)
    weight = sum(_centered_kernel(conv, size) for conv in convs)
    bias = sum(conv.bias if conv.bias is not None else torch.zeros_like(weight[:, 0, 0, 0]) for conv in convs)
    if identity:
        if first.in_channels != first.out_channels:
            raise ValueError("an identity branch needs in_channels == out_channels")
        per_group = first.in_channels // first.groups
        channels = torch.arange(first.out_channels)
        weight[channels, channels % per_group, size // 2, size // 2] += 1.0
    merged = nn.Conv2d(
        first.in_channels,
        first.out_channels,
        size,
        stride=first.stride,
        padding=size // 2,
        groups=first.groups,
        bias=True,
    ).to(device=weight.device, dtype=weight.dtype)
    merged.weight.copy_(weight)
    merged.bias.copy_(bias)
    return merged
