"""TinySAM (xinghaochen/TinySAM): a TinyViT-5M SAM distilled with hard-prompt sampling; MobileSAM's
architecture and keys (``tinysam_42.3.pth``, 42.3 COCO AP), three masks per prompt always."""

from __future__ import annotations

from ..modeling.tinysam import TinySam
from ..registry import ModelSpec
from ..utils.transforms import ImageTransform
from .mobile_sam import mobile_sam_encoder
from .sam import sam_mask_decoder, sam_prompt_encoder


def build_tinysam(transform: ImageTransform) -> TinySam:
    """TinySAM, unloaded (MobileSAM's TinyViT-5M, SAM's prompt encoder and decoder)."""
    encoder = mobile_sam_encoder(transform.image_size)
    return TinySam(encoder, sam_prompt_encoder(transform.frame_size), sam_mask_decoder(), transform)


MODELS = [
    ModelSpec(
        name="tinysam",
        build=build_tinysam,
        source="xinghaochen/TinySAM",
        url="https://github.com/xinghaochen/TinySAM/releases/download/3.0/tinysam_42.3.pth",
        description="TinySAM (TinyViT-5M, hard-prompt distillation; always 3 masks per prompt)",
    ),
]
