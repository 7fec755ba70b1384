"""MobileSAM-v2 (ChaoningZhang/MobileSAM, folder MobileSAMv2): object-aware detector boxes -> SAM masks.

The official weights are several files: the detector ``ObjectAwareModel.pt`` (an ultralytics
checkpoint, read by litesam's restricted unpickler), the prompt-guided decoder
``Prompt_guided_Mask_Decoder.pt`` (``{'PromtEncoder': ..., 'MaskDecoder': ...}``, spelling as upstream)
and the chosen encoder's file (``mobile_sam.pt``, ``l2.pt`` or ``sam_vit_h.pt``). ``checkpoint=`` takes
upstream's folder (``MobileSAMv2/weight/`` with ``../PromptGuidedDecoder/``, or one folder holding all),
a mapping ``{"detector": path, "decoder": path, "encoder": path}``, or ``"auto"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from torch import nn

from ..checkpoint import CheckpointError, load_checkpoint, read_state_dict, unwrap_state_dict
from ..errors import InputError
from ..modeling import ImageEncoderViT
from ..modeling.efficientvit import CONFIGS
from ..modeling.mobile_sam_v2 import MobileSAMv2, ObjectAwareModel, ResizingEfficientViTEncoder
from ..registry import ModelSpec, StateDict
from ..utils.transforms import ImageTransform
from .mobile_sam import mobile_sam_encoder
from .sam import sam_mask_decoder, sam_prompt_encoder

SOURCE = "ChaoningZhang/MobileSAM"
ROLES = ("detector", "decoder", "encoder")
# upstream file names (MobileSAMv2/weight/ and MobileSAMv2/PromptGuidedDecoder/)
FILENAMES = {
    "detector": "ObjectAwareModel.pt",
    "decoder": "Prompt_guided_Mask_Decoder.pt",
    "efficientvit_l2": "l2.pt",
    "tiny_vit": "mobile_sam.pt",
    "sam_vit_h": "sam_vit_h.pt",
}
# The decoder is in the repository (pinned commit); the detector and encoders are in upstream's
# weight.zip on Google Drive (README "Getting Started (MobileSAMv2)"). No SHA-256 is published.
_DECODER_URL = (
    "https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/34bbbfdface3c18e5221aa7de6032d7220c6c6a1/"
    "MobileSAMv2/PromptGuidedDecoder/Prompt_guided_Mask_Decoder.pt"
)
_WEIGHT_ZIP_URL = "https://drive.usercontent.google.com/download?id=1dE-YAG-1mFCBmao2rHDp0n-PP4eH7SjE&export=download&confirm=t"
ZIP_FILENAME = "mobile_sam_v2_weight.zip"
_SAM_VIT_H_URL = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"
_SAM_VIT_H_SHA256 = "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"


ENCODER_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "efficientvit_l2": partial(ResizingEfficientViTEncoder, CONFIGS["l2"], 512),
    "tiny_vit": mobile_sam_encoder,
    "sam_vit_h": partial(
        ImageEncoderViT,
        img_size=1024,
        embed_dim=1280,
        depth=32,
        num_heads=16,
        global_attn_indexes=(7, 15, 23, 31),
    ),
}


def build_mobile_sam_v2(
    transform: ImageTransform,
    encoder: str = "efficientvit_l2",
    box_batch: int = 320,
) -> MobileSAMv2:
    """MobileSAM-v2 with image ``encoder`` (efficientvit_l2, tiny_vit or sam_vit_h), unloaded;
    ``box_batch``: detector boxes decoded together in segment-everything (320 upstream)."""
    if encoder not in ENCODER_BUILDERS:
        known = ", ".join(ENCODER_BUILDERS)
        raise InputError(f"mobile_sam_v2 encoder must be one of {known}, got {encoder!r}")
    return MobileSAMv2(
        ENCODER_BUILDERS[encoder](),
        sam_prompt_encoder(),
        sam_mask_decoder(),
        ObjectAwareModel(),
        transform,
        box_batch,
    )


def checkpoint_files(
    checkpoint: str | os.PathLike | Mapping[str, str | os.PathLike], encoder: str
) -> dict[str, Path]:
    """Role (detector, decoder, encoder) -> file, from a folder, a mapping or ``"auto"``; a missing file
    is a CheckpointError naming it."""
    names = {
        "detector": FILENAMES["detector"],
        "decoder": FILENAMES["decoder"],
        "encoder": FILENAMES[encoder],
    }
    if isinstance(checkpoint, Mapping):
        unknown = sorted(set(checkpoint) - set(ROLES))
        if unknown:
            raise CheckpointError(f"mobile_sam_v2 checkpoint roles are {', '.join(ROLES)}; got {unknown}")
        missing = [f"{r} ({names[r]})" for r in ROLES if r not in checkpoint]
        if missing:
            raise CheckpointError(f"mobile_sam_v2 checkpoint mapping lacks {', '.join(missing)}")
        return {role: Path(checkpoint[role]) for role in ROLES}
    if str(checkpoint) == "auto":
        return _fetch(encoder)
    folder = Path(checkpoint)
    if not folder.is_dir():
        raise CheckpointError(
            f"mobile_sam_v2 takes a folder of its files (upstream's weight/), a mapping of"
            f" {', '.join(ROLES)} -> file, or 'auto'; {folder} is not a folder"
        )
    places = [
        folder,
        folder / "weight",
        folder / "PromptGuidedDecoder",
        folder.parent / "PromptGuidedDecoder",
    ]
    files = {}
    for role in ROLES:
        found = next((p / names[role] for p in places if (p / names[role]).is_file()), None)
        if found is None:
            raise CheckpointError(
                f"mobile_sam_v2 ({encoder}) needs {names[role]} (the {role}) in {folder}"
                " (or its weight/ or PromptGuidedDecoder/ folders): not found"
            )
        files[role] = found
    return files


def _fetch(encoder: str) -> dict[str, Path]:
    from ..hub import fetch_checkpoint

    zipped = partial(fetch_checkpoint, "mobile_sam_v2", _WEIGHT_ZIP_URL, ZIP_FILENAME, None)
    files = {
        "detector": zipped(member=f"weight/{FILENAMES['detector']}"),
        "decoder": fetch_checkpoint("mobile_sam_v2", _DECODER_URL, FILENAMES["decoder"], None),
    }
    if encoder == "sam_vit_h":  # upstream's sam_vit_h.pt is SAM ViT-H's encoder: read from SAM's file
        files["encoder"] = fetch_checkpoint(
            "sam_vit_h", _SAM_VIT_H_URL, "sam_vit_h_4b8939.pth", _SAM_VIT_H_SHA256
        )
    else:
        files["encoder"] = zipped(member=f"weight/{FILENAMES[encoder]}")
    return files


def read_decoder(path: Path) -> StateDict:
    """``Prompt_guided_Mask_Decoder.pt`` -> ``prompt_encoder.*`` / ``mask_decoder.*`` keys."""
    obj = load_checkpoint(path)
    parts = {"PromtEncoder": "prompt_encoder.", "MaskDecoder": "mask_decoder."}
    if not isinstance(obj, Mapping) or set(parts) - set(obj):
        found = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{path} is not a MobileSAM-v2 decoder file"
            f" (expected keys PromtEncoder, MaskDecoder; found {found})"
        )
    return {
        prefix + k: v
        for part, prefix in parts.items()
        for k, v in unwrap_state_dict(obj[part], str(path)).items()
    }


def read_encoder(path: Path) -> StateDict:
    """An encoder file -> ``image_encoder.*`` keys: bare encoder keys (v2's ``mobile_sam.pt``:
    ``{'model': ...}``) or a SAM-layout file whose ``image_encoder.*`` keys are kept (``l2.pt``,
    MobileSAM v1's ``mobile_sam.pt``, ``sam_vit_h_4b8939.pth``)."""
    state = read_state_dict(path)
    if any(k.startswith("image_encoder.") for k in state):
        return {k: v for k, v in state.items() if k.startswith("image_encoder.")}
    return {"image_encoder." + k: v for k, v in state.items()}


def read_mobile_sam_v2(
    checkpoint: str | os.PathLike | Mapping[str, str | os.PathLike], encoder: str, **options: object
) -> StateDict:
    """The model's state_dict from its files (see the module docstring)."""
    files = checkpoint_files(checkpoint, encoder)
    detector = read_state_dict(files["detector"])
    return {
        **{"detector." + k: v for k, v in detector.items()},
        **read_decoder(files["decoder"]),
        **read_encoder(files["encoder"]),
    }


MODELS = [
    ModelSpec(
        name="mobile_sam_v2",
        build=build_mobile_sam_v2,
        source=SOURCE,
        url=_WEIGHT_ZIP_URL,  # `litesam download` fetches upstream's weight.zip; "auto" also the decoder
        filename=ZIP_FILENAME,
        options={"encoder": "efficientvit_l2", "box_batch": 320},
        read_checkpoint=read_mobile_sam_v2,
        description="MobileSAM-v2: object-aware YOLOv8x boxes prompt SAM (EfficientViT-L2 / TinyViT / ViT-H)",
    ),
]
