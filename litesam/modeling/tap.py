"""TAP, Tokenize Anything via Prompting (baaivision/tokenize-anything): promptable masks + semantic tokens.

SAM's design with its own parts: a windowed ViT (:mod:`litesam.modeling.tap_encoder`) fed BGR pixels
normalised by the checkpoint's ``pixel_mean`` / ``pixel_rsig`` buffers; a prompt encoder of labelled
points only (a box is its two corners, labels 2 and 3; label 4 pads, its coordinates ignored; no mask
prompt); SAM's mask decoder with four more output tokens in front, the semantic tokens, which take part in
attention and come out as region tokens (``sem_tokens``, and 1024-d ``sem_embeds`` through ``sem_pred``:
the input of TAP's concept projector and caption decoder, which litesam leaves out).

Mask tokens: 0 answers box prompts, 1-3 point prompts. One mask per prompt (``multimask_output=False``)
is the official choice: token 0 for a box, else the best-scored of tokens 1-3. With ``multimask_output``
a point prompt returns tokens 1-3 and a box prompt still token 0 alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..prompts import Prompts
from ..utils.transforms import ImageTransform
from .common import MLP
from .mask_decoder import MaskDecoder
from .prompt_encoder import PositionEmbeddingRandom
from .sam import Features
from .transformer import TwoWayTransformer

PAD_LABEL = 4  # TAP's "no point": embedding row 4, coordinates ignored
CORNER_LABELS = (2, 3)  # box top-left, bottom-right
BGR_MEAN = (103.53, 116.28, 123.675)  # the official buffers as built (checkpoints hold them)
BGR_STD = (57.375, 57.12, 58.395)


def tap_points(prompts: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts in the prompt frame -> TAP's point list (coords BxNx2 pixels, labels BxN int64): the box's
    corners (labels 2, 3) first, then the points (labels 1 / 0), then the pad point (0, 0) with label 4
    when there is no box, as the official demo builds ``inputs["points"]``."""
    if prompts.mask is not None:
        raise InputError("TAP takes no mask prompt (mask_input must be None)")
    coords, labels = [], []
    if prompts.boxes is not None:
        boxes = prompts.boxes
        coords.append(boxes.reshape(-1, 2, 2))
        labels.append(torch.tensor([CORNER_LABELS], device=boxes.device).expand(boxes.shape[0], -1))
    if prompts.points is not None:
        coords.append(prompts.points)
        labels.append(prompts.labels.to(torch.int64))
    if prompts.boxes is None:  # sized from the prompts' tensors (not Python numbers): traces to any batch
        coords.append(torch.zeros_like(prompts.points[:, :1]))
        labels.append(torch.full_like(prompts.labels[:, :1], PAD_LABEL, dtype=torch.int64))
    return torch.cat(coords, dim=1), torch.cat(labels, dim=1)


def select_mask_token(iou_pred: torch.Tensor, boxed: bool) -> torch.Tensor:
    """The official choice of one mask per prompt from all four tokens' scores (Bx4) -> token index B:
    0 for box prompts, else the best of tokens 1-3 (the demo's -1000 penalty on the other kind)."""
    if boxed:
        return torch.zeros(len(iou_pred), dtype=torch.int64, device=iou_pred.device)
    return iou_pred[:, 1:].argmax(dim=1) + 1


