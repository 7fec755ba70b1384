"""SAM's prompt encoder: points, boxes (sparse tokens) and a low-res mask (dense map) -> 256-d embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of normalized (x, y) positions: 2 -> 2*num_pos_feats channels."""

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates in [0, 1] -> (..., 2F) sin/cos features."""
        proj = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        proj = 2 * math.pi * proj
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of the centres of an HxW grid: (2F)xHxW."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1)
        return self._encode(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, N, 2) pixel (x, y) in an image of ``image_size`` (H, W) -> (B, N, 2F)."""
        coords = coords.clone()
        coords[..., 0] = coords[..., 0] / image_size[1]
        coords[..., 1] = coords[..., 1] / image_size[0]
        return self._encode(coords.to(torch.float))


class PromptEncoder(nn.Module):
    """Encode prompts for SAM's mask decoder.

    Points (B, N, 2) in encoder-input pixels with labels (B, N) (1 foreground, 0 background, -1 padding),
    boxes (B, 4) XYXY in encoder-input pixels, masks (B, 1, 4H, 4W) logits. Returns sparse (B, T, C) and
    dense (B, C, H, W) embeddings, H x W = ``image_embedding_size``; without masks the dense embedding is
    the same for every prompt and is returned once, (1, C, H, W), to broadcast.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        image_embedding_size: tuple[int, int] = (64, 64),
        input_image_size: tuple[int, int] = (1024, 1024),
        mask_in_chans: int = 16,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0: background point, 1: foreground point, 2: box top-left, 3: box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid: 1 x C x H x W."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # pixel centres
        if pad:
            points = torch.cat([points, torch.zeros_like(points[:, :1])], dim=1)
            labels = torch.cat([labels, -torch.ones_like(labels[:, :1])], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        emb = torch.where(labels == -1, self.not_a_point_embed.weight, emb)
        for label, table in enumerate(self.point_embeddings):  # 0 bg, 1 fg, 2/3 box corners as points
            emb = emb + torch.where(labels == label, table.weight, 0.0)
        return emb

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        emb = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_emb = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0)
        return emb + corner_emb

    def embed_onnx(
        self,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The official ONNX decoder's prompt embedding: point_coords BxNx2 with point_labels BxN (-1
        padding, 0 background, 1 foreground, 2/3 box corners; no padding point added), mask_input
        Bx1x4Hx4W counted where has_mask_input (1) is 1 -> sparse BxNxC, dense BxCxHxW."""
        sparse = self._embed_points(point_coords, point_labels, pad=False)
        no_mask = self.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = has_mask_input * self.mask_downscaling(mask_input) + (1 - has_mask_input) * no_mask
        return sparse, dense

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        bs = next((t.shape[0] for t in (points[0] if points else None, boxes, masks) if t is not None), 1)
        device = self.point_embeddings[0].weight.device
        sparse = [torch.empty((bs, 0, self.embed_dim), device=device)]
        if points is not None:
            sparse.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, h, w)
        return torch.cat(sparse, dim=1), dense
