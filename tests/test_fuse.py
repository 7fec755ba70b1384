"""Convolutions with their activation and residual addition fused (oneDNN post-ops) compute what the
separate ops compute, and step aside where they cannot run (gradients, autocast, tracing)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from litesam.build import reference_paths
from litesam.modeling.fuse import FusedConv, ResidualChain, fuse_residual_chain

ACTIVATIONS = [None, nn.GELU(), nn.GELU(approximate="tanh"), nn.ReLU(), nn.SiLU(), nn.Hardswish()]
CONVS = {
    "1x1": lambda: nn.Conv2d(16, 32, 1),
    "3x3 stride 2": lambda: nn.Conv2d(16, 32, 3, 2, 1),
    "depthwise 3x3": lambda: nn.Conv2d(16, 16, 3, 1, 1, groups=16),
}


def op_by_op(
    conv: nn.Conv2d, act: nn.Module | None, x: torch.Tensor, add: torch.Tensor | None
) -> torch.Tensor:
    y = conv(x) if add is None else conv(x) + add
    return y if act is None else act(y)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("residual", [False, True], ids=["", "+add"])
@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: repr(a))
@pytest.mark.parametrize("kind", CONVS)
def test_fused_convolution_equals_the_separate_ops(kind, act, residual, layout):
    torch.manual_seed(0)
    conv = CONVS[kind]().to(memory_format=layout)
    x = torch.randn(2, 16, 20, 20).contiguous(memory_format=layout)
    with torch.inference_mode():
        add = torch.randn_like(conv(x)) if residual else None
        want = op_by_op(conv, act, x, add)
        fused = FusedConv(conv, act)
        got = fused(x, add)
        assert fused._fused(x)  # the oneDNN path ran
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_where_it_cannot_fuse_it_computes_op_by_op():
    torch.manual_seed(0)
    fused = FusedConv(nn.Conv2d(8, 8, 1), nn.GELU())
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    fused(x).sum().backward()  # gradients: autograd through the separate ops
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert fused(x.detach()).dtype == torch.bfloat16  # autocast: the bf16 convolution
    with torch.inference_mode():
        assert fused._fused(x.detach())
        with reference_paths(fused):  # what ONNX export traces
            assert not fused._fused(x.detach())
        assert fused._fused(x.detach())


def test_a_residual_branch_of_convolutions_becomes_one_chain():
    torch.manual_seed(0)
    branch = nn.Sequential(
        nn.Conv2d(8, 16, 1), nn.GELU(), nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.Conv2d(16, 8, 1)
    )
    chain = fuse_residual_chain(branch)
    assert isinstance(chain, ResidualChain) and [c.act is not None for c in chain.convs] == [
        True,
        False,
        False,
    ]
    x = torch.randn(1, 8, 12, 12)
    with torch.inference_mode():
        torch.testing.assert_close(chain(x), x + branch(x), rtol=1e-5, atol=1e-5)
    assert fuse_residual_chain(nn.Sequential(nn.Conv2d(8, 8, 1), nn.GELU())) is None  # act after the add
    assert fuse_residual_chain(nn.Sequential(nn.Conv2d(8, 8, 1), nn.Tanh(), nn.Conv2d(8, 8, 1))) is None
    assert fuse_residual_chain(nn.Conv2d(8, 8, 1)) is None
