"""``litesam export``: a registered model (and checkpoint) -> ONNX files or OpenVINO IR."""

from __future__ import annotations

import argparse

from ..cli_args import add_model_args


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX (official SAM ONNX decoder interface) or OpenVINO IR",
        description="Write encoder.onnx (image 1x3xSxS, the model's normalised input -> image_embeddings"
        " and any extra features) and decoder.onnx (the official SAM ONNX interface: image_embeddings,"
        " point_coords, point_labels, mask_input, has_mask_input, orig_im_size -> masks,"
        " iou_predictions, low_res_masks; any number of points), checked with onnx.checker, plus"
        " export.json; or the same as OpenVINO IR with --format openvino (--precision bf16 / auto: the"
        " bf16 inference hint recorded in export.json; the IR stays fp32).",
    )
    p.add_argument("name", metavar="NAME", help="model name (see `litesam models`)")
    add_model_args(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--format", choices=("onnx", "openvino"), default="onnx", help="default onnx")
    p.add_argument(
        "--quantize",
        choices=("int8",),
        help="also an int8 encoder: onnx: encoder.int8.onnx (onnxruntime dynamic quantisation);"
        " openvino: int8 encoder weights (needs nncf)",
    )
    p.add_argument(
        "--return-single-mask",
        action="store_true",
        help="the decoder returns one mask per call, as the official export option (default: all"
        " mask tokens)",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from ..build import build_model
    from ..errors import InputError
    from ..precision import resolve as resolve_precision
    from ..registry import get_spec
    from ..utils.io import writable_folder
    from .onnx import export_onnx
    from .openvino import export_openvino

    spec = get_spec(args.name)
    if spec.kind != "promptable":
        raise InputError(f"{spec.name} is a model of kind {spec.kind!r}: only promptable models export")
    hint = resolve_precision(args.precision, torch.device("cpu"))  # OpenVINO's inference precision
    if args.format == "onnx" and args.precision == "bf16":
        raise InputError("ONNX files are fp32; bf16 is an OpenVINO inference hint: add --format openvino")
    if args.quantize and args.precision == "bf16":
        raise InputError("give --quantize int8 or --precision bf16, not both")
    out = writable_folder(args.output)
    model = build_model(spec.name, checkpoint=args.checkpoint, device=args.device)  # graphs trace in fp32
    if args.format == "onnx":
        files = export_onnx(model, out, return_single_mask=args.return_single_mask, quantize=args.quantize)
    else:
        files = export_openvino(model, out, args.quantize or hint, return_single_mask=args.return_single_mask)
    for role, path in files.items():
        print(f"{role}: {path}")
    if "decoder" not in files:
        print(
            f"no decoder: {spec.name}'s prompt encoder is not SAM's, so it has no official SAM ONNX decoder"
            " interface (Predictor(model, backend=...) still runs it)"
        )
    return 0
