"""Inference-time re-parameterisation: fold BatchNorm into the convolution before it, and activations
and residual additions into the convolution (oneDNN post-ops, :class:`FusedConv`).

A model marks a foldable unit by giving it a ``fused() -> nn.Module`` method; :func:`fuse_modules`
swaps every such unit for its fused replacement. The result computes the same function (up to float
rounding) with fewer ops, but no longer has the official state_dict keys: fuse after loading weights.
"""

from __future__ import annotations

from collections.abc import Callable

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


# activations oneDNN applies inside a convolution: module type -> (attr, algorithm of the module)
_POINTWISE: dict[type[nn.Module], tuple[str, Callable[[nn.Module], str | None]]] = {
    nn.GELU: ("gelu", lambda m: "tanh" if m.approximate == "tanh" else "none"),
    nn.ReLU: ("relu", lambda m: None),
    nn.SiLU: ("swish", lambda m: None),
    nn.Hardswish: ("hardswish", lambda m: None),
}


_AFTER_ADD = frozenset({"relu"})  # activations oneDNN fuses after a fused addition


def fusable_activation(module: nn.Module | None) -> bool:
    """Whether :class:`FusedConv` can apply ``module`` inside its convolution."""
    return module is None or type(module) in _POINTWISE


class FusedConv(nn.Module):
    """``act(conv(x) + add)`` (``add`` and ``act`` optional) for inference, in one oneDNN convolution with
    post-ops on the CPU: the output is written once instead of re-read by the addition and the
    activation. Computed op by op where that does not apply (gradients, autocast, other devices or
    dtypes, tracing, ``onednn`` off); both agree to float rounding."""

    onednn: bool = True

    def __init__(self, conv: nn.Conv2d, act: nn.Module | None = None) -> None:
        super().__init__()
        if not fusable_activation(act) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"cannot fuse {conv} with {act}")
        self.conv = conv
        self.act = act

    def _fused(self, x: torch.Tensor) -> bool:
        return (
            self.onednn
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu")
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
            and torch.backends.mkldnn.is_available()
        )

    def forward(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        """BxCinxHxW (and ``add`` shaped as the output) -> BxCoutxH'xW'."""
        conv = self.conv
        if not self._fused(x):
            y = conv(x) if add is None else conv(x) + add
            return y if self.act is None else self.act(y)
        attr, algorithm = ("none", None) if self.act is None else self._pointwise()
        geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        if add is None:
            return torch.ops.mkldnn._convolution_pointwise(
                x, conv.weight, conv.bias, *geometry, attr, [], algorithm
            )
        after = attr in _AFTER_ADD  # oneDNN applies only these after the addition; others follow it
        y = torch.ops.mkldnn._convolution_pointwise.binary(
            x, add, conv.weight, conv.bias, *geometry, "add", None, attr if after else None, [], algorithm
        )
        return y if after or self.act is None else self.act(y)

    def _pointwise(self) -> tuple[str, str | None]:
        attr, algorithm = _POINTWISE[type(self.act)]
        return attr, algorithm(self.act)


class ResidualChain(nn.Module):
    """A chain of :class:`FusedConv` whose last one adds the chain's input: ``act(conv(...) + x)`` (the
    residual ``x + chain(x)`` where the last has no activation), the addition fused into it."""

    def __init__(self, convs: list[FusedConv]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for conv in self.convs[:-1]:
            y = conv(y)
        return self.convs[-1](y, add=x)


def fuse_residual_chain(branch: nn.Module) -> nn.Module | None:
    """For ``x + branch(x)``: the :class:`ResidualChain` computing it when ``branch`` (BatchNorms folded)
    is an ``nn.Sequential`` of convolutions (plain or :class:`FusedConv`), each optionally followed by a
    fusable activation, the last without one; else None."""
    if not isinstance(branch, nn.Sequential):
        return None
    convs: list[FusedConv] = []
    for layer in branch:
        if isinstance(layer, FusedConv):
            convs.append(layer)
        elif isinstance(layer, nn.Conv2d):
            convs.append(FusedConv(layer))
        elif convs and convs[-1].act is None and fusable_activation(layer):
            convs[-1] = FusedConv(convs[-1].conv, layer)
        else:
            return None
    return ResidualChain(convs) if convs and convs[-1].act is None else None
