"""EdgeSAM and EdgeSAM-3x: a RepViT-M1 encoder with FPN-style fusion in front of SAM's prompt encoder and
decoder (same architecture and keys; the checkpoints differ only in training data).

EdgeSAM's predictor options are model options: ``build_model("edge_sam", multimask_outputs=4,
stability_scores=True)`` gives 4 masks scored by stability, as upstream's ``num_multimask_outputs=4,
use_stability_score=True``.
"""

from __future__ import annotations

from ..modeling.edge_sam import EdgeSam, EdgeSamEncoder
from ..registry import ModelSpec
from ..utils.transforms import ImageTransform
from .sam import sam_mask_decoder, sam_prompt_encoder

SOURCE = "chongzhou96/EdgeSAM"


def build_edge_sam(
    transform: ImageTransform, multimask_outputs: int = 3, stability_scores: bool = False
) -> EdgeSam:
    """EdgeSAM (either checkpoint), unloaded; bicubic upsampling in the encoder's fusion as upstream."""
    return EdgeSam(
        EdgeSamEncoder(img_size=transform.image_size, upsample_mode="bicubic"),
        sam_prompt_encoder(transform.frame_size),
        sam_mask_decoder(),
        transform,
        multimask_outputs=multimask_outputs,
        stability_scores=stability_scores,
    )


OPTIONS = {"multimask_outputs": 3, "stability_scores": False}
_URL = "https://huggingface.co/spaces/chongzhou/EdgeSAM/resolve/main/weights/"  # per the upstream README

MODELS = [
    ModelSpec(
        name="edge_sam",
        build=build_edge_sam,
        options=OPTIONS,
        source=SOURCE,
        url=_URL + "edge_sam.pth",
        sha256="439b086a20ab6fba90c12cba32e0001ba3aa726da5791ff8738acdd440330991",
        description="EdgeSAM (RepViT-M1 encoder, 1024x1024 input)",
    ),
    ModelSpec(
        name="edge_sam_3x",
        build=build_edge_sam,
        options=OPTIONS,
        source=SOURCE,
        url=_URL + "edge_sam_3x.pth",
        sha256="5a3e3261da9e2f4c8154410885689ae57d09cbf4cf5d0c848b9d80b6df336ece",
        description="EdgeSAM-3x (EdgeSAM's architecture, longer training; upstream demo default)",
    ),
]
