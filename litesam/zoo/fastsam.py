"""FastSAM (CASIA-IVA-Lab/FastSAM): YOLOv8-seg instance segmenters trained on SA-1B, loaded from the
official ultralytics checkpoints (read by litesam's restricted unpickler)."""

from __future__ import annotations

from functools import partial

from ..checkpoint import CheckpointError
from ..modeling.fastsam import FastSAM
from ..modeling.yolo import yolo_scale_of
from ..registry import ModelSpec, StateDict
from ..utils.transforms import ImageTransform

SOURCE = "CASIA-IVA-Lab/FastSAM"
# FastSAM's README links Google Drive / Baidu copies (not downloadable by URL). The published SHA-256
# (144,943,063 bytes) is that of the authors' original FastSAM.pt (= FastSAM-x), which their demo space
# serves; FastSAM-s has no published hash and comes from ultralytics' release assets (not verified here:
# no download is possible in this project's CI).
_URL = "https://github.com/ultralytics/assets/releases/download/v8.2.0/"
_ORIGINAL_X = "https://huggingface.co/spaces/An-619/FastSAM/resolve/main/weights/FastSAM.pt"
# ultralytics' letterbox to 1024 px, RGB / 255, no mean/std
TRANSFORM = ImageTransform(
    1024, resize="letterbox", pixel_scale=255.0, pixel_mean=(0.0, 0.0, 0.0), pixel_std=(1.0, 1.0, 1.0)
)


def build_fastsam(
    transform: ImageTransform, scale: str, conf: float = 0.4, iou: float = 0.9, max_det: int = 300
) -> FastSAM:
    """FastSAM of one YOLOv8 scale, unloaded."""
    return FastSAM(transform, scale, conf, iou, max_det)


def check_scale(scale: str, state: StateDict) -> StateDict:
    """The state_dict unchanged, or a CheckpointError naming the YOLOv8 scale the file really has."""
    found = yolo_scale_of(state)
    if found is not None and found != scale:
        raise CheckpointError(
            f"this is a FastSAM-{found} (YOLOv8{found}-seg) checkpoint, not FastSAM-{scale}"
        )
    return state


OPTIONS = {"conf": 0.4, "iou": 0.9, "max_det": 300}
MODELS = [
    ModelSpec(
        name="fastsam_s",
        build=partial(build_fastsam, scale="s"),
        source=SOURCE,
        url=_URL + "FastSAM-s.pt",
        transform=TRANSFORM,
        kind="instance",
        options=OPTIONS,
        convert_state_dict=partial(check_scale, "s"),
        description="FastSAM-s (YOLOv8s-seg, 11.8M parameters): all masks in one pass",
    ),
    ModelSpec(
        name="fastsam_x",
        build=partial(build_fastsam, scale="x"),
        source=SOURCE,
        url=_ORIGINAL_X,
        sha256="c0be4e7ddbe4c15333d15a859c676d053c486d0a746a3be6a7a9790d52a9b6d7",  # 144,943,063 bytes
        transform=TRANSFORM,
        kind="instance",
        options=OPTIONS,
        convert_state_dict=partial(check_scale, "x"),
        description="FastSAM-x (YOLOv8x-seg, 72M parameters): all masks in one pass",
    ),
]
