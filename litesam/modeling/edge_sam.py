"""EdgeSAM: its image encoder (chongzhou96/EdgeSAM ``edge_sam/modeling/rep_vit.py``, arch m1,
``fuse=True``) and :class:`EdgeSam`, SAM with EdgeSAM's mask selection and scoring options.

A RepViT-M1 backbone (stages 48/96/192/384 at /4, /8, /16, /32) whose last two stages are merged
FPN-style before SAM's neck: ``fuse_stage2(stage /16) + upsample2x(fuse_stage3(stage /32))``.
Its depthwise re-parameterisable blocks carry a BatchNorm per branch and none after the sum.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from ..prompts import Prompts
from ..utils.masks import stability_score
from ..utils.transforms import ImageTransform
from .common import sam_neck
from .repvit import RepViTConfig, build_features
from .sam import Features, Sam
from .transformer import Memo

EDGE_SAM_CONFIG = RepViTConfig(
    widths=(48, 96, 192, 384), depths=(3, 3, 15, 2), downsample_strides=(2, 2, 2), norm_after_sum=False
)


class ProjectUpsample(nn.Module):
    """Bias-free 1x1 conv to ``out_ch`` then 2x interpolation (``op_list`` as the official OpSequential).

    BxCinxHxW -> Bxout_chx2Hx2W; ``mode`` "bicubic" is PyTorch's cubic (A=-0.75), align_corners=False.
    """

    def __init__(self, in_ch: int, out_ch: int, mode: str = "bicubic") -> None:
        super().__init__()
        self.op_list = nn.ModuleList(
            [
                nn.Conv2d(in_ch, out_ch, 1, bias=False),
                nn.Upsample(scale_factor=2, mode=mode, align_corners=False),
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class EdgeSamEncoder(nn.Module):
    """EdgeSAM image encoder: Bx3x1024x1024 (normalised, padded) -> Bx256x64x64."""

    def __init__(
        self, config: RepViTConfig = EDGE_SAM_CONFIG, img_size: int = 1024, upsample_mode: str = "bicubic"
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.features = build_features(config)
        self.stage2_index = config.stage_ends()[-2]  # last block at /16; the last stage ends the list
        self.fuse_stage2 = nn.Conv2d(config.widths[-2], 256, 1, bias=False)
        self.fuse_stage3 = ProjectUpsample(config.widths[-1], 256, upsample_mode)
        self.neck = sam_neck(256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index == self.stage2_index:
                stage2 = x
        return self.neck(self.fuse_stage2(stage2) + self.fuse_stage3(x))


class EdgeSam(Sam):
    """SAM with EdgeSAM's mask selection and scoring (same weights and keys as SAM's decoder).

    multimask_outputs: masks returned when ``multimask_output`` is true: 3 (tokens 1..3, as SAM and
    EdgeSAM's ``num_multimask_outputs=3`` default) or 4 (tokens 0..3, ``num_multimask_outputs=4``);
    a single mask is always token 0. stability_scores: replace the IoU predictions by the stability
    score of the low-res logits (EdgeSAM's ``use_stability_score=True``, offset 1.0). Both are fixed at
    construction (model options of the registry).
    """

    stability_offset: float = 1.0

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        transform: ImageTransform,
        multimask_outputs: int = 3,
        stability_scores: bool = False,
    ) -> None:
        super().__init__(image_encoder, prompt_encoder, mask_decoder, transform)
        tokens = mask_decoder.num_mask_tokens
        if multimask_outputs not in (tokens - 1, tokens):
            raise InputError(f"multimask_outputs must be {tokens - 1} or {tokens}, not {multimask_outputs!r}")
        self.multimask_outputs = multimask_outputs
        self.stability_scores = bool(stability_scores)

    def mask_tokens(self, multimask_output: bool) -> slice:
        tokens = self.mask_decoder.num_mask_tokens
        return slice(tokens - self.multimask_outputs, None) if multimask_output else slice(0, 1)

    def decode(
        self,
        features: Features,
        prompts: Prompts,
        multimask_output: bool = True,
        min_score: float | None = None,
        memo: Memo | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stability_scores:  # scores from the masks: every mask is needed
            min_score = None
        masks, scores = super().decode(features, prompts, multimask_output, min_score, memo)
        if self.stability_scores:
            return masks, stability_score(masks, self.mask_threshold, self.stability_offset)
        return masks, scores
