"""Zero-shot edge detection with any model of the zoo, as in the SAM paper (§7.2, appendix D.2) and the
RepViT-SAM evaluation that follows it.

Steps (every parameter is an argument of :class:`EdgeDetector`):

1. **Prompts** — a ``points_per_side`` x ``points_per_side`` regular grid of foreground points (default 16,
   cell centres, as the automatic mask generator's grid), decoded ``points_per_batch`` at a time with three
   masks per point: 768 candidate masks by default. No predicted-IoU or stability filtering.
2. **Mask NMS** — redundant masks are removed by non-maximum suppression on the boxes of the binary masks
   (logits > ``model.mask_threshold`` at the original size), scored by predicted IoU, IoU threshold
   ``nms_thresh`` (default 0.7).
3. **Sobel** — each kept mask's unthresholded probability map (sigmoid of the logits upsampled to the
   original size) is filtered with the 3x3 Sobel pair (replicate padding, kernels scaled by 1/8 so a unit
   step gives magnitude 0.5). With ``boundary_only`` (default on) the magnitude is zeroed except on the
   mask's boundary band: pixels whose 3x3 neighbourhood holds both mask and background pixels — our
   reading of the paper's "set values to zero if they do not intersect with the outer boundary pixels of a
   mask".
4. **Max** — per pixel, the largest magnitude over all kept masks (and that mask's gradient direction).
5. **Normalise** — linearly to [0, 1] (divided by the maximum).
6. **Edge NMS** (thinning) — a pixel survives only if its value times ``nms_slack`` (default 1.01, so ties
   survive) is not below the values bilinearly sampled at distances 1..``nms_radius`` (default 1 pixel) on
   both sides along its gradient direction; values within ``border`` pixels of the image edge (default 5)
   are faded linearly towards the edge, as in the structured-edge toolbox's edge NMS that the paper cites.

The result is an HxW float map in [0, 1]; :func:`edge_image` turns it into an 8-bit picture (white edges
on black).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import InputError
from .modeling.sam import PromptableModel
from .predictor import ImageState, Predictor
from .prompts import Prompts
from .utils.amg import batched_nms, build_point_grid, masks_to_boxes
from .utils.image import ImageInput

# Masks handled at the original size at once: bounds the full-size float temporaries (~6 per mask).
_FULL_SIZE_CHUNK = 16

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def sobel(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NxHxW maps -> (gx, gy), each NxHxW: 3x3 Sobel derivatives along x (columns) and y (rows).

    Replicate padding, so the image border itself is not an edge; kernels scaled by 1/8 (a unit step
    between two columns gives gx = 0.5 on both columns next to it).
    """
    kernels = torch.stack([_SOBEL_X, _SOBEL_X.T])[:, None].to(maps)
    padded = F.pad(maps[:, None], (1, 1, 1, 1), mode="replicate")
    grad = F.conv2d(padded, kernels)
    return grad[:, 0], grad[:, 1]


def boundary_band(masks: torch.Tensor) -> torch.Tensor:
    """NxHxW bool masks -> NxHxW bool: pixels whose 3x3 neighbourhood has both mask and background."""
    m = F.pad(masks[:, None].float(), (1, 1, 1, 1), mode="replicate")
    grown = F.max_pool2d(m, 3, stride=1)
    shrunk = -F.max_pool2d(-m, 3, stride=1)
    return (grown > shrunk)[:, 0]


def thin_edges(
    edges: torch.Tensor,
    gx: torch.Tensor,
    gy: torch.Tensor,
    radius: int = 1,
    slack: float = 1.01,
    border: int = 5,
) -> torch.Tensor:
    """Edge non-maximum suppression: HxW edge strengths -> HxW with only the ridge pixels kept.

    gx, gy: HxW gradient giving each pixel's edge normal. A pixel is zeroed when ``slack`` times its value
    is below the value bilinearly interpolated at distance d = 1..``radius`` pixels on either side along
    the normal. Then values within ``border`` pixels of the image edge are scaled by (distance / border).
    """
    h, w = edges.shape
    norm = torch.hypot(gx, gy).clamp_min(1e-12)
    nx, ny = gx / norm, gy / norm
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=edges.dtype), torch.arange(w, dtype=edges.dtype), indexing="ij"
    )
    keep = edges > 0
    for d in range(1, radius + 1):
        for sign in (1.0, -1.0):
            x = xs + sign * d * nx
            y = ys + sign * d * ny
            grid = torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], dim=-1)
            neighbour = F.grid_sample(
                edges[None, None], grid[None], mode="bilinear", padding_mode="border", align_corners=True
            )[0, 0]
            keep &= edges * slack >= neighbour
    thinned = torch.where(keep, edges, torch.zeros_like(edges))
    if border > 0:
        thinned = thinned * _border_ramp(h, border)[:, None] * _border_ramp(w, border)[None, :]
    return thinned


def _border_ramp(n: int, border: int) -> torch.Tensor:
    """n weights: distance to the nearer end (pixels) / border, capped at 1 (0 on the outermost pixels)."""
    i = torch.arange(n, dtype=torch.float32)
    return (torch.minimum(i, n - 1 - i) / border).clamp_max(1.0)


