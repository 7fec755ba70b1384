"""EdgeSAM and EdgeSAM-3x: a RepViT-M1 encoder with FPN-style fusion in front of SAM's prompt encoder and
decoder (same architecture and keys; the checkpoints differ only in training data).

EdgeSAM's predictor offers two options on top of SAM's, modelled here as attributes of :class:`EdgeSam`:
return all four mask tokens instead of tokens 1..3 when several masks are asked for, and score masks by
their stability instead of the IoU head (its web demo uses both for point prompts).
"""

from __future__ import annotations

from typing import Any

import torch

from ..modeling.edge_sam import EdgeSamEncoder
from ..modeling.sam import Sam
from ..registry import ModelSpec, Preprocess
from .sam import sam_mask_decoder, sam_prompt_encoder

SOURCE = "chongzhou96/EdgeSAM"


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks ``logits > threshold + offset`` and ``logits > threshold - offset``.

    logits: ...xHxW -> scores ... (float32); the first mask lies inside the second.
    """
    inner = (logits > threshold + offset).sum((-2, -1))
    outer = (logits > threshold - offset).sum((-2, -1))
    return inner / outer


class EdgeSam(Sam):
    """SAM with EdgeSAM's mask selection and scoring.

    multimask_outputs: masks returned when ``multimask_output`` is true: 3 (tokens 1..3, as SAM and
    EdgeSAM's ``num_multimask_outputs=3`` default) or 4 (tokens 0..3, ``num_multimask_outputs=4``);
    a single mask is always token 0. stability_scores: replace the IoU predictions by
    :func:`stability_score` of the low-res logits (``use_stability_score=True``, offset 1.0).
    """

    stability_offset: float = 1.0

    def __init__(
        self, *args: Any, multimask_outputs: int = 3, stability_scores: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.multimask_outputs = multimask_outputs
        self.stability_scores = stability_scores

    def decode(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`Sam.decode`; returns BxMx256x256 logits and BxM scores, M = multimask_outputs or 1."""
        tokens = self.mask_decoder.num_mask_tokens
        if self.multimask_outputs not in (tokens - 1, tokens):
            raise ValueError(
                f"multimask_outputs must be {tokens - 1} or {tokens}, not {self.multimask_outputs}"
            )
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        masks, scores = self.mask_decoder.predict_masks(
            image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense
        )
        keep = slice(tokens - self.multimask_outputs, None) if multimask_output else slice(0, 1)
        masks = masks[:, keep]
        if self.stability_scores:
            return masks, stability_score(masks, self.mask_threshold, self.stability_offset)
        return masks, scores[:, keep]


def build_edge_sam(preprocess: Preprocess) -> EdgeSam:
    """EdgeSAM (either checkpoint), unloaded; bicubic upsampling in the encoder's fusion as upstream."""
    return EdgeSam(
        image_encoder=EdgeSamEncoder(img_size=preprocess.image_size, upsample_mode="bicubic"),
        prompt_encoder=sam_prompt_encoder(preprocess.image_size),
        mask_decoder=sam_mask_decoder(),
        pixel_mean=preprocess.pixel_mean,
        pixel_std=preprocess.pixel_std,
        image_size=preprocess.image_size,
    )


_URL = "https://huggingface.co/spaces/chongzhou/EdgeSAM/resolve/main/weights/"  # per the upstream README

MODELS = [
    ModelSpec(
        name="edge_sam",
        build=build_edge_sam,
        source=SOURCE,
        url=_URL + "edge_sam.pth",
        sha256="439b086a20ab6fba90c12cba32e0001ba3aa726da5791ff8738acdd440330991",
        description="EdgeSAM (RepViT-M1 encoder, 1024x1024 input)",
    ),
    ModelSpec(
        name="edge_sam_3x",
        build=build_edge_sam,
        source=SOURCE,
        url=_URL + "edge_sam_3x.pth",
        sha256="5a3e3261da9e2f4c8154410885689ae57d09cbf4cf5d0c848b9d80b6df336ece",
        description="EdgeSAM-3x (EdgeSAM's architecture, longer training; upstream demo default)",
    ),
]
