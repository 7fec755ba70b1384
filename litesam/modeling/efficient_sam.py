"""EfficientSAM (Xiong et al., 2023): a plain ViT encoder with SAM-style prompt encoder and mask decoder.

Attribute names follow the official checkpoints (github.com/yformer/EfficientSAM,
``efficient_sam_vitt.pt`` / ``efficient_sam_vits.pt``, whose ``"model"`` entry loads strictly into
:class:`EfficientSam`). What differs from SAM:

* preprocessing: the image (0-1 scale) is stretched to 1024x1024 by ``F.interpolate(bilinear)``, aspect
  ratio not kept and no padding, then normalised with ImageNet mean/std;
* the encoder is a global-attention ViT (no windows, no relative positions) whose 224-px absolute
  position table is resized bicubically, followed by SAM's neck;
* prompts are points only: a box is two corner points labelled 2 (top-left) and 3 (bottom-right), put
  before the other points, and every prompt is padded to 6 points (coordinate -1, label -1);
* there is no mask prompt; the two-way transformer keeps the residual in its first self-attention and
  adds the positional encoding to the queries themselves in later layers;
* masks are the 256x256 logits upsampled bicubically straight to the original image size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..prompts import Prompts
from ..utils.transforms import ImageTransform
from .common import sam_neck
from .prompt_encoder import PositionEmbeddingRandom
from .transformer import Attention

IMAGE_SIZE = 1024
PATCH_SIZE = 16
PRETRAIN_GRID = 14  # 224 px pretraining / 16 px patches: side of the stored position table
MAX_POINTS = 6  # the official decoder pads (or truncates) every prompt to this many points
BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 2, 3
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # on the 0-1 scale, as EfficientSAM applies them
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------------
# Image encoder
# ---------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Bx3xHxW -> BxDx(H/16)x(W/16) by a strided convolution."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class GlobalAttention(nn.Module):
    """Multi-head self-attention over all tokens (fused ``qkv`` projection, as timm's ViT)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """BxNxD -> BxNxD."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # B x heads x N x D/heads
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class FeedForward(nn.Module):
    """Linear -> GELU -> Linear (keys ``fc1`` / ``fc2``)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = GlobalAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class EfficientSamImageEncoder(nn.Module):
    """EfficientSAM's ViT: Bx3x1024x1024 (normalised) -> Bx256x64x64 image embedding.

    ViT-Ti: ``embed_dim=192, num_heads=3``; ViT-S: ``embed_dim=384, num_heads=6``; both 12 blocks.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        depth: int = 12,
        img_size: int = IMAGE_SIZE,
        patch_size: int = PATCH_SIZE,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        # Position table of the 224-px pretraining, with a leading (unused) class-token slot.
        self.pos_embed = nn.Parameter(torch.zeros(1, PRETRAIN_GRID**2 + 1, embed_dim))
        self.blocks = nn.ModuleList(ViTBlock(embed_dim, num_heads) for _ in range(depth))
        self.neck = sam_neck(embed_dim, out_chans)

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """The stored 14x14 table (class slot dropped) resized bicubically to 1xhxwxD."""
        table = self.pos_embed[:, 1:]
        side = math.isqrt(table.shape[1])
        grid = table.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        if (side, side) != (h, w):
            grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return grid.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"expected a {self.img_size}x{self.img_size} input, got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x).permute(0, 2, 3, 1)  # B x h x w x D
        b, h, w, d = x.shape
        x = (x + self.position_embedding(h, w)).reshape(b, h * w, d)
        for block in self.blocks:
            x = block(x)
        return self.neck(x.reshape(b, h, w, d).permute(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------------
# Prompt encoder
# ---------------------------------------------------------------------------------------------------


class EfficientSamPromptEncoder(nn.Module):
    """Labelled points -> BxNx256 sparse embeddings (no dense / mask prompt).

    Labels: 1 foreground, 0 background (position only), 2 box top-left, 3 box bottom-right,
    -1 padding; each adds its learned vector to the point's positional encoding.
    """

    def __init__(self, embed_dim: int = 256, embedding_size: int = 64, input_size: int = IMAGE_SIZE) -> None:
        super().__init__()
        self.image_embedding_size = (embedding_size, embedding_size)
        self.input_image_size = (input_size, input_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.invalid_points = nn.Embedding(1, embed_dim)
        self.point_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_top_left_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_bottom_right_embeddings = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """1x256x64x64 positional encoding of the image embedding grid."""
        return self.pe_layer(self.image_embedding_size)[None]

    def forward(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """coords BxNx2 (x, y) in encoder-input pixels, labels BxN -> BxNx256."""
        emb = self.pe_layer.forward_with_coords(coords + 0.5, self.input_image_size)
        for label, table in (
            (-1, self.invalid_points),
            (1, self.point_embeddings),
            (BOX_TOP_LEFT, self.bbox_top_left_embeddings),
            (BOX_BOTTOM_RIGHT, self.bbox_bottom_right_embeddings),
        ):
            emb = emb + table.weight * (labels == label).unsqueeze(-1)
        return emb


# ---------------------------------------------------------------------------------------------------
# Mask decoder
# ---------------------------------------------------------------------------------------------------


class StackedMLP(nn.Module):
    """``num_layers`` x (Linear -> GELU) then a plain Linear ``fc`` (keys ``layers.i.0`` and ``fc``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * num_layers
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.GELU()) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.fc(x)


class EfficientSamTwoWayBlock(nn.Module):
    """Tokens attend to themselves and to the image, then the image attends to the tokens.

    Unlike SAM's block, the self-attention always keeps its residual, and outside the first layer the
    query positional encoding is added to the tokens themselves (so it also flows into the residual).
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, first: bool, downsample_rate: int = 2) -> None:
        super().__init__()
        self.first = first
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = StackedMLP(dim, mlp_dim, dim, num_layers=1)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate)

    def forward(
        self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor, image_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens BxTxC, image BxHWxC (+ their encodings) -> updated (tokens, image)."""
        if not self.first:
            tokens = tokens + token_pe
        tokens = self.norm1(tokens + self.self_attn(tokens, tokens, tokens))
        image_k = image + image_pe
        tokens = self.norm2(tokens + self.cross_attn_token_to_image(tokens + token_pe, image_k, image))
        tokens = self.norm3(tokens + self.mlp(tokens))
        image = self.norm4(image + self.cross_attn_image_to_token(image_k, tokens + token_pe, tokens))
        return tokens, image


class EfficientSamTwoWayTransformer(nn.Module):
    """Stack of :class:`EfficientSamTwoWayBlock` and a final token-to-image attention."""

    def __init__(self, depth: int = 2, dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EfficientSamTwoWayBlock(dim, num_heads, mlp_dim, first=i == 0) for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample_rate=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image BxCxhxw, image_pe 1xCxhxw, tokens BxTxC -> (tokens BxTxC, image BxhwxC)."""
        image = image.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(2).transpose(1, 2)
        token_pe = tokens
        for layer in self.layers:
            tokens, image = layer(tokens, image, token_pe, image_pe)
        attn = self.final_attn_token_to_image(tokens + token_pe, image + image_pe, image)
        return self.norm_final_attn(tokens + attn), image


class EfficientSamMaskDecoder(nn.Module):
    """Image embedding + sparse prompt embeddings -> 4 mask logits (256x256) and 4 IoU estimates.

    Token 0 is the single-mask output, tokens 1..3 the multimask outputs.
    """

    def __init__(
        self, dim: int = 256, num_mask_tokens: int = 4, upscaling_dims: tuple[int, ...] = (64, 32)
    ) -> None:
        super().__init__()
        self.transformer = EfficientSamTwoWayTransformer(dim=dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(num_mask_tokens, dim)
        in_dims = (dim, *upscaling_dims[:-1])
        self.final_output_upscaling_layers = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose2d(a, b, kernel_size=2, stride=2),
                nn.GroupNorm(1, b) if i < len(upscaling_dims) - 1 else nn.Identity(),
                nn.GELU(),
            )
            for i, (a, b) in enumerate(zip(in_dims, upscaling_dims, strict=True))
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            StackedMLP(dim, dim, upscaling_dims[-1], num_layers=2) for _ in range(num_mask_tokens)
        )
        self.iou_prediction_head = StackedMLP(dim, dim, num_mask_tokens, num_layers=2)

    def forward(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embeddings BxCxhxw, image_pe 1xCxhxw, sparse BxNxC -> (Bx4x4hx4w logits, Bx4 IoUs)."""
        b, c, h, w = image_embeddings.shape
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight]).expand(b, -1, -1)
        tokens = torch.cat([output_tokens, sparse], dim=1)
        tokens, image = self.transformer(image_embeddings, image_pe, tokens)
        mask_tokens = tokens[:, 1 : 1 + len(self.output_hypernetworks_mlps)]
        upscaled = image.transpose(1, 2).reshape(b, c, h, w)
        for layer in self.final_output_upscaling_layers:
            upscaled = layer(upscaled)
        hyper = torch.stack(
            [mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        masks = (hyper @ upscaled.flatten(2)).view(b, -1, *upscaled.shape[-2:])
        return masks, self.iou_prediction_head(tokens[:, 0])


# ---------------------------------------------------------------------------------------------------
# Full model
# ---------------------------------------------------------------------------------------------------


class EfficientSam(nn.Module):
    """EfficientSAM behind litesam's :class:`~litesam.modeling.sam.PromptableModel` interface, numerically
    the official ``EfficientSam``. Its :class:`~litesam.utils.transforms.ImageTransform` stretches the
    image to 1024x1024 on the 0-1 scale with ImageNet statistics and upsamples masks bicubically.
    """

    mask_threshold: float = 0.0

    def __init__(self, encoder_embed_dim: int, encoder_num_heads: int, transform: ImageTransform) -> None:
        super().__init__()
        self.image_encoder = EfficientSamImageEncoder(
            encoder_embed_dim, encoder_num_heads, img_size=transform.image_size
        )
        self.prompt_encoder = EfficientSamPromptEncoder(input_size=transform.frame_size)
        self.mask_decoder = EfficientSamMaskDecoder()
        self.transform = transform

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Bx3x1024x1024 encoder input -> ``{"image_embeddings": Bx256x64x64}``."""
        return {"image_embeddings": self.image_encoder(x)}

    def prompt_points(self, prompts: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
        """The official point prompt: box corners (labels 2, 3) first, then the points; padded with
        (-1, -1) / label -1 or truncated to 6 points; negative coordinates become -1.

        Prompts in the prompt frame (points BxNx2, labels BxN, boxes Bx4) -> coords Bx6x2, labels Bx6.
        """
        if prompts.mask is not None:
            raise InputError("EfficientSAM does not take a mask prompt (mask_input must be None)")
        coords, labels = [], []
        if prompts.boxes is not None:
            coords.append(prompts.boxes.reshape(-1, 2, 2).float())
            corner_labels = torch.tensor([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], device=prompts.boxes.device)
            labels.append(corner_labels.expand(prompts.boxes.shape[0], 2))
        if prompts.points is not None:
            coords.append(prompts.points.float())
            labels.append(prompts.labels.to(torch.int64))
        coords_t = torch.cat(coords, dim=1)
        coords_t = torch.where(coords_t >= 0, coords_t, torch.full_like(coords_t, -1.0))
        # pad by appending MAX_POINTS padding points, then truncate (no Python arithmetic on shapes, so a
        # traced graph takes any number of points)
        coords_t = F.pad(coords_t, (0, 0, 0, MAX_POINTS), value=-1.0)[:, :MAX_POINTS]
        labels_t = F.pad(torch.cat(labels, dim=1), (0, MAX_POINTS), value=-1)[:, :MAX_POINTS]
        return coords_t, labels_t

    def decode(
        self,
        features: Mapping[str, torch.Tensor],
        prompts: Prompts,
        multimask_output: bool = True,
        min_score: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (BxMx256x256 low-res logits, BxM IoU estimates); M = 3 (multimask: tokens 1..3,
        for points and boxes alike) or 1 (token 0).

        features: batch 1 (shared by the B prompts) or B; prompts in the prompt frame, no mask prompt.
        ``min_score`` is ignored (every mask is computed).
        """
        coords, labels = self.prompt_points(prompts)
        sparse = self.prompt_encoder(coords, labels)
        image_embeddings = features["image_embeddings"].expand(sparse.shape[0], -1, -1, -1)
        masks, iou = self.mask_decoder(image_embeddings, self.prompt_encoder.get_dense_pe(), sparse)
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep], iou[:, keep]
