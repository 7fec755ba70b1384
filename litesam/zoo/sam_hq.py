"""SAM-HQ (SysCV/sam-hq): SAM ViT-B/L/H and Light HQ-SAM (TinyViT-5M) with the HQ mask decoder.

The released files are SAM checkpoints (MobileSAM's for Light HQ-SAM) with the HQ decoder's keys merged
in (``mask_decoder.hf_token``, ``hf_mlp``, ``compress_vit_feat``, ``embedding_encoder``,
``embedding_maskfeature``): exactly the model's keys, so litesam loads them strictly (the official
builder uses ``strict=False``). Option ``hq_token_only``: return the HQ-token mask alone.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from ..modeling import TwoWayTransformer
from ..modeling.sam import Sam
from ..modeling.sam_hq import HQImageEncoderViT, HQMaskDecoder, HQTinyViT
from ..registry import ModelSpec
from ..utils.transforms import ImageTransform
from .mobile_sam import mobile_sam_encoder
from .sam import sam_prompt_encoder, sam_vit_encoder

SOURCE = "SysCV/sam-hq"
_URL = "https://huggingface.co/lkeab/hq-sam/resolve/main/"
_OPTIONS = {"hq_token_only": False}


def sam_hq(image_encoder: nn.Module, vit_dim: int, transform: ImageTransform, hq_token_only: bool) -> Sam:
    """An encoder returning ``image_embeddings`` + ``interm_embeddings`` (``vit_dim`` channels) in front of
    SAM's prompt encoder and the HQ mask decoder."""
    decoder = HQMaskDecoder(
        transformer_dim=256,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        vit_dim=vit_dim,
        hq_token_only=hq_token_only,
    )
    return Sam(image_encoder, sam_prompt_encoder(transform.frame_size), decoder, transform)


def _build_vit(
    embed_dim: int,
    depth: int,
    num_heads: int,
    global_attn: tuple[int, ...],
    transform: ImageTransform,
    hq_token_only: bool = False,
) -> Sam:
    size = transform.image_size
    encoder = sam_vit_encoder(embed_dim, depth, num_heads, global_attn, size, HQImageEncoderViT)
    return sam_hq(encoder, embed_dim, transform, hq_token_only)


def build_light_hq_sam(transform: ImageTransform, hq_token_only: bool = False) -> Sam:
    """Light HQ-SAM: MobileSAM's TinyViT-5M (stage-2 features, 160 channels) + the HQ decoder."""
    encoder = mobile_sam_encoder(transform.image_size, cls=HQTinyViT)
    return sam_hq(encoder, 160, transform, hq_token_only)


MODELS = [
    ModelSpec(
        name="sam_hq_vit_b",
        build=partial(_build_vit, 768, 12, 12, (2, 5, 8, 11)),
        source=SOURCE,
        url=_URL + "sam_hq_vit_b.pth",
        sha256="14a9d662cd6f5a9c2dba6d40ab0058d88d287e4a18fd6fdc6ad5fb1a3fdeaa57",
        options=_OPTIONS,
        description="HQ-SAM ViT-B (SAM ViT-B + HQ token decoder)",
    ),
    ModelSpec(
        name="sam_hq_vit_l",
        build=partial(_build_vit, 1024, 24, 16, (5, 11, 17, 23)),
        source=SOURCE,
        url=_URL + "sam_hq_vit_l.pth",
        sha256="e1a6c385d62bf005ded91a54d5ec55c985cfc4103ef89c08d90f39f04934c343",
        options=_OPTIONS,
        description="HQ-SAM ViT-L",
    ),
    ModelSpec(
        name="sam_hq_vit_h",
        build=partial(_build_vit, 1280, 32, 16, (7, 15, 23, 31)),
        source=SOURCE,
        url=_URL + "sam_hq_vit_h.pth",
        sha256="a7ac14a085326d9fa6199c8c698c4f0e7280afdbb974d2c4660ec60877b45e35",
        options=_OPTIONS,
        description="HQ-SAM ViT-H",
    ),
    ModelSpec(
        name="sam_hq_vit_tiny",
        build=build_light_hq_sam,
        source=SOURCE,
        url=_URL + "sam_hq_vit_tiny.pth",
        sha256="0f32c075ccdd870ae54db2f7630e7a0878ede5a2b06d05d6fe02c65a82fb7196",
        options=_OPTIONS,
        description="Light HQ-SAM (MobileSAM's TinyViT-5M + HQ token decoder)",
    ),
]
