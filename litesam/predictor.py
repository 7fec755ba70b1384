"""Interactive prediction: encode an image once, then decode masks for any number of prompts.

The core is stateless: ``state = predictor.encode(image)`` gives an immutable :class:`ImageState`, and
``predictor.decode(state, prompts)`` any number of times, from any thread, gives a :class:`Prediction`.
``set_image`` / ``predict`` / ``predict_batch`` are the official SAM predictor's drop-in interface on
top of them (they keep one current state).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from .errors import InputError
from .modeling.sam import PromptableModel
from .precision import autocast, to_float32
from .prompts import Prompts
from .runtimes import Backend, open_backend
from .utils.image import ImageInput, load_image
from .utils.transforms import ImageTransform


@dataclass(frozen=True)
class ImageState:
    """One encoded image: the encoder's named features (``"image_embeddings"``: 1x256x64x64, and any
    model-specific extras), the original (H, W), the (h, w) it covers in the encoder input, and the
    transform that made it. Immutable; share it freely. ``memo`` is the model's scratch space for
    tensors derived from the features alone (the decoder's image side), filled by the first decode and
    reused by the next: a cache, never an input."""

    features: Mapping[str, torch.Tensor]
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    transform: ImageTransform
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", MappingProxyType(dict(self.features)))

    @property
    def image_embeddings(self) -> torch.Tensor:
        return self.features["image_embeddings"]

    def upscale(self, low_res: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """BxMxSxS low-res logits (prompt frame) -> BxMxHxW logits over the original image (resized to
        ``size`` (h, w) if given)."""
        return self.transform.postprocess_masks(low_res, self.original_size, size)

    def clone(self) -> ImageState:
        """A copy whose features are ordinary tensors (encode's are inference tensors, which autograd
        cannot save): for training a decoder on encoded images."""
        return ImageState(
            {k: v.clone() for k, v in self.features.items()},
            self.original_size,
            self.input_size,
            self.transform,
        )


@dataclass(frozen=True)
class Prediction:
    """Decoded prompts: ``low_res`` BxMxSxS logits over the prompt frame and ``scores`` BxM (predicted
    IoU, or the model's score), for B prompt sets and M masks each, on ``state``'s image."""

    low_res: torch.Tensor
    scores: torch.Tensor
    state: ImageState

    def logits(self) -> torch.Tensor:
        """BxMxHxW mask logits over the original image."""
        return self.state.upscale(self.low_res)


class Predictor:
    """Point/box/mask prompting with the official SAM predictor's numbers, for every model of the zoo.

    ``encode`` runs the heavy image encoder once per image; each ``decode`` runs only the prompt encoder
    and the mask decoder. ``backend`` runs them: ``"torch"`` (the model itself), ``"onnxruntime"`` or
    ``"openvino"`` (its exported graphs on the CPU, exported once and cached; ``precision`` picks their
    fp32 / int8 / bf16 variant, see :func:`litesam.runtimes.open_backend`), or any
    :class:`~litesam.runtimes.Backend` object.
    """

    def __init__(
        self, model: PromptableModel, backend: str | Backend = "torch", precision: str | None = None
    ) -> None:
        self.model = model.eval()
        self.backend = open_backend(self.model, backend, precision)
        self.state: ImageState | None = None
        self._keeps_memo = "memo" in inspect.signature(self.backend.decode).parameters

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def mask_threshold(self) -> float:
        """Logit above which a pixel is in the mask."""
        return self.model.mask_threshold

    # -- stateless core -----------------------------------------------------------------------------

    @torch.inference_mode()
    def encode(self, image: ImageInput, image_format: str = "RGB") -> ImageState:
        """Encode an image: a path, a PIL image or an HxW[xC] array (uint8/uint16/float; gray, RGB, RGBA).

        ``image_format="BGR"`` flips the channels of an array (e.g. from OpenCV).
        """
        if image_format not in ("RGB", "BGR"):
            raise InputError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        rgb = load_image(image)
        if image_format == "BGR":
            rgb = np.ascontiguousarray(rgb[..., ::-1])
        transform = self.model.transform
        original_size = (rgb.shape[0], rgb.shape[1])
        with autocast(self.model):
            features = dict(to_float32(self.backend.encode(transform.to_input(rgb, self.device))))
        features["original_size"] = torch.tensor(original_size)  # for models that decode at full size
        return ImageState(features, original_size, transform.input_size(original_size), transform)

    def decode(
        self,
        state: ImageState,
        prompts: Prompts,
        multimask_output: bool = True,
        requires_grad: bool = False,
        min_score: float | None = None,
    ) -> Prediction:
        """B prompt sets (pixels of ``state``'s original image) -> their masks, decoded at once.

        Prompts outside the image or a ``mask`` of the wrong size raise an InputError. Runs without
        autograd unless ``requires_grad`` (decoder training, torch backend). ``min_score``: masks scoring
        <= it will not be used, so the model may skip computing them (their logits are then -inf).
        """
        if requires_grad and self.backend is not self.model:
            raise InputError("requires_grad needs the torch backend (exported graphs have no gradients)")
        prompts.check_inside(state.original_size)
        if prompts.mask is not None:
            side = 4 * state.image_embeddings.shape[-1]
            if tuple(prompts.mask.shape[1:]) != (1, side, side):
                raise InputError(
                    f"mask_input must be 1x{side}x{side} low-res logits (a previous call's output), "
                    f"got {tuple(prompts.mask.shape[1:])}"
                )
        frame = state.transform.apply_prompts(prompts, state.original_size).to(self.device)
        with torch.inference_mode(not requires_grad):
            with autocast(self.model):
                hint: dict[str, Any] = {} if min_score is None else {"min_score": min_score}
                if self._keeps_memo and not requires_grad:  # models may predate both keywords
                    hint["memo"] = state.memo
                low_res, scores = self.backend.decode(state.features, frame, multimask_output, **hint)
            low_res, scores = low_res.float(), scores.float()
        return Prediction(low_res, scores, state)

    # -- the official predictor's interface ---------------------------------------------------------

    def set_image(self, image: ImageInput, image_format: str = "RGB") -> None:
        """Encode ``image`` (see :meth:`encode`) and make it the current image."""
        self.state = None
        self.state = self.encode(image, image_format)

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self.state = None

    @property
    def is_image_set(self) -> bool:
        return self.state is not None

    @property
    def original_size(self) -> tuple[int, int] | None:
        return None if self.state is None else self.state.original_size

    @property
    def input_size(self) -> tuple[int, int] | None:
        return None if self.state is None else self.state.input_size

    @property
    def features(self) -> torch.Tensor:
        """The current image's embedding, 1x256x64x64 (the official predictor's attribute)."""
        return self._require_image().image_embeddings

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's embedding, 1x256x64x64."""
        return self._require_image().image_embeddings

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
        state = self._require_image()
        prompts = Prompts.single(point_coords, point_labels, box, mask_input)
        masks, scores, low_res = self._outputs(self.decode(state, prompts, multimask_output), return_logits)
        return masks[0], scores[0], low_res[0]

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
        state = self._require_image()
        prompts = Prompts.batch(point_coords, point_labels, boxes)
        outputs = [
            self._outputs(self.decode(state, part, multimask_output), return_logits)
            for part in prompts.split(batch_size)
        ]
        return tuple(np.concatenate(parts) for parts in zip(*outputs, strict=True))  # type: ignore[return-value]

    def _outputs(
        self, prediction: Prediction, return_logits: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        masks = prediction.logits()
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks.cpu().numpy(), prediction.scores.cpu().numpy(), prediction.low_res.cpu().numpy()

    def _require_image(self) -> ImageState:
        if self.state is None:
            raise RuntimeError("no image set: call predictor.set_image(image) before predicting")
        return self.state
