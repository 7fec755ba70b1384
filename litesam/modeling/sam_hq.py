"""SAM-HQ (SysCV/sam-hq): SAM's decoder with one more output token whose mask sees early encoder features.

The encoders return named features: ``"image_embeddings"`` (Bx256x64x64) and ``"interm_embeddings"``
(BxDx64x64, NCHW): the output of the ViT's first global-attention block (D = the ViT width), or of
TinyViT's second stage including its downsampling (D = 160, Light HQ-SAM). The official ViT returns the
outputs of every global-attention block, but the decoder reads only the first, so only that one is kept.

:class:`HQMaskDecoder` extends :class:`~litesam.modeling.mask_decoder.MaskDecoder` through its hooks: an
extra output token (``hf_token``) with its own hypernetwork MLP (``hf_mlp``) decodes a mask from the
upscaled image tokens refined by ``embedding_maskfeature`` plus the HQ features
(``embedding_encoder(image_embeddings) + compress_vit_feat(interm_embeddings)``, Bx32x256x256). Like the
official decoder it returns ONE mask per prompt set: SAM's mask 0 (single output) or the best-scored of
masks 1..3 (multimask output), plus the HQ mask — or the HQ mask alone with ``hq_token_only``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .common import MLP, LayerNorm2d
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .tiny_vit import TinyViT


class HQImageEncoderViT(ImageEncoderViT):
    """SAM's ViT that also returns its first global-attention block's output as ``interm_embeddings``."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        interm = None
        for block in self.blocks:
            x = block(x)
            if interm is None and block.window_size == 0:
                interm = x
        if interm is None:
            raise ValueError("SAM-HQ needs a ViT with at least one global-attention block")
        return {
            "image_embeddings": self.neck(x.permute(0, 3, 1, 2)),
            "interm_embeddings": interm.permute(0, 3, 1, 2),
        }


class HQTinyViT(TinyViT):
    """Light HQ-SAM's TinyViT: also returns its second stage's output (after its PatchMerging, 1/16 of
    the input) as ``interm_embeddings``."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        interm = x
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == 1:
                interm = x
        return {"image_embeddings": self.neck(x).contiguous(), "interm_embeddings": interm.contiguous()}


class HQMaskDecoder(MaskDecoder):
    """SAM's mask decoder + SAM-HQ's output token, fusion layers and mask selection (module docstring).

    ``vit_dim``: channels of the encoder's ``interm_embeddings``; ``hq_token_only``: return the HQ mask
    alone instead of SAM's mask + the HQ mask. Official attribute names (``hf_token``, ``hf_mlp``,
    ``compress_vit_feat``, ``embedding_encoder``, ``embedding_maskfeature``).
    """

    onnx_tokens = slice(0, 1)  # SAM-HQ's ONNX export default (multimask_output=False): token 0 + HQ mask

    def __init__(self, *, vit_dim: int, hq_token_only: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        dim = self.transformer_dim
        self.hq_token_only = hq_token_only
        self.hf_token = nn.Embedding(1, dim)
        self.hf_mlp = MLP(dim, dim, dim // 8, 3)
        self.compress_vit_feat = nn.Sequential(
            nn.ConvTranspose2d(vit_dim, dim, kernel_size=2, stride=2),
            LayerNorm2d(dim),
            nn.GELU(),
            nn.ConvTranspose2d(dim, dim // 8, kernel_size=2, stride=2),
        )
        self.embedding_encoder = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
        )
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(dim // 8, dim // 4, 3, 1, 1),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.Conv2d(dim // 4, dim // 8, 3, 1, 1),
        )

    def output_tokens(self) -> torch.Tensor:
        """SAM's output tokens, then the HQ token: (1 + num_mask_tokens + 1)xC."""
        return torch.cat([super().output_tokens(), self.hf_token.weight])

    def hq_features(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The image's HQ features, 1x(C/8)x4Hx4W, from its embedding and intermediate ViT features."""
        return self.embedding_encoder(features["image_embeddings"]) + self.compress_vit_feat(
            features["interm_embeddings"]
        )

    def _best(self, tokens: torch.Tensor, keep: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """The best kept SAM token's IoU prediction Bx1 and its index among the kept ones Bx1."""
        return self.iou_prediction_head(tokens[:, 0])[:, keep].max(dim=1, keepdim=True)  # first max

    def predict_scores(self, tokens: torch.Tensor, keep: slice) -> torch.Tensor:
        return self._best(tokens, keep)[0]

    def heads(
        self,
        tokens: torch.Tensor,
        image: torch.Tensor,
        features: Mapping[str, Any] | None,
        keep: slice,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask Bx1x4Hx4W and its IoU prediction Bx1 per prompt set: the best-scored SAM mask among
        ``keep`` (+ the HQ mask), or the HQ mask alone with ``hq_token_only``."""
        if features is None or "interm_embeddings" not in features:
            raise ValueError("HQMaskDecoder needs the encoder's 'interm_embeddings' feature")
        kept = list(range(self.num_mask_tokens)[keep])
        iou, best = self._best(tokens, keep)
        upscaled = self.output_upscaling(image.permute(0, 3, 1, 2))  # B x C/8 x 4H x 4W
        hq_image = self.embedding_maskfeature(upscaled) + self.hq_features(features)
        masks = self.hf_mlp(tokens[:, -1])[:, None] @ hq_image.flatten(2)
        if not self.hq_token_only:
            mask_tokens = tokens[:, 1 : 1 + self.num_mask_tokens]
            mlps = self.output_hypernetworks_mlps
            hyper_in = torch.stack([mlps[i](mask_tokens[:, i]) for i in kept], dim=1)
            chosen = hyper_in.gather(1, best[:, :, None].expand(-1, -1, hyper_in.shape[-1]))
            masks = chosen @ upscaled.flatten(2) + masks
        return masks.unflatten(2, upscaled.shape[-2:]), iou
