"""EfficientSAM (ViT-Ti, ViT-S): SAMI-pretrained plain ViTs with their own prompt encoder and decoder.

The image is stretched to 1024x1024 (aspect ratio not kept) and normalised on the 0-1 scale; boxes are
fed as two labelled corner points and masks are upsampled bicubically (see
:mod:`litesam.modeling.efficient_sam`). The official checkpoints wrap the state_dict in ``{"model": ...}``.
"""

from __future__ import annotations

from functools import partial

from ..modeling.efficient_sam import IMAGENET_MEAN, IMAGENET_STD, EfficientSam
from ..registry import ModelSpec
from ..utils.transforms import ImageTransform

SOURCE = "yformer/EfficientSAM"
# 0-255 pixels / 255, stretched to 1024x1024, ImageNet statistics on the 0-1 scale; bicubic masks.
TRANSFORM = ImageTransform(
    image_size=1024,
    resize="stretch",
    pixel_scale=255.0,
    pixel_mean=IMAGENET_MEAN,
    pixel_std=IMAGENET_STD,
    mask_interpolation="bicubic",
)


def build_efficient_sam(embed_dim: int, num_heads: int, transform: ImageTransform) -> EfficientSam:
    """EfficientSAM with a 12-block ViT of width ``embed_dim``, unloaded."""
    return EfficientSam(embed_dim, num_heads, transform)


_URL = (
    "https://raw.githubusercontent.com/yformer/EfficientSAM/d525f622e6f640acf5a0fc37c7ca1f243da5bde0/weights/"
)

MODELS = [
    ModelSpec(
        name="efficient_sam_vitt",
        build=partial(build_efficient_sam, 192, 3),
        source=SOURCE,
        url=_URL + "efficient_sam_vitt.pt",
        sha256="dff858b19600a46461cbb7de98f796b23a7a888d9f5e34c0b033f7d6eb9e4e6a",
        transform=TRANSFORM,
        description="EfficientSAM-Ti (10.2M params, ViT-Ti encoder, 1024x1024 stretched input)",
    ),
    ModelSpec(
        name="efficient_sam_vits",
        build=partial(build_efficient_sam, 384, 6),
        source=SOURCE,
        url=_URL + "efficient_sam_vits.pt.zip",  # upstream ships ViT-S zipped (> 100 MB)
        sha256=None,  # no published checksum found; the file is used as downloaded
        member="efficient_sam_vits.pt",
        transform=TRANSFORM,
        description="EfficientSAM-S (26.4M params, ViT-S encoder, 1024x1024 stretched input)",
    ),
]
