"""Segment everything: a grid of point prompts -> filtered, de-duplicated masks for the whole image.

:class:`MaskGenerator` computes what the official ``SamAutomaticMaskGenerator`` computes (same settings,
same records), faster: masks are filtered by predicted IoU while still 256x256 logits (the official
upsamples every candidate to the original size first), only survivors are upsampled, a few at a time,
and the stability score, boxes and run-length codes are computed vectorised from those.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .candidates import OUTPUT_MODES, CropFrame, MaskCandidates
from .errors import InputError
from .modeling.sam import PromptableModel
from .predictor import ImageState, Prediction, Predictor
from .prompt_sources import BoxSource, Columns, GridSource, PromptSource
from .prompts import Prompts
from .runtimes import Backend
from .utils.amg import (
    batched_nms,
    box_area,
    box_near_crop_edge,
    mask_to_rle,
    masks_to_boxes,
    remove_small_regions,
    rle_to_mask,
)
from .utils.image import ImageInput, load_image
from .utils.masks import stability_score

# Masks upsampled to the original size at once: 4 of the 1024x1024 float temporaries (4 MiB each) stay
# within the allocator's reusable heap (see litesam.utils.allocator): 2.5x faster than 16 at a time.
_UPSAMPLE_CHUNK = 4
# The official generator's defaults of the settings a source may change (``generator_defaults``).
DEFAULTS = {
    "points_per_batch": 64,
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.95,
    "box_nms_thresh": 0.7,
}
Settings = dict[str, float]


class MaskGenerator:
    """Masks for everything in an image, from a grid of single-point prompts (optionally on crops too).

    Settings and defaults are the official ``SamAutomaticMaskGenerator``'s:

    - ``points_per_side``: grid points per image side (``points_per_side**2`` prompts), or None with
      explicit ``point_grids`` (one Nx2 array of (x, y) in [0, 1] per crop layer).
    - ``points_per_batch``: prompts decoded together (memory vs speed).
    - ``pred_iou_thresh``: keep masks whose predicted IoU is > this (0 or less: no filter).
    - ``stability_score_thresh``: keep masks whose stability score (IoU of the masks thresholded at
      ±``stability_score_offset`` logits around the mask threshold) is >= this (0 or less: no filter).
    - ``box_nms_thresh``: box IoU above which the lower-scored of two masks of one crop is dropped.
    - ``crop_n_layers``: extra crop layers; layer i cuts the image into ``2**i x 2**i`` overlapping crops
      (overlap ``crop_overlap_ratio`` of the short side in layer 1, halved per layer) and runs again on
      each with ``points_per_side / crop_n_points_downscale_factor**i`` points per side.
    - ``crop_nms_thresh``: box IoU above which duplicates across crops are dropped (smaller crops win).
    - ``min_mask_region_area``: if > 0, fill holes and delete islands smaller than this many pixels,
      then de-duplicate again.
    - ``output_mode``: ``"binary_mask"`` (HxW bool array), ``"uncompressed_rle"`` or ``"coco_rle"``.
    - ``progress``: show a progress bar over the decoded batches.
    - ``backend``, ``precision``: what runs the model (:class:`~litesam.Predictor`'s: ``"torch"``,
      ``"onnxruntime"``, ``"openvino"``).
    - ``**source_options``: settings of the model's own everything source, for models that offer one
      (``model.everything_source``), which then replaces the grid: FastSAM's and MobileSAM-v2's
      ``conf=0.4``, ``iou=0.9``, ``max_det=300``. Masks of a source that segments by itself are kept as
      it gives them (only ``min_mask_region_area`` applies).

    ``points_per_batch``, ``pred_iou_thresh``, ``stability_score_thresh`` and ``box_nms_thresh`` left at
    None take the source's ``generator_defaults`` where it has them (MobileSAM-v2's detector source: 320
    boxes per batch, no filters, no NMS), else the official values (64, 0.88, 0.95, 0.7). A source with
    ``for_image(rgb)`` depends on the image (a detector) and gives the image's own source; one with
    ``sort_by_area`` gets its records largest first.

    ``generate(image)`` returns one dict per mask: ``segmentation``, ``area`` (pixels), ``bbox`` (XYWH
    ints), ``predicted_iou``, ``point_coords`` ([[x, y]] pixels), ``stability_score``, ``crop_box`` (XYWH).
    """

    def __init__(
        self,
        model: PromptableModel,
        points_per_side: int | None = 32,
        points_per_batch: int | None = None,
        pred_iou_thresh: float | None = None,
        stability_score_thresh: float | None = None,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float | None = None,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Sequence[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        progress: bool = False,
        backend: str | Backend = "torch",
        precision: str | None = None,
        **source_options: Any,
    ) -> None:
        if points_per_batch is not None:
            _check_int("points_per_batch", points_per_batch, 1)
        _check_int("crop_n_layers", crop_n_layers, 0)
        _check_int("crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1)
        _check_int("min_mask_region_area", min_mask_region_area, 0)
        for name, value in (
            ("pred_iou_thresh", pred_iou_thresh),
            ("stability_score_thresh", stability_score_thresh),
            ("stability_score_offset", stability_score_offset),
        ):
            if value is not None and not np.isfinite(value):
                raise InputError(f"{name} must be a finite number, got {value!r}")
        for name, value in (("box_nms_thresh", box_nms_thresh), ("crop_nms_thresh", crop_nms_thresh)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must be in [0, 1] (1 keeps every mask), got {value!r}")
        if output_mode not in OUTPUT_MODES:
            raise InputError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
        if (points_per_side is None) == (point_grids is None):
            raise InputError("give exactly one of points_per_side and point_grids")
        if points_per_side is not None:
            _check_int("points_per_side", points_per_side, 1)
            self.grid = GridSource.regular(
                points_per_side,
                crop_n_layers,
                crop_n_points_downscale_factor,
                crop_overlap_ratio=crop_overlap_ratio,
            )
        else:
            grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
            self.grid = GridSource(grids, crop_n_layers, crop_overlap_ratio)
        self.default_source: PromptSource | None = None
        if callable(getattr(model, "everything_source", None)):
            self.default_source = model.everything_source(**source_options)
        elif source_options:
            raise InputError(f"unexpected keyword arguments: {', '.join(sorted(source_options))}")
        self.predictor = Predictor(model, backend, precision)
        self.settings = {
            k: v
            for k, v in (
                ("points_per_batch", points_per_batch),
                ("pred_iou_thresh", pred_iou_thresh),
                ("stability_score_thresh", stability_score_thresh),
                ("box_nms_thresh", box_nms_thresh),
            )
            if v is not None
        }
        self.stability_score_offset = stability_score_offset
        self.crop_nms_thresh = crop_nms_thresh
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.progress = progress

    @torch.inference_mode()
    def generate(
        self,
        image: ImageInput,
        boxes: Any = None,
        source: PromptSource | None = None,
        state: ImageState | None = None,
    ) -> list[dict[str, Any]]:
        """Masks for everything in ``image`` (a path, PIL image or HxWx3 array): records as documented
        on the class, in descending order of predicted IoU within each crop.

        ``boxes`` (Kx4 XYXY image pixels, e.g. from a detector) replaces the point grid and the crops:
        one mask per box (``multimask_output=False``), same filters and NMS, ``point_coords`` = the box
        centre (MobileSAM-v2's box-prompted segment everything). ``source`` takes any other
        :class:`~litesam.prompt_sources.PromptSource`. ``state``: ``image`` already encoded by this
        model (``Predictor.encode``), used for the whole-image crop instead of encoding it again.
        """
        if boxes is not None and source is not None:
            raise InputError("give boxes or a prompt source, not both")
        rgb = load_image(image)
        size = (rgb.shape[0], rgb.shape[1])
        if source is None:
            source = BoxSource(boxes) if boxes is not None else self.default_source or self.grid
        settings = self.settings_for(source)
        candidates = self.candidates(rgb, source, state)
        if self.min_mask_region_area > 0:
            candidates = self.remove_small_regions(candidates, size, settings["box_nms_thresh"])
        if getattr(source, "sort_by_area", False):
            candidates = candidates.select(torch.argsort(candidates.areas(), descending=True, stable=True))
        return candidates.records(size, self.output_mode)

    def settings_for(self, source: Any) -> Settings:
        """The batch size and filter settings used with ``source``: the generator's own, else the
        source's ``generator_defaults``, else the official defaults."""
        return {**DEFAULTS, **getattr(source, "generator_defaults", {}), **self.settings}

    def candidates(self, rgb: np.ndarray, source: Any, state: ImageState | None = None) -> MaskCandidates:
        """HxWx3 uint8 RGB -> the de-duplicated masks of all of ``source``'s crops (before small-region
        removal); a source with ``for_image`` is first asked for the image's own source. ``state``: the
        whole image already encoded (see :meth:`generate`)."""
        settings = self.settings_for(source)
        if callable(getattr(source, "for_image", None)):
            source = source.for_image(rgb)
        frames = source.crops((rgb.shape[0], rgb.shape[1]))
        if callable(getattr(source, "segment", None)):  # segments by itself: no prompts to decode
            return MaskCandidates.concat(
                [source.segment(self._encode(rgb, frame, state).features, frame) for frame in frames]
            )
        prompts = [source.prompts(frame) for frame in frames]
        batch = int(settings["points_per_batch"])
        n_batches = sum(-(-len(p) // batch) for p, _ in prompts)
        with tqdm(total=n_batches, disable=not self.progress, desc="masks", unit="batch") as bar:
            parts = [
                self._crop_candidates(
                    self._encode(rgb, frame, state),
                    frame,
                    crop_prompts,
                    columns,
                    source.multimask_output,
                    settings,
                    bar.update,
                )
                for frame, (crop_prompts, columns) in zip(frames, prompts, strict=True)
            ]
        candidates = MaskCandidates.concat(parts)
        if len(frames) > 1 and len(candidates):  # duplicates between crops: prefer masks from smaller crops
            scores = 1 / box_area(candidates["crop_boxes"])
            keep = batched_nms(
                candidates["boxes"].float(), scores, torch.zeros(len(candidates)), self.crop_nms_thresh
            )
            candidates = candidates.select(keep)
        return candidates

    def _encode(self, rgb: np.ndarray, frame: CropFrame, state: ImageState | None) -> ImageState:
        """The encoded crop ``frame`` of ``rgb``: ``state`` where it is the whole image, else encoded."""
        if state is not None and frame.size == frame.image_size == state.original_size:
            return state
        return self.predictor.encode(frame.crop(rgb))

    def _crop_candidates(
        self,
        state: ImageState,
        frame: CropFrame,
        prompts: Prompts,
        columns: Columns,
        multimask_output: bool,
        settings: Settings,
        on_batch: Callable[[], Any],
    ) -> MaskCandidates:
        """Decode the encoded crop's prompts ``points_per_batch`` at a time, filter, de-duplicate."""
        parts = []
        batch = int(settings["points_per_batch"])
        min_score = settings["pred_iou_thresh"] if settings["pred_iou_thresh"] > 0.0 else None
        for start in range(0, len(prompts), batch):
            part = slice(start, start + batch)
            prediction = self.predictor.decode(state, prompts[part], multimask_output, min_score=min_score)
            crop_columns = {k: v[part] for k, v in columns.items()}
            parts.append(self.filter_masks(prediction, crop_columns, frame, settings))
            on_batch()
        candidates = MaskCandidates.concat(parts)
        if not len(candidates):
            return candidates
        keep = batched_nms(
            candidates["boxes"].float(),
            candidates["iou_preds"],
            torch.zeros(len(candidates)),
            settings["box_nms_thresh"],
        )
        return candidates.select(keep)

    def filter_masks(
        self, prediction: Prediction, columns: Columns, frame: CropFrame, settings: Settings
    ) -> MaskCandidates:
        """B decoded prompts (M masks each) with their per-prompt columns (B rows: ``points``, Bx2 crop
        pixels, and any others) -> the masks passing the IoU, stability and crop-edge filters, in the
        image frame, run-length encoded; each mask inherits its prompt's columns.

        The IoU filter runs first, on the low-res logits; only survivors are upsampled (in chunks) for
        the stability score, the thresholded mask and its box. ``settings``: :meth:`settings_for` the
        source.
        """
        pred_iou_thresh, stability_thresh = settings["pred_iou_thresh"], settings["stability_score_thresh"]
        per_prompt = prediction.low_res.shape[1]
        low_res = prediction.low_res.flatten(0, 1)
        iou_preds = prediction.scores.flatten(0, 1).cpu()
        columns = {k: v.repeat_interleave(per_prompt, dim=0) for k, v in columns.items()}
        if pred_iou_thresh > 0.0:
            keep = iou_preds > pred_iou_thresh
            low_res, iou_preds = low_res[keep.to(low_res.device)], iou_preds[keep]
            columns = {k: v[keep] for k, v in columns.items()}
        if low_res.shape[0] == 0:
            return MaskCandidates()
        threshold = self.predictor.mask_threshold
        state = prediction.state
        size_t = state.original_size[::-1]  # (W, H)
        passed, masks_t, stability = [], [], []
        for chunk in low_res.split(_UPSAMPLE_CHUNK):
            # Upsampled transposed (K x W x H): the run-length codes read pixels column by column, which
            # is then memory order (no transposing copy); the transform resizes each axis on its own.
            logits = state.transform.postprocess_masks(chunk[:, None].transpose(-1, -2), size_t)[:, 0].cpu()
            score = stability_score(logits, threshold, self.stability_score_offset)
            if stability_thresh > 0.0:
                ok = score >= stability_thresh
                logits, score = logits[ok], score[ok]
            else:
                ok = torch.ones_like(score, dtype=torch.bool)
            passed.append(ok)
            masks_t.append(logits > threshold)
            stability.append(score)
        keep = torch.cat(passed)
        masks_t, stability = torch.cat(masks_t), torch.cat(stability)
        h, w = frame.image_size
        boxes = masks_to_boxes(masks_t)[:, [1, 0, 3, 2]]  # transposed (y, x) boxes -> XYXY
        inside = ~box_near_crop_edge(boxes, list(frame.box), [0, 0, w, h])
        kept = {"iou_preds": iou_preds[keep], **{k: v[keep] for k, v in columns.items()}}
        return MaskCandidates.from_masks(
            (masks_t if bool(inside.all()) else masks_t[inside]).transpose(1, 2),  # HxW views
            frame,
            boxes[inside],
            stability=stability[inside],
            **{k: v[inside] for k, v in kept.items()},
        )

    def remove_small_regions(
        self, candidates: MaskCandidates, image_size: tuple[int, int], box_nms_thresh: float
    ) -> MaskCandidates:
        """Fill small holes and delete small islands (``min_mask_region_area``), then drop new duplicates
        by box NMS (the larger of ``box_nms_thresh`` and ``crop_nms_thresh``) that prefers unchanged masks.
        Changed masks get new RLEs and boxes."""
        if len(candidates) == 0:
            return candidates
        masks, unchanged = [], []
        for counts in candidates.rles:
            mask = rle_to_mask({"size": list(image_size), "counts": counts})
            mask, holes_changed = remove_small_regions(mask, self.min_mask_region_area, "holes")
            mask, islands_changed = remove_small_regions(mask, self.min_mask_region_area, "islands")
            masks.append(torch.from_numpy(mask))
            unchanged.append(not (holes_changed or islands_changed))
        stacked = torch.stack(masks)
        boxes = masks_to_boxes(stacked)
        scores = torch.tensor(unchanged, dtype=torch.float)
        nms_thresh = max(box_nms_thresh, self.crop_nms_thresh)
        keep = batched_nms(boxes.float(), scores, torch.zeros(len(boxes)), nms_thresh)
        changed = [i for i in keep.tolist() if not unchanged[i]]
        updated = candidates.replace_masks(changed, mask_to_rle(stacked[changed]), boxes[changed])
        return updated.select(keep)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
