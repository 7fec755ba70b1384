"""Interactive prediction: encode an image once, then decode masks for any number of prompts."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from .modeling.sam import Sam
from .utils.image import ImageInput, load_image


class Predictor:
    """Point/box/mask prompting on one image at a time, with the official SAM predictor's numbers.

    ``set_image`` runs the heavy image encoder once; each ``predict`` runs only the prompt encoder and
    the mask decoder. Works with every model of the registry (they share :class:`~litesam.modeling.Sam`'s
    interface).
    """

    def __init__(self, model: Sam) -> None:
        self.model = model.eval()
        self.transform = model.transform
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None

    @property
    def is_image_set(self) -> bool:
        return self.features is not None

    @torch.inference_mode()
    def set_image(self, image: ImageInput, image_format: str = "RGB") -> None:
        """Encode an image: a path, a PIL image or an HxW[xC] array (uint8/uint16/float; gray, RGB, RGBA).

        ``image_format="BGR"`` flips the channels of an array (e.g. from OpenCV).
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        rgb = load_image(image)
        if image_format == "BGR":
            rgb = np.ascontiguousarray(rgb[..., ::-1])
        resized = self.transform.apply_image(rgb)
        pixels = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None].float()
        self.reset_image()
        self.features = self.model.image_encoder(self.model.preprocess(pixels))
        self.original_size = (rgb.shape[0], rgb.shape[1])
        self.input_size = (resized.shape[0], resized.shape[1])

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's embedding, 1x256x64x64."""
        return self._require_image()

    @torch.inference_mode()
    def predict(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt set, in original-image pixels.

        point_coords: Nx2 (x, y) pixels with point_labels N (1 foreground, 0 background); box: XYXY
        pixels; mask_input: 1x256x256 low-res logits from a previous call. Returns masks Mx H x W (bool,
        or float logits with ``return_logits``), scores M (predicted IoU) and low-res logits Mx256x256;
        M = 3 with ``multimask_output`` else 1.
        """
        self._require_image()
        coords, labels = self._check_points(point_coords, point_labels)
        boxes = self._check_boxes(box, single=True)
        mask = self._check_mask(mask_input)
        if coords is None and boxes is None and mask is None:
            raise ValueError("no prompt given: pass point_coords/point_labels, a box, or a mask_input")
        coords_t = labels_t = boxes_t = mask_t = None
        if coords is not None:
            frame = self.transform.apply_coords(coords, self.original_size)
            coords_t = torch.as_tensor(frame, dtype=torch.float, device=self.device)[None]
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)[None]
        if boxes is not None:
            frame = self.transform.apply_boxes(boxes, self.original_size)
            boxes_t = torch.as_tensor(frame, dtype=torch.float, device=self.device)
        if mask is not None:
            mask_t = torch.as_tensor(mask, dtype=torch.float, device=self.device)[None]
        masks, scores, low_res = self._decode(
            coords_t, labels_t, boxes_t, mask_t, multimask_output, return_logits
        )
        return masks[0].numpy(), scores[0].numpy(), low_res[0].numpy()

    @torch.inference_mode()
    def predict_batch(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        boxes: ArrayLike | None = None,
        multimask_output: bool = False,
        return_logits: bool = False,
        batch_size: int = 64,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for K independent prompts at once (decoded ``batch_size`` at a time).

        point_coords: KxNx2 with point_labels KxN and/or boxes Kx4, original-image pixels. Returns masks
        KxMxHxW, scores KxM and low-res logits KxMx256x256.
        """
        self._require_image()
        coords = labels = None
        if point_coords is not None or point_labels is not None:
            coords = _as_float_array(point_coords, "point_coords")
            labels = np.asarray(point_labels) if point_labels is not None else None
            if coords.ndim != 3 or coords.shape[-1] != 2:
                raise ValueError(f"point_coords for predict_batch must be KxNx2, got shape {coords.shape}")
            if labels is None or labels.shape != coords.shape[:2]:
                got = None if labels is None else labels.shape
                raise ValueError(f"point_labels must have shape {coords.shape[:2]} (KxN), got {got}")
            for k in range(coords.shape[0]):
                self._check_points(coords[k], labels[k])
        box_arr = self._check_boxes(boxes, single=False)
        count = [a.shape[0] for a in (coords, box_arr) if a is not None]
        if not count:
            raise ValueError("no prompt given: pass point_coords/point_labels and/or boxes")
        if len(count) == 2 and count[0] != count[1]:
            raise ValueError(f"{count[0]} point sets but {count[1]} boxes: they must pair up one to one")
        outputs = []
        for start in range(0, count[0], batch_size):
            part = slice(start, start + batch_size)
            coords_t = labels_t = boxes_t = None
            if coords is not None:
                pts = torch.as_tensor(coords[part], dtype=torch.float, device=self.device)
                coords_t = self.transform.apply_coords_torch(pts, self.original_size)
                labels_t = torch.as_tensor(labels[part], dtype=torch.int, device=self.device)
            if box_arr is not None:
                b = torch.as_tensor(box_arr[part], dtype=torch.float, device=self.device)
                boxes_t = self.transform.apply_boxes_torch(b, self.original_size)
            outputs.append(self._decode(coords_t, labels_t, boxes_t, None, multimask_output, return_logits))
        return tuple(torch.cat(parts).numpy() for parts in zip(*outputs, strict=True))  # type: ignore[return-value]

    def _decode(
        self,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
        return_logits: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low_res, scores = self.model.decode(
            self.features, coords, labels, boxes, mask_input, multimask_output
        )
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks.cpu(), scores.cpu(), low_res.cpu()

    def _require_image(self) -> torch.Tensor:
        if self.features is None:
            raise RuntimeError("no image set: call predictor.set_image(image) before predicting")
        return self.features

    def _check_points(self, coords: Any, labels: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
        if coords is None and labels is None:
            return None, None
        if coords is None or labels is None:
            raise ValueError("point_coords and point_labels must be given together")
        coords = _as_float_array(coords, "point_coords")
        labels = np.asarray(labels)
        if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
            raise ValueError(f"point_coords must be Nx2 (x, y) with N >= 1, got shape {coords.shape}")
        if labels.shape != (coords.shape[0],):
            raise ValueError(f"point_labels must have shape ({coords.shape[0]},), got {labels.shape}")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"point_labels must be 1 (foreground) or 0 (background), got {labels.tolist()}")
        h, w = self.original_size
        outside = (coords[:, 0] < 0) | (coords[:, 0] > w) | (coords[:, 1] < 0) | (coords[:, 1] > h)
        if outside.any():
            x, y = coords[np.argmax(outside)]
            raise ValueError(f"point ({x:g}, {y:g}) is outside the image (width {w}, height {h})")
        return coords, labels

    def _check_boxes(self, box: Any, single: bool) -> np.ndarray | None:
        if box is None:
            return None
        boxes = _as_float_array(box, "box")
        if single and boxes.shape == (4,):
            boxes = boxes[None]
        if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] == 0 or (single and boxes.shape[0] != 1):
            want = "4 numbers (x0, y0, x1, y1)" if single else "Kx4 (x0, y0, x1, y1)"
            raise ValueError(f"box must be {want}, got shape {boxes.shape}")
        h, w = self.original_size
        for x0, y0, x1, y1 in boxes:
            if x0 > x1 or y0 > y1:
                raise ValueError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) must have x0 <= x1 and y0 <= y1")
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                raise ValueError(
                    f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) reaches outside the image (width {w}, height {h})"
                )
        return boxes

    def _check_mask(self, mask_input: Any) -> np.ndarray | None:
        if mask_input is None:
            return None
        if isinstance(mask_input, torch.Tensor):
            mask_input = mask_input.detach().cpu().numpy()
        mask = np.asarray(mask_input, dtype=np.float32)
        side = 4 * self.features.shape[-1]
        if mask.shape == (side, side):
            mask = mask[None]
        if mask.shape != (1, side, side):
            raise ValueError(
                f"mask_input must be 1x{side}x{side} low-res logits (a previous call's output), "
                f"got {mask.shape}"
            )
        return mask


def _as_float_array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric, got {value!r}") from e
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr
