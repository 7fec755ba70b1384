"""Original Segment Anything models (ViT-B/L/H) and the SAM decoder that light encoders reuse.

Official ``.pth`` files and ``transformers`` ``SamModel`` files (facebook/sam-vit-*: ``model.safetensors``
or ``pytorch_model.bin``) both load (:func:`~litesam.transformers_layout.from_transformers_sam`)."""

from __future__ import annotations

from functools import partial

from torch import nn

from ..modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from ..registry import ModelSpec
from ..transformers_layout import from_transformers_sam
from ..utils.transforms import ImageTransform

SOURCE = "facebookresearch/segment-anything"
_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


def sam_prompt_encoder(image_size: int = 1024, embedding_size: int = 64) -> PromptEncoder:
    """SAM's prompt encoder for an ``image_size`` square prompt frame and a 64x64 embedding grid."""
    return PromptEncoder(
        embed_dim=256,
        image_embedding_size=(embedding_size, embedding_size),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )


def sam_mask_decoder(num_multimask_outputs: int = 3) -> MaskDecoder:
    """SAM's mask decoder: 2-layer two-way transformer, 256 wide, 3 + 1 mask tokens."""
    return MaskDecoder(
        transformer_dim=256,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        num_multimask_outputs=num_multimask_outputs,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )


def sam_with_encoder(image_encoder: nn.Module, transform: ImageTransform) -> Sam:
    """A light (or heavy) encoder in front of SAM's own prompt encoder and mask decoder."""
    return Sam(image_encoder, sam_prompt_encoder(transform.frame_size), sam_mask_decoder(), transform)


def sam_vit_encoder(
    embed_dim: int,
    depth: int,
    num_heads: int,
    global_attn: tuple[int, ...],
    image_size: int = 1024,
    cls: type[ImageEncoderViT] = ImageEncoderViT,
    mlp_dim: int | None = None,
) -> ImageEncoderViT:
    """SAM's ViT (14x14 windows, global attention at ``global_attn``, MLP width ``mlp_dim`` or 4x);
    ``cls`` a subclass with other outputs (SAM-HQ's)."""
    return cls(
        img_size=image_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        window_size=14,
        global_attn_indexes=global_attn,
        mlp_dim=mlp_dim,
    )


def _build_vit(
    embed_dim: int, depth: int, num_heads: int, global_attn: tuple[int, ...], transform: ImageTransform
) -> Sam:
    encoder = sam_vit_encoder(embed_dim, depth, num_heads, global_attn, transform.image_size)
    return sam_with_encoder(encoder, transform)


MODELS = [
    ModelSpec(
        name="sam_vit_b",
        build=partial(_build_vit, 768, 12, 12, (2, 5, 8, 11)),
        source=SOURCE,
        official="segment_anything:build_sam_vit_b",
        url=_URL + "sam_vit_b_01ec64.pth",
        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        description="SAM ViT-B (91M encoder)",
        convert_state_dict=from_transformers_sam,
    ),
    ModelSpec(
        name="sam_vit_l",
        build=partial(_build_vit, 1024, 24, 16, (5, 11, 17, 23)),
        source=SOURCE,
        official="segment_anything:build_sam_vit_l",
        url=_URL + "sam_vit_l_0b3195.pth",
        sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        description="SAM ViT-L (308M encoder)",
        convert_state_dict=from_transformers_sam,
    ),
    ModelSpec(
        name="sam_vit_h",
        build=partial(_build_vit, 1280, 32, 16, (7, 15, 23, 31)),
        source=SOURCE,
        official="segment_anything:build_sam_vit_h",
        url=_URL + "sam_vit_h_4b8939.pth",
        sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        description="SAM ViT-H (637M encoder), the teacher of the light models",
        convert_state_dict=from_transformers_sam,
    ),
]
