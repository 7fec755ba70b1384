"""Small models and images for fast tests."""

from __future__ import annotations

import numpy as np
import torch

from litesam.modeling import ImageEncoderViT, Sam
from litesam.utils.transforms import ImageTransform
from litesam.zoo.sam import sam_mask_decoder, sam_prompt_encoder, sam_with_encoder


def tiny_sam(seed: int = 0, image_size: int = 1024) -> Sam:
    """A SAM with a 1-block, 32-wide ViT: same interfaces as the zoo models, builds and runs in ms.
    ``image_size`` < 1024 shrinks the embedding grid (image_size / 16) and the decoder's work with it."""
    torch.manual_seed(seed)
    encoder = ImageEncoderViT(
        img_size=image_size, embed_dim=32, depth=1, num_heads=2, global_attn_indexes=(0,)
    )
    if image_size == 1024:
        return sam_with_encoder(encoder, ImageTransform()).eval()
    prompt_encoder = sam_prompt_encoder(image_size, image_size // 16)
    return Sam(encoder, prompt_encoder, sam_mask_decoder(), ImageTransform(image_size)).eval()


def photo(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """An HxWx3 uint8 image with some structure (a bright square on noise)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 80, size=(h, w, 3), dtype=np.uint8)
    img[h // 4 : h // 2, w // 4 : w // 2] = 220
    return img
