"""SlimSAM (czg1225/SlimSAM): SAM ViT-B pruned to 50% / 77% fewer parameters.

Uniform (local) pruning keeps SAM's layout with smaller widths: plain SAM state_dicts (official ``.pth``
or the ``transformers`` uploads). Global pruning gives every block its own q/k/v and MLP widths; its
official files are whole pickled ``Sam`` modules with separate q, k, v layers, read by litesam's
restricted unpickler (:func:`litesam.checkpoint.read_pickled_sam`: no SlimSAM class imported, no code run).

All widths are read from the checkpoint (``build_from_state_dict``): the embedding width from
``patch_embed``, q/k/v widths from the projections (12 heads each), head widths from the relative-position
tables (whose length also tells global (127 = 2*64-1) from windowed (27) attention), MLP widths from
``mlp.lin1`` (SlimSAM-77's 696 is not 4x its 168). Without a checkpoint the published widths are built.
"""

from __future__ import annotations

import re
from functools import partial

from ..modeling.sam import Sam
from ..modeling.slimsam import global_pruned_vit
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


def _block_dims(state: StateDict, grid: int) -> tuple[int, list[int], list[int], list[int]]:
    """(embedding width, per-block q widths, per-block MLP widths, global-attention blocks) of a SAM ViT
    state_dict with separate q/k/v; KeyError/ValueError if it is not one."""
    embed_dim = state["image_encoder.patch_embed.proj.weight"].shape[0]
    depth = 1 + max(int(m[1]) for k in state if (m := _BLOCK.match(k)))
    block = "image_encoder.blocks.{}."
    qkv = [state[block.format(i) + "attn.q.weight"].shape[0] for i in range(depth)]
    mlp = [state[block.format(i) + "mlp.lin1.weight"].shape[0] for i in range(depth)]
    rel = [state[block.format(i) + "attn.rel_pos_h"].shape[0] for i in range(depth)]
    return embed_dim, qkv, mlp, [i for i, n in enumerate(rel) if n == 2 * grid - 1]


def build_global(
    embed_dim: int,
    qkv_dims: list[int],
    mlp_dims: list[int],
    transform: ImageTransform,
    global_attn=(2, 5, 8, 11),
) -> Sam:
    """A globally pruned SAM ViT-B (per-block widths), unloaded."""
    encoder = global_pruned_vit(embed_dim, qkv_dims, mlp_dims, global_attn, transform.image_size)
    return sam_with_encoder(encoder, transform)


def global_from_state_dict(state: StateDict, transform: ImageTransform) -> Sam:
    """The globally pruned SAM whose per-block widths ``state`` has; ValueError if it is not one."""
    try:
        embed_dim, qkv, mlp, global_attn = _block_dims(state, transform.image_size // 16)
    except (KeyError, ValueError) as e:
        raise ValueError(f"not a SAM ViT state_dict with separate q/k/v (no {e})") from e
    if any(q % 12 for q in qkv):
        raise ValueError(f"q/k/v widths {qkv} are not multiples of SlimSAM's 12 heads")
    return build_global(embed_dim, qkv, mlp, transform, global_attn)


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
    # the released global files have per-block widths this builder's defaults only approximate: build_model
    # takes every width from the checkpoint; without one, a uniform stand-in of the published size is built
    ModelSpec(
        name="slimsam_50_global",
        build=partial(build_global, 384, [384] * 12, [1536] * 12),
        source=SOURCE,
        description="SlimSAM-50 global (pickled Sam, per-block widths read from the file; Google Drive)",
        build_from_state_dict=global_from_state_dict,
    ),
    ModelSpec(
        name="slimsam_77_global",
        build=partial(build_global, 168, [168] * 12, [696] * 12),
        source=SOURCE,
        description="SlimSAM-77 global (pickled Sam, per-block widths read from the file; Google Drive)",
        build_from_state_dict=global_from_state_dict,
    ),
]
