"""TAP, Tokenize Anything via Prompting (baaivision/tokenize-anything) v1.1: ViT-B/L/H image tokenizers.

The released ``models/tap_vit_*_v1_1.pkl`` are pickled ``OrderedDict``s of numpy arrays, read by
:func:`litesam.checkpoint.read_array_pickle` (arrays only; no code runs). The official model loads them
with ``strict=True``; litesam loads them strictly through :func:`from_official`, which renames the
decoder's keys to SAM's decoder names and leaves out what litesam does not run: the caption decoder
(``text_decoder.*``, logged) and the relative-position index buffers (recomputed). The concept
projector's weights are separate files (``concepts/*.pkl``) and not used.

Preprocessing (:data:`TRANSFORM`): longest side to 1024 with PIL's bilinear filter, padded bottom/right
with the uint8 mean pixel; the model normalises with its checkpoint's BGR ``pixel_mean`` / ``pixel_rsig``.
Prompts scale by the one resize factor (1024 / longest side) on both axes.
"""

from __future__ import annotations

import logging
import re
from functools import partial

from ..modeling.tap import TokenizeAnything
from ..modeling.tap_encoder import TapImageEncoder
from ..registry import ModelSpec, StateDict
from ..utils.transforms import ImageTransform

SOURCE = "baaivision/tokenize-anything"
_URL = "https://huggingface.co/BAAI/tokenize-anything/resolve/main/models/"
_log = logging.getLogger(__name__)

TRANSFORM = ImageTransform(
    image_size=1024,
    pixel_mean=(0.0, 0.0, 0.0),  # raw 0-255 pixels: the model normalises with its checkpoint buffers
    pixel_std=(1.0, 1.0, 1.0),
    pad_pixel=(123.0, 116.0, 103.0),  # uint8 of the BGR mean (103.53, 116.28, 123.675), as RGB
    prompt_scale="uniform",
)

# official decoder key -> SAM decoder key (inside image_decoder.)
_DECODER_RENAMES = [
    (re.compile(r"^transformer\.blocks\."), "transformer.layers."),
    (re.compile(r"(attn\w*)\.proj\."), r"\1.out_proj."),
    (re.compile(r"\.mlp\.fc([12])\."), r".mlp.lin\1."),
    (re.compile(r"^transformer\.norm\."), "transformer.norm_final_attn."),
    (re.compile(r"^output_conv\."), "output_upscaling."),
    (re.compile(r"^mask_pred\."), "output_hypernetworks_mlps."),
    (re.compile(r"^iou_pred\."), "iou_prediction_head."),
]
_NOT_RUN = re.compile(r"^text_decoder\.|\.rel_pos_embed\.index$")


def _decoder_key(key: str) -> str:
    for pattern, repl in _DECODER_RENAMES:
        key = pattern.sub(repl, key)
    return key


def from_official(state: StateDict) -> StateDict:
    """An official TAP state_dict (or litesam's own, unchanged) -> the model's keys: decoder keys renamed,
    ``prompt_encoder.coord_matrix`` to SAM's Gaussian matrix, caption decoder and index buffers dropped."""
    out = {}
    dropped = [k for k in state if k.startswith("text_decoder.")]
    for key, value in state.items():
        if _NOT_RUN.search(key):
            continue
        if key.startswith("image_decoder."):
            key = "image_decoder." + _decoder_key(key[len("image_decoder.") :])
        elif key == "prompt_encoder.coord_matrix":
            key = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
        out[key] = value
    if dropped:
        _log.info("TAP: %d caption-decoder tensors (text_decoder.*) left unloaded", len(dropped))
    return out


def build_tap(depth: int, embed_dim: int, num_heads: int, transform: ImageTransform) -> TokenizeAnything:
    """TAP with a ``depth``-block ViT of width ``embed_dim`` (16x16 windows everywhere), unloaded."""
    encoder = TapImageEncoder(depth, embed_dim, num_heads, image_size=transform.image_size)
    return TokenizeAnything(encoder, transform)


def _spec(size: str, depth: int, embed_dim: int, num_heads: int, md5: str) -> ModelSpec:
    return ModelSpec(
        name=f"tap_vit_{size}",
        build=partial(build_tap, depth, embed_dim, num_heads),
        source=SOURCE,
        url=f"{_URL}tap_vit_{size}_v1_1.pkl",  # the README publishes MD5 prefixes only ({md5}...)
        transform=TRANSFORM,
        convert_state_dict=from_official,
        description=f"TAP ViT-{size.upper()} v1.1 (windowed ViT, SAM-style decoder + semantic tokens;"
        f" official MD5 {md5}...)",
    )


MODELS = [
    _spec("b", 12, 768, 12, "707f80"),
    _spec("l", 24, 1024, 16, "c1d41f"),
    _spec("h", 32, 1280, 16, "4bdfb9"),
]
