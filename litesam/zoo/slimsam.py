"""SlimSAM (czg1225/SlimSAM): SAM ViT-B pruned to 50% / 77% fewer parameters.

Uniform (local) pruning keeps SAM's layout with smaller widths: plain SAM state_dicts (official ``.pth``
or the ``transformers`` uploads). The widths are read from the checkpoint (``build_from_state_dict``):
embedding width from ``patch_embed``, head width from the relative-position tables (whose length also
tells global (127 = 2*64-1) from windowed (27) attention), MLP width from ``mlp.lin1`` (SlimSAM-77's 696
is not 4x its 168). Without a checkpoint the published widths are built.
"""

from __future__ import annotations

import re
from functools import partial

from ..modeling.sam import Sam
from ..registry import ModelSpec, StateDict
from ..transformers_layout import from_transformers_sam
from ..utils.transforms import ImageTransform
from .sam import sam_vit_encoder, sam_with_encoder

SOURCE = "czg1225/SlimSAM"
_BLOCK = re.compile(r"^image_encoder\.blocks\.(\d+)\.")


def build_uniform(
    embed_dim: int, mlp_dim: int, transform: ImageTransform, num_heads: int = 12, global_attn=(2, 5, 8, 11)
) -> Sam:
    """A uniformly pruned SAM ViT-B of the given widths (12 blocks), unloaded."""
    encoder = sam_vit_encoder(
        embed_dim, 12, num_heads, tuple(global_attn), transform.image_size, mlp_dim=mlp_dim
    )
    return sam_with_encoder(encoder, transform)


def uniform_from_state_dict(state: StateDict, transform: ImageTransform) -> Sam:
    """The uniformly pruned SAM whose widths ``state`` (official keys) has; ValueError if it is no SAM ViT."""
    try:
        embed_dim = state["image_encoder.patch_embed.proj.weight"].shape[0]
        depth = 1 + max(int(m[1]) for k in state if (m := _BLOCK.match(k)))
        head_dim = state["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]
        mlp_dim = state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0]
        grid = transform.image_size // 16
        global_attn = [
            i
            for i in range(depth)
            if state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0] == 2 * grid - 1
        ]
    except (KeyError, ValueError) as e:
        raise ValueError(f"not a SAM ViT state_dict (no {e})") from e
    if depth != 12 or embed_dim % head_dim:
        raise ValueError(f"not a pruned SAM ViT-B: {depth} blocks, width {embed_dim}, head width {head_dim}")
    return build_uniform(embed_dim, mlp_dim, transform, embed_dim // head_dim, global_attn)


MODELS = [
    ModelSpec(
        name="slimsam_50_uniform",
        build=partial(build_uniform, 384, 1536),
        source=SOURCE,
        url="https://huggingface.co/nielsr/slimsam-50-uniform/resolve/main/model.safetensors",
        filename="slimsam_50_uniform.safetensors",
        description="SlimSAM-50 uniform (SAM ViT-B pruned locally to width 384)",
        convert_state_dict=from_transformers_sam,
        build_from_state_dict=uniform_from_state_dict,
    ),
    ModelSpec(
        name="slimsam_77_uniform",
        build=partial(build_uniform, 168, 696),
        source=SOURCE,
        url="https://huggingface.co/nielsr/slimsam-77-uniform/resolve/main/model.safetensors",
        filename="slimsam_77_uniform.safetensors",
        description="SlimSAM-77 uniform (SAM ViT-B pruned locally to width 168)",
        convert_state_dict=from_transformers_sam,
        build_from_state_dict=uniform_from_state_dict,
    ),
]
