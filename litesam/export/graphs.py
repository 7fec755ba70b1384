"""The modules that ``litesam.export`` traces: a model's encoder, the official SAM ONNX decoder interface,
and the prompt decoders the ONNX Runtime / OpenVINO backends run.

Everything model-specific comes from the model's public interface (:class:`~litesam.modeling.sam.
PromptableModel`: ``transform``, ``encode``, ``decode``; ``decode_onnx`` for the official interface).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..modeling.sam import PromptableModel
from ..prompts import Prompts
from ..utils.transforms import ImageTransform

# The official SAM ONNX decoder's inputs and outputs, in order (segment_anything/utils/onnx.py).
OFFICIAL_INPUTS = ("point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")
OFFICIAL_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")


def check_exportable(model: PromptableModel) -> None:
    """InputError unless ``model`` decodes at a fixed size (instance segmenters such as FastSAM assemble
    their masks at each image's own resolution: nothing there fits a fixed ONNX graph)."""
    if model.transform.resize == "letterbox":
        raise InputError(
            f"{type(model).__name__} segments whole images at their own size (an instance segmenter):"
            " only promptable SAM-like models export to ONNX"
        )


class EncoderGraph(nn.Module):
    """``image`` 1x3xSxS (the transform's encoder input) -> the encoder's named features, in the order
    ``model.encode`` gives them (``names`` is filled by the first call)."""

    def __init__(self, model: PromptableModel) -> None:
        super().__init__()
        self.model = model
        self.names: list[str] = []

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.encode(image)
        self.names = list(features)
        return tuple(features.values())


class OfficialDecoderGraph(nn.Module):
    """The official SAM ONNX decoder (``SamOnnxModel``): encoder features (``image_embeddings`` first,
    then any extras), point_coords 1xNx2 float in the prompt frame (coordinates already transformed as
    ``ResizeLongestSide`` does), point_labels 1xN float (-1 padding point, 0/1, 2/3 box corners),
    mask_input 1x1x256x256, has_mask_input [1], orig_im_size [2] (H, W) -> masks 1xMxHxW logits over the
    original image, iou_predictions 1xM, low_res_masks 1xMx256x256.

    M: every mask token of the decoder, or 1 with ``return_single_mask`` (the multimask pick for up to
    two points incl. padding, token 0 otherwise, as the official graph picks without control flow).
    """

    def __init__(
        self, model: PromptableModel, feature_names: Sequence[str], return_single_mask: bool
    ) -> None:
        super().__init__()
        self.model = model  # with decode_onnx (SAM's prompt encoder)
        self.feature_names = list(feature_names)
        self.return_single_mask = return_single_mask

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = len(self.feature_names)
        features = dict(zip(self.feature_names, inputs[:k], strict=True))
        point_coords, point_labels, mask_input, has_mask_input, orig_im_size = inputs[k:]
        low_res, scores = self.model.decode_onnx(
            features, point_coords, point_labels, mask_input, has_mask_input
        )
        if self.return_single_mask and low_res.shape[1] > 1:
            low_res, scores = select_single_mask(low_res, scores, point_coords.shape[1])
        return postprocess(low_res, orig_im_size, self.model.transform), scores, low_res


def select_single_mask(
    masks: torch.Tensor, scores: torch.Tensor, num_points: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """BxMxhxw, BxM -> the one mask per prompt the official graph returns: with at most two points (one
    click + padding) the best-scored of tokens 1.., else token 0 (a +-1000 weight on token 0, no
    branches)."""
    weight = torch.zeros(scores.shape[1], dtype=scores.dtype, device=scores.device)
    weight[0] = 1000.0
    best = torch.argmax(scores + (num_points - 2.5) * weight, dim=1)
    rows = torch.arange(masks.shape[0], device=masks.device)
    return masks[rows, best][:, None], scores[rows, best][:, None]


def postprocess(masks: torch.Tensor, orig_im_size: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
    """Low-res logits over the prompt frame -> logits over an orig_im_size (H, W) image, as
    ``transform.postprocess_masks`` computes it, with the size a traced input (float (H, W))."""
    mode = transform.mask_interpolation
    size = orig_im_size.to(torch.int64)
    if transform.resize == "stretch":  # the frame is the whole image
        return F.interpolate(masks, size=(size[0], size[1]), mode=mode, align_corners=False)
    frame = transform.frame_size
    masks = F.interpolate(masks, size=(frame, frame), mode=mode, align_corners=False)
    scaled = orig_im_size.to(torch.float32) * (frame / orig_im_size.to(torch.float32).max())
    h, w = torch.floor(scaled + 0.5).to(torch.int64)
    return F.interpolate(masks[..., :h, :w], size=(size[0], size[1]), mode=mode, align_corners=False)


@dataclass(frozen=True)
class PromptKind:
    """Which prompt fields a decoder graph takes, and whether it returns several masks per prompt: one
    graph per kind, each with any number of prompts B and points N."""

    points: bool
    boxes: bool
    mask: bool
    multimask_output: bool

    @classmethod
    def of(cls, prompts: Prompts, multimask_output: bool) -> PromptKind:
        return cls(prompts.points is not None, prompts.boxes is not None, prompts.mask is not None,
                   bool(multimask_output))  # fmt: skip

    @property
    def name(self) -> str:
        """File-name part: e.g. ``points-boxes-multi``."""
        given = [f for f, on in (("points", self.points), ("boxes", self.boxes), ("mask", self.mask)) if on]
        return "-".join([*given, "multi" if self.multimask_output else "single"])

    @property
    def inputs(self) -> list[str]:
        """Graph inputs after the features: point_coords BxNx2 float64 and point_labels BxN int64,
        boxes Bx4 float64, mask_input Bx1x256x256 float32, each where given."""
        names = ["point_coords", "point_labels"] if self.points else []
        return names + ["boxes"] * self.boxes + ["mask_input"] * self.mask

    def tensors(self, prompts: Prompts) -> list[torch.Tensor]:
        """``prompts`` (prompt frame) as this kind's graph inputs."""
        values = {"point_coords": prompts.points, "point_labels": prompts.labels, "boxes": prompts.boxes,
                  "mask_input": prompts.mask}  # fmt: skip
        dtypes = {"point_coords": torch.float64, "point_labels": torch.int64, "boxes": torch.float64,
                  "mask_input": torch.float32}  # fmt: skip
        return [values[n].to(dtypes[n]) for n in self.inputs]

    def prompts(self, tensors: Sequence[torch.Tensor]) -> Prompts:
        """This kind's graph inputs (in :attr:`inputs` order) as Prompts."""
        given = dict(zip(self.inputs, tensors, strict=True))
        return Prompts(
            points=given.get("point_coords"),
            labels=given.get("point_labels"),
            boxes=given.get("boxes"),
            mask=given.get("mask_input"),
        )

    def example(self, batch: int = 2, points: int = 3, mask_side: int = 256) -> list[torch.Tensor]:
        """Trace inputs: ``batch`` prompt sets of ``points`` points (sizes other than 1, so that the
        tracer keeps them symbolic)."""
        prompts = Prompts(
            points=torch.rand(batch, points, 2, dtype=torch.float64) * 500 if self.points else None,
            labels=torch.ones(batch, points, dtype=torch.int64) if self.points else None,
            boxes=torch.tensor([[100.0, 120.0, 400.0, 380.0]] * batch, dtype=torch.float64)
            if self.boxes
            else None,
            mask=torch.randn(batch, 1, mask_side, mask_side) if self.mask else None,
        )
        return self.tensors(prompts)


class PromptDecoderGraph(nn.Module):
    """``model.decode`` as a graph for one :class:`PromptKind`: the features (batch 1), then the kind's
    prompt inputs in the prompt frame -> low_res_masks BxMx256x256, scores BxM."""

    def __init__(self, model: PromptableModel, feature_names: Sequence[str], kind: PromptKind) -> None:
        super().__init__()
        self.model = model
        self.feature_names = list(feature_names)
        self.kind = kind

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = len(self.feature_names)
        features = dict(zip(self.feature_names, inputs[:k], strict=True))
        return self.model.decode(features, self.kind.prompts(inputs[k:]), self.kind.multimask_output)