@dataclass
class EdgeResult:
    """Edges of one image: ``edges`` HxW float32 in [0, 1] after thinning, ``unthinned`` the normalised
    max-over-masks Sobel magnitude before it, and the mask counts of steps 1 and 2."""

    edges: np.ndarray
    unthinned: np.ndarray
    num_candidates: int
    num_kept: int


class EdgeDetector:
    """Zero-shot edge maps from a promptable segmentation model (see the module docstring for the steps).

    Memory: the 3 x ``points_per_side**2`` low-res logits are kept for the two passes (192 MiB at the
    default 768 masks); original-size maps are made ``_FULL_SIZE_CHUNK`` masks at a time.
    """

    def __init__(
        self,
        model: PromptableModel,
        points_per_side: int = 16,
        points_per_batch: int = 64,
        nms_thresh: float = 0.7,
        boundary_only: bool = True,
        nms_radius: int = 1,
        nms_slack: float = 1.01,
        border: int = 5,
    ) -> None:
        if points_per_side < 1 or points_per_batch < 1:
            raise InputError("points_per_side and points_per_batch must be >= 1")
        if not 0.0 < nms_thresh <= 1.0:
            raise InputError(f"nms_thresh must be in (0, 1], got {nms_thresh}")
        if nms_radius < 1 or border < 0 or nms_slack <= 0:
            raise InputError("nms_radius must be >= 1, border >= 0 and nms_slack > 0")
        self.predictor = Predictor(model)
        self.points_per_side = points_per_side
        self.points_per_batch = points_per_batch
        self.nms_thresh = nms_thresh
        self.boundary_only = boundary_only
        self.nms_radius = nms_radius
        self.nms_slack = nms_slack
        self.border = border

    @torch.inference_mode()
    def detect(self, image: ImageInput) -> EdgeResult:
        """An image (path, PIL image or HxW[x3] array) -> its edge maps at the original size."""
        state = self.predictor.encode(image)
        logits, scores = self._candidates(state)
        keep = self._mask_nms(state, logits, scores)
        strength, gx, gy = self._max_sobel(state, logits[keep])
        top = strength.max()
        unthinned = strength / top if top > 0 else strength
        edges = thin_edges(unthinned, gx, gy, self.nms_radius, self.nms_slack, self.border)
        return EdgeResult(edges.numpy(), unthinned.numpy(), len(scores), len(keep))

    def _candidates(self, state: ImageState) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 1: the point grid decoded with 3 masks per point -> (Kx256x256 low-res logits, K scores)."""
        h, w = state.original_size
        points = torch.from_numpy(build_point_grid(self.points_per_side) * np.array([w, h]))[:, None]
        prompts = Prompts(points=points, labels=torch.ones(len(points), 1, dtype=torch.int64))
        logits, scores = [], []
        for batch in prompts.split(self.points_per_batch):
            prediction = self.predictor.decode(state, batch, multimask_output=True)
            logits.append(prediction.low_res.flatten(0, 1).cpu())
            scores.append(prediction.scores.flatten().cpu())
        return torch.cat(logits), torch.cat(scores)

    def _upsample(self, state: ImageState, low_res: torch.Tensor) -> torch.Tensor:
        """Kx256x256 low-res logits -> KxHxW logits at the original image size."""
        return state.upscale(low_res[:, None].to(self.predictor.device))[:, 0].cpu()

    def _mask_nms(self, state: ImageState, logits: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Step 2: indices of the masks that survive box NMS on their binary masks' boxes."""
        threshold = self.predictor.mask_threshold
        boxes = torch.cat(
            [
                masks_to_boxes(self._upsample(state, part) > threshold)
                for part in logits.split(_FULL_SIZE_CHUNK)
            ]
        )
        return batched_nms(boxes.float(), scores, torch.zeros_like(scores), self.nms_thresh)

    def _max_sobel(
        self, state: ImageState, logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 3-4: Kx256x256 logits -> per-pixel max Sobel magnitude HxW and that mask's gx, gy."""
        h, w = state.original_size
        best = torch.zeros(h, w)
        best_gx, best_gy = torch.zeros(h, w), torch.zeros(h, w)
        threshold = self.predictor.mask_threshold
        for part in logits.split(_FULL_SIZE_CHUNK):
            up = self._upsample(state, part)
            gx, gy = sobel(torch.sigmoid(up))
            magnitude = torch.hypot(gx, gy)
            if self.boundary_only:
                magnitude = magnitude * boundary_band(up > threshold)
            value, index = magnitude.max(dim=0)
            wins = value > best
            best = torch.where(wins, value, best)
            best_gx = torch.where(wins, gx.gather(0, index[None])[0], best_gx)
            best_gy = torch.where(wins, gy.gather(0, index[None])[0], best_gy)
        return best, best_gx, best_gy


def edge_image(edges: np.ndarray) -> Image.Image:
    """HxW edge map in [0, 1] -> 8-bit grayscale picture, white edges on black."""
    return Image.fromarray(np.round(np.clip(edges, 0.0, 1.0) * 255).astype(np.uint8))
