"""MobileSAM: a TinyViT-5M image encoder (distilled from SAM ViT-H) in front of SAM's prompt encoder and
decoder, with SAM's preprocessing (1024x1024 input, ImageNet pixel statistics)."""

from __future__ import annotations

from ..modeling.sam import Sam
from ..modeling.tiny_vit import TinyViT
from ..registry import ModelSpec
from ..utils.transforms import ImageTransform
from .sam import sam_with_encoder

SOURCE = "ChaoningZhang/MobileSAM"


def mobile_sam_encoder(
    img_size: int = 1024, drop_path_rate: float = 0.0, cls: type[TinyViT] = TinyViT
) -> TinyViT:
    """MobileSAM's TinyViT-5M (``build_sam_vit_t``): Bx3xSxS -> Bx256x(S/16)x(S/16); ``cls`` a TinyViT
    subclass with other outputs (Light HQ-SAM's)."""
    return cls(
        img_size=img_size,
        embed_dims=(64, 128, 160, 320),
        depths=(2, 2, 6, 2),
        num_heads=(2, 4, 5, 10),
        window_sizes=(7, 7, 14, 7),
        drop_path_rate=drop_path_rate,
        last_downsample_stride=1,
    )


def build_mobile_sam(transform: ImageTransform) -> Sam:
    """MobileSAM, unloaded (BatchNorms unfused, official keys incl. the unused ``image_encoder.head``)."""
    return sam_with_encoder(mobile_sam_encoder(transform.image_size), transform)


MODELS = [
    ModelSpec(
        name="mobile_sam",
        build=build_mobile_sam,
        source=SOURCE,
        official="mobile_sam:build_sam_vit_t",  # PyPI mobilesam-mirror
        # pinned to the commit that last changed the file (same blob as master)
        url="https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/a509aac54fdd7af59f843135f2f7cee307283c88/weights/mobile_sam.pt",
        sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
        description="MobileSAM (TinyViT-5M encoder, 1024x1024 input)",
    ),
]
