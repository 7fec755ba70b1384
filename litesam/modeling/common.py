"""Small building blocks shared by SAM's components."""

from __future__ import annotations

import torch
from torch import nn

from .fuse import fuse_conv_bn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a BxCxHxW tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    """Two-layer feed-forward block ``lin2(act(lin1(x)))`` on the last axis."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (SAM's hypernetwork and IoU head)."""

    def __init__(
        self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, sigmoid_output: bool = False
    ) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:], strict=True))
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = torch.relu(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class ConvBN(nn.Sequential):
    """Bias-free ``Conv2d`` (key ``c``) then ``BatchNorm2d`` (``bn``), 'same' padding for odd kernels.

    BxCinxHxW -> BxCoutxH/sxW/s; :meth:`fused` gives the single equivalent conv for inference.
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def fused(self) -> nn.Conv2d:
        return fuse_conv_bn(self.c, self.bn)


def sam_neck(in_ch: int, out_ch: int = 256) -> nn.Sequential:
    """SAM's neck (keys ``neck.0``-``neck.3``): 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d; no biases."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 1, bias=False),
        LayerNorm2d(out_ch),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        LayerNorm2d(out_ch),
    )
