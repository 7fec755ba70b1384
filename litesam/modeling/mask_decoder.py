"""SAM's mask decoder: two-way transformer, upscaling, hypernetwork mask heads and an IoU head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP, LayerNorm2d


class MaskDecoder(nn.Module):
    """Predict ``num_multimask_outputs + 1`` masks (4x the embedding resolution) and their IoU scores."""

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.upscale_chunk = 16  # prompts per upscaling step (bounds a 4H x 4W x C/8 float buffer each)
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns masks Bx(3 or 1)x4Hx4W and IoU predictions Bx(3 or 1).

        image_embeddings: 1xCxHxW (shared by all prompts) or BxCxHxW; sparse: BxNxC; dense: (B or 1)xCxHxW.
        """
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, keep
        )

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        keep: slice = slice(None),
        features: object = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks (BxTx4Hx4W) and IoU predictions (BxT) of the mask tokens selected by ``keep`` (default all
        ``num_mask_tokens``); unselected masks are never upscaled."""
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.expand(b, -1, -1), sparse_prompt_embeddings], dim=1)
        src = image_embeddings + dense_prompt_embeddings  # batch 1 when shared by all prompts
        h, w = src.shape[-2:]

        hs, src = self.transformer(src, image_pe, tokens)
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]
        tokens_kept = range(self.num_mask_tokens)[keep]
        hyper_in = torch.stack(
            [self.output_hypernetworks_mlps[i](mask_tokens_out[:, i]) for i in tokens_kept], dim=1
        )
        masks = self._upscale_masks(src.expand(b, -1, -1), hyper_in, h, w)
        return masks, self.iou_prediction_head(iou_token_out)[:, keep]

    def _upscale_masks(self, src: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Image tokens BxHWxC and hypernetwork weights BxTxC/8 -> masks BxTx4Hx4W.

        ``output_upscaling`` (two 2x2/stride-2 transposed convolutions with a channel LayerNorm and
        activations) only ever mixes channels within a pixel, so it runs as three GEMMs on channels-last
        pixels kept in (y, x, sub-pixel...) order, with one small reordering of the T mask channels at the
        end. Chunked over prompts to bound the size of the 4x upscaled intermediate.
        """
        conv1, norm, act1, conv2, act2 = self.output_upscaling
        c1, c2 = conv1.out_channels, conv2.out_channels
        w1 = conv1.weight.permute(0, 2, 3, 1).reshape(conv1.in_channels, 4 * c1)  # (C, ky kx C1)
        w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)  # (C1, ky kx C2)
        b1, b2 = conv1.bias.repeat(4), conv2.bias.repeat(4)
        b, t = hyper_in.shape[:2]
        out = []
        for start in range(0, b, self.upscale_chunk):
            part = slice(start, start + self.upscale_chunk)
            x = torch.addmm(b1, src[part].reshape(-1, src.shape[-1]), w1).view(-1, h * w * 4, c1)
            x = act1(F.layer_norm(x, (c1,), norm.weight, norm.bias, norm.eps))
            x = act2(torch.addmm(b2, x.view(-1, c1), w2)).view(-1, h * w * 16, c2)
            m = x @ hyper_in[part].transpose(1, 2)  # (b, H W ky1 kx1 ky2 kx2, T)
            m = m.view(-1, h, w, 2, 2, 2, 2, t).permute(0, 7, 1, 3, 5, 2, 4, 6)
            out.append(m.reshape(-1, t, 4 * h, 4 * w))
        return torch.cat(out)
