"""Hugging Face ``transformers`` layout of SAM checkpoints -> the official segment-anything keys.

``SamModel`` files (``model.safetensors`` / ``pytorch_model.bin`` of facebook/sam-vit-base/large/huge
and of the SlimSAM uniform uploads) hold the official weights under other names: ``vision_encoder.
layers.N.layer_norm1`` for ``image_encoder.blocks.N.norm1``, MLPs as ``proj_in``/``layers``/``proj_out``,
the random-Fourier matrix twice (``shared_image_embedding`` and ``prompt_encoder.shared_embedding``).
:func:`from_transformers_sam` inverts transformers' SAM conversion mapping; models whose registry entry
names it as ``convert_state_dict`` then load those files strictly.
"""

from __future__ import annotations

import re

import torch

StateDict = dict[str, torch.Tensor]

# (HF pattern, official replacement), applied in order to each key.
_RENAMES = [
    (r"^vision_encoder\.", "image_encoder."),
    (r"^image_encoder\.layers\.", "image_encoder.blocks."),
    (r"\.patch_embed\.projection\.", ".patch_embed.proj."),
    (r"\.neck\.conv1\.", ".neck.0."),
    (r"\.neck\.layer_norm1\.", ".neck.1."),
    (r"\.neck\.conv2\.", ".neck.2."),
    (r"\.neck\.layer_norm2\.", ".neck.3."),
    (r"\.mask_embed\.conv1\.", ".mask_downscaling.0."),
    (r"\.mask_embed\.layer_norm1\.", ".mask_downscaling.1."),
    (r"\.mask_embed\.conv2\.", ".mask_downscaling.3."),
    (r"\.mask_embed\.layer_norm2\.", ".mask_downscaling.4."),
    (r"\.mask_embed\.conv3\.", ".mask_downscaling.6."),
    (r"\.point_embed\.", ".point_embeddings."),
    (r"\.shared_embedding\.positional_embedding$", ".pe_layer.positional_encoding_gaussian_matrix"),
    (r"\.upscale_conv1\.", ".output_upscaling.0."),
    (r"\.upscale_layer_norm\.", ".output_upscaling.1."),
    (r"\.upscale_conv2\.", ".output_upscaling.3."),
    (r"\.layer_norm(\d|_final_attn)\.", r".norm\1."),
]
_SHARED_PE = "shared_image_embedding.positional_embedding"
_MLP = re.compile(
    r"^(.*(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.(proj_in|layers\.(\d+)|proj_out)\."
)


def is_transformers_sam(state: StateDict) -> bool:
    """Whether ``state`` has the keys of a ``transformers`` ``SamModel``."""
    return any(k.startswith("vision_encoder.") for k in state) and any(
        k.startswith("mask_decoder.") for k in state
    )


def from_transformers_sam(state: StateDict) -> StateDict:
    """A ``transformers`` ``SamModel`` state_dict -> official SAM keys; any other layout unchanged."""
    if not is_transformers_sam(state):
        return state
    hidden = {}  # MLP prefix -> number of hidden ``layers.N`` (an MLP of depth d has d - 2)
    for key in state:
        match = _MLP.match(key)
        if match and match[3] is not None:
            hidden[match[1]] = max(hidden.get(match[1], 0), int(match[3]) + 1)
    out = {}
    for key, value in state.items():
        if key == _SHARED_PE and "prompt_encoder.shared_embedding.positional_embedding" in state:
            continue  # the same tensor, tied
        key = "prompt_encoder.shared_embedding.positional_embedding" if key == _SHARED_PE else key
        match = _MLP.match(key)
        if match:
            index = {"proj_in": 0, "proj_out": hidden.get(match[1], 0) + 1}.get(match[2])
            index = int(match[3]) + 1 if index is None else index
            key = f"{match[1]}.layers.{index}.{key[match.end() :]}"
        for pattern, replacement in _RENAMES:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out
