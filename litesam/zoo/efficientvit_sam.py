"""EfficientViT-SAM (L0, L1, L2 at 512x512; XL0, XL1 at 1024x1024) with SAM's prompt encoder and decoder.

The encoder sees the image resized to 512 (L) or 1024 (XL) pixels on its longest side; prompts and
masks stay in SAM's 1024 frame (the prompt encoder's ``input_image_size``), as in the official predictor.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from ..modeling.efficientvit import NORM_EPS, efficientvit_sam_image_encoder
from ..modeling.sam import Sam
from ..registry import ModelSpec
from ..utils.transforms import ImageTransform
from .sam import sam_with_encoder

SOURCE = "mit-han-lab/efficientvit"
_URL = "https://huggingface.co/mit-han-lab/efficientvit-sam/resolve/main/"


def build_efficientvit_sam(variant: str, transform: ImageTransform) -> Sam:
    """EfficientViT-SAM ``variant`` (l0, l1, l2, xl0, xl1), unloaded.

    The official model zoo sets every norm's eps to 1e-6, including the decoder transformer's
    LayerNorms (1e-5 in SAM), so they are set here too.
    """
    model = sam_with_encoder(efficientvit_sam_image_encoder(variant), transform)
    for module in model.mask_decoder.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = NORM_EPS
    return model


# SHA-256 of the official files, as published in public download scripts that verify them.
SHA256 = {
    "l0": "c4f994b01a16d48bcf2fbbb089448cfbf58fae5811edfa8113c953b8b8cc64b8",
    "l1": "fa151df2b9b96896accd505470755cdd293a4c50cdabac95478f3fbd86d9152b",
    "l2": "d4bfd842224cbb99de09acc3325e81ac5b7e8725c8fbdab152305e5d934bfe4a",
    "xl0": "9bc2f87bd23d6e6d1f7b5beff910f98835c7c333fac73e695bac0bec685968f8",
    "xl1": "10f42277679427c1183dcff19758e536aa86bcc4304e4b387ff48865784be05c",
}


def _spec(variant: str, image_size: int, params: str) -> ModelSpec:
    return ModelSpec(
        name=f"efficientvit_sam_{variant}",
        build=partial(build_efficientvit_sam, variant),
        source=SOURCE,
        url=f"{_URL}efficientvit_sam_{variant}.pt",
        sha256=SHA256[variant],
        transform=ImageTransform(image_size=image_size, prompt_size=1024),
        description=f"EfficientViT-SAM-{variant.upper()} ({params} params, {image_size}px encoder input)",
    )


MODELS = [
    _spec("l0", 512, "34.8M"),
    _spec("l1", 512, "47.7M"),
    _spec("l2", 512, "61.3M"),
    _spec("xl0", 1024, "117.0M"),
    _spec("xl1", 1024, "203.3M"),
]
