"""The interface every promptable model of the zoo has, and ``Sam``: image encoder + prompt encoder +
mask decoder.

:class:`PromptableModel` is all the predictor, the mask generator, distillation and the server know of a
model: its :class:`~litesam.utils.transforms.ImageTransform`, ``encode`` (encoder input -> a dict of
named features) and ``decode`` (features + prompts in the prompt frame -> low-res logits and scores).
Models that are not SAM-shaped inside (EfficientSAM) implement the same protocol by composition.

The predictor adds ``"original_size"`` (int64 tensor (H, W)) to every image's features. Instance
segmenters (``kind = "instance"``, FastSAM) use it: their transform's prompt frame is the original image,
and ``decode`` returns the prompt-selected masks at the original resolution. A model may also offer
``everything_source(**options)``: the :class:`~litesam.MaskGenerator`'s default source for it (a
``PromptSource``, or a source with ``segment(features, frame) -> MaskCandidates`` that needs no
prompts); the generator's extra keyword arguments (FastSAM: ``conf``, ``iou``) go to it. A model with
SAM's prompt encoder offers ``decode_onnx`` (:meth:`Sam.decode_onnx`): the core of the official SAM
ONNX decoder interface that :func:`litesam.export.export_onnx` writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..prompts import Prompts
from ..utils.transforms import ImageTransform
from .transformer import Memo, fresh_memo, memoized

Features = Mapping[str, torch.Tensor]  # "image_embeddings": Bx256x64x64, plus model-specific extras


@runtime_checkable
class PromptableModel(Protocol):
    """What consumers may use of a promptable model (see the module docstring)."""

    transform: ImageTransform
    mask_threshold: float

    @property
    def device(self) -> torch.device: ...

    def encode(self, x: torch.Tensor) -> Features:
        """Bx3xSxS encoder input (from ``transform.to_input``) -> named features, batch B."""
        ...

    def decode(
        self,
        features: Features,
        prompts: Prompts,
        multimask_output: bool = True,
        min_score: float | None = None,
        memo: dict | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of one image (batch 1, shared by the prompts) and B prompt sets in the prompt frame ->
        (BxMxSxS low-res logits over the prompt frame, BxM scores). ``min_score``: a hint that masks
        scoring <= it will not be used; a model may then skip them (their logits -inf) or ignore it. It
        is passed by keyword and only when set (models written before it still decode). ``memo``: a dict
        that lives as long as the image's features, where a model may keep tensors derived from them
        between decodes; passed by keyword, and only to models whose ``decode`` has the parameter."""
        ...


class Sam(nn.Module):
    """Segment Anything with any image encoder that maps Bx3xSxS to Bx256x64x64.

    Attribute names are the official ones, so official state_dicts load strictly.
    """

    mask_threshold: float = 0.0
    channels_last: bool = False  # feed the encoder NHWC-strided input (set with NHWC conv weights)

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        transform: ImageTransform | None = None,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.transform = transform or ImageTransform()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: torch.Tensor) -> Features:
        """Bx3xSxS normalised, padded input -> ``{"image_embeddings": Bx256x64x64}``, or the named
        features of an encoder that returns a mapping (e.g. SAM-HQ's ``"interm_embeddings"``)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.image_encoder(x)
        return dict(out) if isinstance(out, Mapping) else {"image_embeddings": out}

    def decode(
        self,
        features: Features,
        prompts: Prompts,
        multimask_output: bool = True,
        min_score: float | None = None,
        memo: Memo | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (low-res mask logits BxMx256x256, predicted IoU BxM), M = 3 or 1.

        features: the encoder's, batch 1 (shared by all prompts) or B; prompts: B sets in the prompt
        frame (points BxNx2 with labels BxN: 1 fg, 0 bg, -1 ignore; boxes Bx4; mask Bx1x256x256).
        Prompts whose every score is <= ``min_score`` get -inf logits instead of computed masks.
        ``memo``: a dict kept with these features across decodes (``ImageState.memo``): the decoder's
        image-side tensors (positional encoding, first-layer projections) are then computed once per
        image, not per call (not used with a mask prompt).
        """
        points = (prompts.points, prompts.labels) if prompts.points is not None else None
        sparse, dense = self.prompt_encoder(points=points, boxes=prompts.boxes, masks=prompts.mask)
        if memo is not None:
            memo = fresh_memo(memo, self.prompt_encoder, self.mask_decoder)
        pe = memoized(memo, self.prompt_encoder, "dense_pe", self.prompt_encoder.get_dense_pe)
        return self.mask_decoder.predict_masks(
            features["image_embeddings"],
            pe,
            sparse,
            dense,
            self.mask_tokens(multimask_output),
            features=features,
            min_score=min_score,
            memo=memo if prompts.mask is None else None,
        )

    def decode_onnx(
        self,
        features: Features,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The official SAM ONNX decoder's core (``litesam.export``): point_coords 1xNx2 prompt-frame
        pixels with float point_labels 1xN (-1 padding, 0/1 background/foreground, 2/3 box corners; the
        caller pads), mask_input 1x1x256x256 used where has_mask_input (1) is 1 -> (low-res logits 1xTx256x256
        of the decoder's ``onnx_tokens``: every mask token for SAM; SAM-HQ's one mask, its export's
        default), their scores 1xT)."""
        sparse, dense = self.prompt_encoder.embed_onnx(point_coords, point_labels, mask_input, has_mask_input)
        pe = self.prompt_encoder.get_dense_pe()
        keep = self.mask_decoder.onnx_tokens
        return self.mask_decoder.predict_masks(
            features["image_embeddings"], pe, sparse, dense, keep, features=features
        )

    def mask_tokens(self, multimask_output: bool) -> slice:
        """Which of the decoder's mask tokens are returned: 1..3 for several masks, 0 for one (SAM)."""
        return slice(1, None) if multimask_output else slice(0, 1)
