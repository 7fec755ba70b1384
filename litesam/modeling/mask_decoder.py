"""SAM's mask decoder: two-way transformer, upscaling, hypernetwork mask heads and an IoU head."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP, LayerNorm2d
from .transformer import Memo, memoized


class MaskDecoder(nn.Module):
    """Predict ``num_multimask_outputs + 1`` masks (4x the embedding resolution) and their IoU scores.

    :meth:`predict_masks` runs the learned output tokens and the prompt tokens through the two-way
    transformer with the image, then hands the outputs to the heads. A subclass extends the decoder
    (e.g. SAM-HQ's extra output token) by overriding two small hooks instead of forking it:

    - :meth:`output_tokens` -> TxC, the learned tokens put before the prompt tokens: the IoU token, then
      the ``num_mask_tokens`` mask tokens; a subclass appends its own after them.
    - :meth:`heads` -> (masks, iou): the transformer's outputs at those T tokens, the image tokens, the
      encoder's named ``features`` and ``keep`` -> the returned masks and scores. A subclass calls
      ``super().heads(...)`` for SAM's masks and :meth:`upscale_masks` for its own; if it changes the
      scores it also overrides :meth:`predict_scores` (the same scores without the masks).

    Mask upscaling has two implementations with the same result: the reference (``output_upscaling``,
    the checkpoint's transposed convolutions, then the hypernetwork product; exports to ONNX as is) and,
    when ``fast_upscaling`` is set (:func:`litesam.build.prepare_for_inference` does), channels-last
    GEMMs chunked over prompts.
    """

    fast_upscaling: bool = False  # inference path of upscale_masks (see _fast_upscale_masks)
    # Per-prompt buffers are image-sized (H x W x C in the transformer, 4H x 4W x C/8 when upscaling):
    # prompts go through in chunks whose buffers stay under ``chunk_bytes``, which keeps them in the
    # allocator's reusable heap (glibc maps larger blocks afresh, paying a page fault per 4 KiB on every
    # use) and in cache. ``prompt_chunk`` / ``upscale_chunk`` set the chunk sizes directly when not None.
    chunk_bytes: int = 16 * 2**20
    prompt_chunk: int | None = None
    upscale_chunk: int | None = None
    onnx_tokens = slice(None)  # mask tokens of the official ONNX decoder interface (Sam.decode_onnx): all

    def _chunk(self, fixed: int | None, per_prompt: int, element_size: int) -> int:
        """Prompts per chunk: ``fixed``, else as many as keep ``per_prompt`` elements under chunk_bytes."""
        return fixed or max(1, self.chunk_bytes // (per_prompt * element_size))

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
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        keep: slice = slice(None),
        features: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        memo: Memo | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks BxKx4Hx4W and IoU predictions BxK of the mask tokens selected by ``keep`` (default all).

        image_embeddings: 1xCxHxW (shared by all prompts) or BxCxHxW; image_pe: 1xCxHxW; sparse: BxNxC;
        dense: 1xCxHxW or BxCxHxW. ``features``: the image encoder's named outputs, passed to :meth:`heads`.
        Prompts run in chunks (each prompt is independent; see ``chunk_bytes``), which bounds the
        per-prompt image-sized intermediates; the image side is computed once for all chunks.
        ``min_score``: prompts whose every kept IoU prediction is <= this get no masks computed (their
        logits are -inf), e.g. when only masks scoring above it will be used. ``memo``: a dict kept
        with this image and dense prompt across calls (see :func:`fresh_memo`), so the image side is
        computed once for them all.
        """
        b = sparse_prompt_embeddings.shape[0]
        shared = image_embeddings.shape[0] == 1 and dense_prompt_embeddings.shape[0] == 1
        step = self._chunk(self.prompt_chunk, image_embeddings[0].numel(), image_embeddings.element_size())
        if not shared:
            memo = None
        elif memo is None and b > step:
            memo = {}  # the image side, computed by the first chunk for all
        if b <= step:
            return self._predict_chunk(
                image_embeddings,
                image_pe,
                sparse_prompt_embeddings,
                dense_prompt_embeddings,
                keep,
                features,
                min_score,
                memo,
            )
        parts = []
        for start in range(0, b, step):
            part = slice(start, start + step)
            image, dense = (
                x if x.shape[0] == 1 else x[part] for x in (image_embeddings, dense_prompt_embeddings)
            )
            parts.append(
                self._predict_chunk(
                    image, image_pe, sparse_prompt_embeddings[part], dense, keep, features, min_score, memo
                )
            )
        return torch.cat([m for m, _ in parts]), torch.cat([s for _, s in parts])

    def _predict_chunk(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        keep: slice,
        features: Mapping[str, Any] | None,
        min_score: float | None,
        memo: Memo | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`predict_masks` for one chunk of prompts."""
        tokens, image = self.attend(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, memo
        )
        if min_score is None:
            return self.heads(tokens, image, features, keep)
        scores = self.predict_scores(tokens, keep)
        live = (scores > min_score).any(dim=1)
        if bool(live.all()):
            return self.heads(tokens, image, features, keep)
        h, w = image.shape[1:3]
        masks = image.new_full((len(tokens), scores.shape[1], 4 * h, 4 * w), float("-inf"))
        if bool(live.any()):
            masks[live] = self.heads(tokens[live], image[live], features, keep)[0]
        return masks, scores

    def attend(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        memo: Memo | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two-way transformer over the output tokens and the prompts with the image (shapes as in
        :meth:`predict_masks`) -> (its outputs at the :meth:`output_tokens` positions BxTxC, image tokens
        BxHxWxC). ``memo``: a dict kept across calls with the same image and dense prompt (batch 1): the
        image side is then computed once (see :class:`~litesam.modeling.transformer.TwoWayTransformer`)."""
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = self.output_tokens()
        tokens = torch.cat([output_tokens.expand(b, -1, -1), sparse_prompt_embeddings], dim=1)
        src = memoized(memo, self, "src", lambda: image_embeddings + dense_prompt_embeddings)
        h, w = src.shape[-2:]
        hs, src = self.transformer(src, image_pe, tokens, memo, tokens_out=len(output_tokens))
        return hs, src.expand(b, -1, -1).unflatten(1, (h, w))

    def output_tokens(self) -> torch.Tensor:
        """The learned output tokens, TxC: the IoU token, then the ``num_mask_tokens`` mask tokens."""
        return torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)

    def heads(
        self,
        tokens: torch.Tensor,
        image: torch.Tensor,
        features: Mapping[str, Any] | None,
        keep: slice,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformer outputs -> masks BxKx4Hx4W and IoU predictions BxK of the mask tokens in ``keep``.

        tokens: BxTxC at the :meth:`output_tokens` positions; image: BxHxWxC image tokens; ``features``
        is unused here (a subclass's extra inputs). Only the kept masks are computed.
        """
        mask_tokens = tokens[:, 1 : 1 + self.num_mask_tokens]
        hyper_in = torch.stack(
            [self.output_hypernetworks_mlps[i](mask_tokens[:, i]) for i in range(self.num_mask_tokens)[keep]],
            dim=1,
        )
        return self.upscale_masks(image, hyper_in), self.predict_scores(tokens, keep)

    def predict_scores(self, tokens: torch.Tensor, keep: slice) -> torch.Tensor:
        """The IoU predictions BxK that :meth:`heads` returns, from the tokens alone (no masks needed)."""
        return self.iou_prediction_head(tokens[:, 0])[:, keep]

    def upscale_masks(self, image: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
        """Image tokens BxHxWxC and hypernetwork weights BxKxC/8 -> masks BxKx4Hx4W.

        The reference: ``output_upscaling`` to BxC/8x4Hx4W, then one product per mask; with
        ``fast_upscaling`` the same result from :meth:`_fast_upscale_masks`.
        """
        if self.fast_upscaling:
            return self._fast_upscale_masks(image, hyper_in)
        upscaled = self.output_upscaling(image.permute(0, 3, 1, 2))
        return (hyper_in @ upscaled.flatten(2)).unflatten(2, upscaled.shape[-2:])

    def _fast_upscale_masks(self, image: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
        """:meth:`upscale_masks` for inference: image BxHxWxC, hyper_in BxKxC/8 -> masks BxKx4Hx4W.

        ``output_upscaling`` (two 2x2/stride-2 transposed convolutions with a channel LayerNorm and
        activations) only ever mixes channels within a pixel, so it runs as three GEMMs on channels-last
        pixels kept in (y, x, sub-pixel...) order, with one small reordering of the K mask channels at the
        end. Chunked over prompts to bound the size of the 4x upscaled intermediate.
        """
        conv1, norm, act1, conv2, act2 = self.output_upscaling
        c1, c2 = conv1.out_channels, conv2.out_channels
        w1 = conv1.weight.permute(0, 2, 3, 1).reshape(conv1.in_channels, 4 * c1)  # (C, ky kx C1)
        w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)  # (C1, ky kx C2)
        b1, b2 = conv1.bias.repeat(4), conv2.bias.repeat(4)
        b, h, w, c = image.shape
        k = hyper_in.shape[1]
        out = []
        step = self._chunk(self.upscale_chunk, 16 * h * w * c2, image.element_size())
        for start in range(0, b, step):
            part = slice(start, start + step)
            x = torch.addmm(b1, image[part].reshape(-1, c), w1).view(-1, h * w * 4, c1)
            x = act1(F.layer_norm(x, (c1,), norm.weight, norm.bias, norm.eps))
            x = act2(torch.addmm(b2, x.view(-1, c1), w2)).view(-1, h * w * 16, c2)
            m = x @ hyper_in[part].transpose(1, 2)  # (b, H W ky1 kx1 ky2 kx2, K)
            m = m.view(-1, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
            out.append(m.reshape(-1, k, 4 * h, 4 * w))
        return torch.cat(out)
