"""RepViT-SAM: a RepViT-M2.3 image encoder (output stride 16) in front of SAM's prompt encoder and decoder."""

from __future__ import annotations

from ..modeling.repvit import RepViTSamEncoder
from ..modeling.sam import Sam
from ..registry import ModelSpec
from ..utils.transforms import ImageTransform
from .sam import sam_with_encoder

SOURCE = "THU-MIG/RepViT"


def build_repvit_sam(transform: ImageTransform) -> Sam:
    """RepViT-SAM, unloaded (BatchNorms unfused, official keys)."""
    return sam_with_encoder(RepViTSamEncoder(img_size=transform.image_size), transform)


MODELS = [
    ModelSpec(
        name="repvit_sam",
        build=build_repvit_sam,
        source=SOURCE,
        url="https://github.com/THU-MIG/RepViT/releases/download/v1.0/repvit_sam.pt",  # upstream sam/README
        sha256="1fd2867cf669e6d89b1c91d0eb883d83ef4bcc590143dd2ca35e2705b21a4f2f",
        description="RepViT-SAM (RepViT-M2.3 encoder, 1024x1024 input)",
    ),
]
