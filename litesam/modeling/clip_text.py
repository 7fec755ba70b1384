"""FastSAM's text prompt: the everything mask whose image crop CLIP finds closest to a sentence.

As the official ``FastSAMPrompt.text_prompt``: masks of 100 pixels or fewer are left out; each other mask
gives a picture the size of the image, white except inside the mask's bounding box (exclusive max), which
holds the image's pixels; CLIP embeds those pictures (shorter side resized to 224 bicubically, centre
crop 224, CLIP's normalisation) and the sentence; the softmax of 100 x cosine similarities picks the
mask. The official index bookkeeping is kept: the winner's index among the kept masks is shifted by the
number of left-out masks whose index is <= it. CLIP comes from the optional ``transformers`` package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import InputError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MIN_AREA = 100  # masks of this many pixels or fewer take no part


class ClipRanker:
    """A CLIP image/text model (``transformers.CLIPModel``) and its tokenizer (text -> input ids 1xL)."""

    def __init__(self, model: Any, tokenize: Callable[[str], torch.Tensor], size: int = 224) -> None:
        self.model, self.tokenize, self.size = model.eval(), tokenize, size

    @classmethod
    def from_pretrained(cls, name_or_path: str = "openai/clip-vit-base-patch32") -> ClipRanker:
        """The official ViT-B/32 (or any CLIP) in the ``transformers`` layout: a folder or a cached name."""
        try:
            from transformers import CLIPModel, CLIPTokenizer
        except ImportError as e:
            raise InputError("text prompts need the transformers package: pip install 'litesam[text]'") from e
        try:
            model, tokenizer = (
                CLIPModel.from_pretrained(name_or_path),
                CLIPTokenizer.from_pretrained(name_or_path),
            )
        except OSError as e:
            raise InputError(f"cannot load CLIP from {name_or_path!r}: {e}") from e
        return cls(model, lambda text: tokenizer([text], return_tensors="pt")["input_ids"])

    def pixels(self, picture: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 -> 3xSxS normalised CLIP input: shorter side to S (PIL bicubic, the longer side
        truncated as torchvision's Resize does), centre crop, CLIP's mean and std."""
        h, w = picture.shape[:2]
        nh, nw = (self.size, int(self.size * w / h)) if h <= w else (int(self.size * h / w), self.size)
        resized = np.asarray(Image.fromarray(picture).resize((nw, nh), Image.BICUBIC))
        top, left = int(round((nh - self.size) / 2.0)), int(round((nw - self.size) / 2.0))
        crop = torch.from_numpy(resized[top : top + self.size, left : left + self.size].copy())
        x = crop.permute(2, 0, 1).float() / 255.0
        return (x - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)

    @torch.no_grad()
    def probabilities(self, pictures: list[np.ndarray], text: str) -> torch.Tensor:
        """K pictures and a sentence -> K softmax scores of 100 x cosine similarity."""
        pixels = torch.stack([self.pixels(p) for p in pictures])
        out = self.model(pixel_values=pixels, input_ids=self.tokenize(text))  # embeddings come normalised
        return (100.0 * out.image_embeds @ out.text_embeds.T)[:, 0].softmax(dim=0)


def box_picture(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image white (255) outside the mask's bounding box (exclusive max), its pixels inside."""
    ys, xs = np.nonzero(mask)
    picture = np.full_like(image, 255)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    picture[y0:y1, x0:x1] = image[y0:y1, x0:x1]
    return picture


def select_by_text(image: np.ndarray, masks: torch.Tensor, text: str, clip: ClipRanker) -> tuple[int, float]:
    """Index (among ``masks``, KxHxW bool over the HxWx3 ``image``) of the mask ``text`` describes, as
    the official code computes it (index shift included, kept inside the list), and the winning crop's
    CLIP probability; InputError when no mask is large enough."""
    if not text.strip():
        raise InputError("the text prompt is empty")
    areas = masks.flatten(1).sum(1).tolist()
    kept = [i for i, area in enumerate(areas) if area > MIN_AREA]
    if not kept:
        raise InputError(f"no mask of more than {MIN_AREA} pixels to choose from")
    left_out = [i for i, area in enumerate(areas) if area <= MIN_AREA]
    scores = clip.probabilities([box_picture(image, masks[i].cpu().numpy()) for i in kept], text)
    best = int(torch.argmax(scores))
    return min(best + sum(i <= best for i in left_out), len(areas) - 1), float(scores[best])
