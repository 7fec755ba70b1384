"""Kept objects as one COCO JSON: images, annotations (compressed RLE, bbox, area), categories.

With a ``path`` every change is written at once, atomically (a killed server leaves the previous or the
new file, never half of one), and a store opened on an existing file continues it. Without a path the
objects live in memory (the page's download gives the file).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OutputError
from ..utils.amg import coco_to_rle, rle_area, rle_to_coco, rle_to_mask
from ..utils.io import atomic_write_json


def _bbox(mask: np.ndarray) -> list[int]:
    """HxW bool -> XYWH box (zeros for an empty mask)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


class AnnotationStore:
    """COCO images/annotations/categories, thread-safe, saved to ``path`` (if given) after each change."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self.coco: dict[str, Any] = {"images": [], "annotations": [], "categories": []}
        if self.path is not None and self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text())
            except (OSError, ValueError) as e:
                raise InputError(f"cannot continue {self.path}: not a readable COCO JSON ({e})") from e
            if not all(isinstance(loaded.get(k), list) for k in self.coco):
                raise InputError(
                    f"cannot continue {self.path}: it has no images/annotations/categories lists"
                )
            self.coco = {**loaded, **{k: loaded[k] for k in self.coco}}
        elif self.path is not None:
            self._save()  # fail now (not after the first click) if the file cannot be written

    def _save(self) -> None:
        if self.path is not None:
            atomic_write_json(self.path, self.coco)

    def _image_id(self, file_name: str, size: tuple[int, int]) -> int:
        for image in self.coco["images"]:
            if image["file_name"] == file_name:
                return image["id"]
        image_id = 1 + max((i["id"] for i in self.coco["images"]), default=0)
        self.coco["images"].append(
            {"id": image_id, "file_name": file_name, "height": size[0], "width": size[1]}
        )
        return image_id

    def _category_id(self, label: str) -> int:
        for category in self.coco["categories"]:
            if category["name"] == label:
                return category["id"]
        category_id = 1 + max((c["id"] for c in self.coco["categories"]), default=0)
        self.coco["categories"].append({"id": category_id, "name": label, "supercategory": ""})
        return category_id

    def add(
        self, file_name: str, rle: dict[str, Any], label: str, score: float | None = None
    ) -> dict[str, Any]:
        """Keep the mask ``rle`` (uncompressed ``{'size': [H, W], 'counts': [...]}``) of ``file_name`` as an
        object of category ``label``; returns the annotation (its ``segmentation`` compressed RLE)."""
        label = label.strip() or "object"
        try:
            mask = rle_to_mask(rle)
        except (ValueError, TypeError, KeyError) as e:
            raise InputError(f"bad mask RLE: {e}") from e
        area = rle_area(rle["counts"])
        if area == 0:
            raise InputError("the mask is empty: nothing to keep")
        h, w = mask.shape
        with self._lock:
            annotation = {
                "id": 1 + max((a["id"] for a in self.coco["annotations"]), default=0),
                "image_id": self._image_id(file_name, (h, w)),
                "category_id": self._category_id(label),
                "segmentation": rle_to_coco(rle),
                "area": area,
                "bbox": _bbox(mask),
                "iscrowd": 0,
            }
            if score is not None:
                annotation["score"] = float(score)
            self.coco["annotations"].append(annotation)
            self._save_or_undo(lambda: self.coco["annotations"].remove(annotation))
        return annotation

    def remove(self, annotation_id: int) -> None:
        """Delete annotation ``annotation_id`` (InputError if there is none)."""
        with self._lock:
            kept = [a for a in self.coco["annotations"] if a["id"] != annotation_id]
            if len(kept) == len(self.coco["annotations"]):
                raise InputError(f"no annotation with id {annotation_id}")
            before = self.coco["annotations"]
            self.coco["annotations"] = kept
            self._save_or_undo(lambda: self.coco.__setitem__("annotations", before))

    def _save_or_undo(self, undo: Any) -> None:
        try:
            self._save()
        except OutputError:
            undo()
            raise

    def objects(self, file_name: str) -> list[dict[str, Any]]:
        """The annotations of ``file_name``, each with its ``label`` and uncompressed ``rle``."""
        with self._lock:
            ids = {i["id"] for i in self.coco["images"] if i["file_name"] == file_name}
            names = {c["id"]: c["name"] for c in self.coco["categories"]}
            return [
                {**a, "label": names.get(a["category_id"], ""), "rle": coco_to_rle(a["segmentation"])}
                for a in self.coco["annotations"]
                if a["image_id"] in ids
            ]

    def counts(self) -> dict[str, int]:
        """Number of annotations per image file name."""
        with self._lock:
            names = {i["id"]: i["file_name"] for i in self.coco["images"]}
            out: dict[str, int] = {}
            for a in self.coco["annotations"]:
                name = names.get(a["image_id"], "")
                out[name] = out.get(name, 0) + 1
            return out

    def snapshot(self) -> dict[str, Any]:
        """A copy of the COCO dict."""
        with self._lock:
            return json.loads(json.dumps(self.coco))
