"""Small COCO- and BSDS-format data sets with known answers, and a box-oracle model stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch import nn

from litesam.prompts import Prompts
from litesam.utils.transforms import ImageTransform

SIDE = 64  # square test images: the stand-in's frame is the image itself, pixel for pixel

# Per image: (category_id, x, y, w, h) of objects whose masks exactly fill their boxes; widths are
# multiples of 25, so that 72% of a width is a whole number of pixels (IoU exactly 0.72).
OBJECTS = {
    1: [(1, 4, 4, 25, 20), (2, 30, 10, 25, 40)],
    2: [(1, 10, 30, 50, 24)],
    3: [(2, 0, 0, 25, 12), (1, 10, 20, 50, 40), (2, 38, 2, 25, 10)],
}


def box_mask(x: float, y: float, w: float, h: float, side: int = SIDE) -> np.ndarray:
    """side x side bool mask of the pixels whose centres lie in the XYWH box."""
    centres = np.arange(side) + 0.5
    cols = (centres >= x) & (centres <= x + w)
    rows = (centres >= y) & (centres <= y + h)
    return rows[:, None] & cols[None, :]


def rle(mask: np.ndarray) -> dict:
    """HxW bool mask -> COCO compressed RLE (JSON-ready), by pycocotools itself."""
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}


class BoxOracle(nn.Module):
    """A PromptableModel stand-in whose mask for a box is the box (``fraction`` of its width from the
    left; 0: an empty mask), with predicted IoU ``score``."""

    mask_threshold = 0.0

    def __init__(self, fraction: float = 1.0, score: float = 0.9) -> None:
        super().__init__()
        self.transform = ImageTransform(image_size=SIDE, resize="stretch")
        self.fraction, self.score = fraction, score
        self.encodes = 0

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.encodes += 1
        return {"image_embeddings": x.mean(dim=1, keepdim=True)}

    def decode(self, features, prompts: Prompts, multimask_output: bool = True, min_score=None):
        boxes = prompts.boxes.numpy()
        masks = [
            box_mask(x0, y0, (x1 - x0) * self.fraction, y1 - y0) * (self.fraction > 0)
            for x0, y0, x1, y1 in boxes
        ]
        logits = torch.from_numpy(np.stack(masks)).float()[:, None] * 20 - 10
        return logits, torch.full((len(boxes), 1), self.score)


def make_coco(root: Path, objects: dict[int, list] = OBJECTS) -> tuple[Path, Path]:
    """Images (random noise, SIDE x SIDE) in root/images and root/instances.json -> (images, annotations)."""
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for image_id, objs in objects.items():
        name = f"{image_id:012d}.png"
        Image.fromarray(np.random.default_rng(image_id).integers(0, 255, (SIDE, SIDE, 3), np.uint8)).save(
            root / "images" / name
        )
        images.append({"id": image_id, "file_name": name, "height": SIDE, "width": SIDE})
        for cat, x, y, w, h in objs:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                         "segmentation": rle(box_mask(x, y, w, h)), "area": w * h, "iscrowd": 0})  # fmt: skip
    data = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    (root / "instances.json").write_text(json.dumps(data))
    return root / "images", root / "instances.json"
