"""``litesam serve``: the web app's command line."""

from __future__ import annotations

import argparse
import importlib.util

from ..errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="local web app: click to segment, annotate a folder",
        description="Serve the click-to-segment web page (and its HTTP API, /openapi.json) on this machine. "
        "With FOLDER, kept objects are saved after every change to one COCO JSON; restarting on the same "
        "folder and file continues it.",
    )
    p.add_argument("folder", nargs="?", help="folder of images to annotate")
    p.add_argument("--model", help="model to start with (default: the first whose checkpoint is cached)")
    p.add_argument(
        "--checkpoint",
        help="checkpoint file for --model (default: the cached official file, downloaded if needed); "
        "'none': random weights for every model (demos and timing only: the masks are meaningless)",
    )
    p.add_argument(
        "-o", "--output", help="COCO JSON of the folder's objects (default FOLDER_annotations.json)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow --host other than loopback; an access token is then printed and required",
    )
    p.add_argument("--cache-size", type=int, default=8, help="images whose embeddings are kept (default 8)")
    p.add_argument("--max-upload-mb", type=float, default=50, help="largest image upload (default 50 MB)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest image, pixels (default 40M)")
    p.add_argument("--points-per-side", type=int, default=16, help="segment-everything grid (default 16)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise InputError('the web app needs its extra: pip install "litesam[server]"')
    from .app import Settings, _is_loopback, serve

    if not _is_loopback(args.host) and not args.allow_remote:
        raise InputError(
            f"--host {args.host} exposes the server to the network: add --allow-remote to mean it"
        )
    if args.output and not args.folder:
        raise InputError("-o/--output needs a FOLDER to annotate")
    random_weights = (args.checkpoint or "").lower() == "none"
    serve(
        Settings(
            model=args.model,
            checkpoint=None if random_weights else args.checkpoint,
            random_weights=random_weights,
            host=args.host,
            port=args.port,
            folder=args.folder,
            output=args.output,
            cache_size=args.cache_size,
            max_upload_bytes=int(args.max_upload_mb * (1 << 20)),
            max_pixels=args.max_pixels,
            points_per_side=args.points_per_side,
            log_level=args.log_level,
        )
    )
    return 0