class TapPromptEncoder(nn.Module):
    """Labelled points (prompt-frame pixels) -> BxNxC tokens: random Fourier features of
    ``clip((xy + 0.5) / S, 0, 1)`` (zero for pad points) plus ``point_embed[label]``.

    The official ``coord_matrix`` is ``pe_layer``'s Gaussian matrix (same formula as SAM's).
    """

    def __init__(self, embed_dim: int = 256, image_size: int = 1024, embedding_size: int = 64) -> None:
        super().__init__()
        self.image_size = image_size
        self.embedding_size = embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embed = nn.Embedding(5, embed_dim)  # background, foreground, top-left, bottom-right, pad

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid: 1xCxHxW."""
        return self.pe_layer((self.embedding_size, self.embedding_size)).unsqueeze(0)

    def forward(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """coords BxNx2 (x, y) pixels, labels BxN (0-4) -> BxNxC."""
        size = self.image_size
        emb = self.pe_layer.forward_with_coords((coords + 0.5).clamp(0, size), (size, size))
        emb = emb * (labels != PAD_LABEL).unsqueeze(-1).to(emb.dtype)
        return emb + self.point_embed(labels)


class TapMaskDecoder(MaskDecoder):
    """SAM's decoder with TAP's output tokens: 4 semantic tokens, the IoU token, 4 mask tokens.

    The semantic tokens attend like the others; :meth:`semantic` maps their outputs to ``sem_embeds``.
    Its channel LayerNorm in the upscaling uses nn.LayerNorm's eps (1e-5), as the official one.
    """

    def __init__(self, embed_dim: int = 256, sem_embed_dim: int = 1024, num_heads: int = 8) -> None:
        super().__init__(
            transformer_dim=embed_dim,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=embed_dim, num_heads=num_heads, mlp_dim=2048
            ),
        )
        self.output_upscaling[1].eps = 1e-5
        self.sem_tokens = nn.Embedding(self.num_mask_tokens, embed_dim)
        self.sem_pred = MLP(embed_dim, sem_embed_dim, sem_embed_dim, 3)

    def output_tokens(self) -> torch.Tensor:
        """9xC: the semantic tokens, then SAM's IoU and mask tokens."""
        return torch.cat([self.sem_tokens.weight, self.iou_token.weight, self.mask_tokens.weight], dim=0)

    def heads(
        self, tokens: torch.Tensor, image: torch.Tensor, features: Mapping[str, Any] | None, keep: slice
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's heads on the tokens after the semantic ones (BxTxC, T = 9)."""
        return super().heads(tokens[:, self.num_mask_tokens :], image, features, keep)

    def semantic(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformer outputs at the output tokens BxTxC -> (sem_tokens Bx4xC, sem_embeds Bx4xE)."""
        sem = tokens[:, : self.num_mask_tokens]
        return sem, self.sem_pred(sem)


class TokenizeAnything(nn.Module):
    """TAP's image tokenizer, segmentation and region-token part, on litesam's promptable-model protocol.

    Attribute names are the official ones (``image_encoder``, ``prompt_encoder``, ``image_decoder``,
    ``pixel_mean``, ``pixel_rsig``); inside the decoder, SAM's (the registry's ``convert_state_dict``
    maps the official decoder keys).
    """

    mask_threshold: float = 0.0
    channels_last: bool = False

    def __init__(
        self,
        image_encoder: nn.Module,
        transform: ImageTransform,
        embed_dim: int = 256,
        sem_embed_dim: int = 1024,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        grid = transform.image_size // 16
        self.prompt_encoder = TapPromptEncoder(embed_dim, transform.frame_size, grid)
        self.image_decoder = TapMaskDecoder(embed_dim, sem_embed_dim, embed_dim // 32)
        self.transform = transform
        self.register_buffer("pixel_mean", torch.tensor(BGR_MEAN))
        self.register_buffer("pixel_rsig", 1 / torch.tensor(BGR_STD))

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Bx3xSxS RGB pixels (0-255) -> the encoder's input: BGR, ``(x - pixel_mean) * pixel_rsig`` with the
        checkpoint's buffers."""
        return (x.flip(1) - self.pixel_mean.view(1, 3, 1, 1)) * self.pixel_rsig.view(1, 3, 1, 1)

    def encode(self, x: torch.Tensor) -> Features:
        """Bx3xSxS RGB pixels (0-255, padded by the transform) -> ``{"image_embeddings": Bx256x64x64}``."""
        x = self.normalize(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return {"image_embeddings": self.image_encoder(x)}

    def _attend(self, features: Features, prompts: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
        """(decoder outputs at the output tokens BxTxC, image tokens BxHxWxC)."""
        sparse = self.prompt_encoder(*tap_points(prompts))
        embeddings = features["image_embeddings"]
        no_dense = embeddings.new_zeros(())  # TAP has no dense prompt: the key is the embedding itself
        return self.image_decoder.attend(embeddings, self.prompt_encoder.get_dense_pe(), sparse, no_dense)

    def decode(
        self,
        features: Features,
        prompts: Prompts,
        multimask_output: bool = True,
        min_score: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts (prompt frame) -> (low-res logits BxMx256x256, predicted IoU BxM): M = 1 for boxes and
        for points without ``multimask_output`` (the official choice), 3 for points with it.
        ``min_score`` is ignored (every mask is computed)."""
        boxed = prompts.boxes is not None
        tokens, image = self._attend(features, prompts)
        keep = slice(0, 1) if boxed else slice(1, None)
        masks, iou = self.image_decoder.heads(tokens, image, features, keep)
        if boxed or multimask_output:
            return masks, iou
        best = iou.argmax(dim=1, keepdim=True)
        return masks.gather(1, best[..., None, None].expand(-1, -1, *masks.shape[-2:])), iou.gather(1, best)

    def tokenize(self, features: Features, prompts: Prompts) -> dict[str, torch.Tensor]:
        """The official ``get_outputs``: all four tokens' ``mask_pred`` Bx4x256x256 and ``iou_pred`` Bx4,
        the region tokens ``sem_tokens`` Bx4xC and ``sem_embeds`` Bx4xE, and ``selected``, the index B of
        the official single mask."""
        tokens, image = self._attend(features, prompts)
        masks, iou = self.image_decoder.heads(tokens, image, features, slice(None))
        sem_tokens, sem_embeds = self.image_decoder.semantic(tokens)
        selected = select_mask_token(iou, prompts.boxes is not None)
        return {
            "mask_pred": masks,
            "iou_pred": iou,
            "sem_tokens": sem_tokens,
            "sem_embeds": sem_embeds,
            "selected": selected,
        }
