"""The web app's HTTP server: FastAPI app factory, the model slot, upload checks and request guards.

The page (``static/``) uses only the JSON API below, documented at ``/openapi.json``; scripts can too.
One model instance serves all requests: images are encoded once into immutable
:class:`~litesam.predictor.ImageState` (cached by content hash), each click runs only the decoder.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import io
import ipaddress
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, Field

from ..automatic_mask_generator import MaskGenerator
from ..build import build_model
from ..errors import InputError, LitesamError
from ..hub import cache_dir, offline
from ..predictor import ImageState, Predictor
from ..prompts import Prompts
from ..registry import get_spec, list_models
from ..utils.amg import mask_to_rle, masks_to_boxes
from ..utils.image import load_image
from ..utils.io import atomic_write, find_images
from .annotations import AnnotationStore
from .cache import EmbeddingCache, UnknownImageError, content_id

STATIC = Path(__file__).parent / "static"
SNIFFED_FORMATS = frozenset({"JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM", "MPO"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
log = logging.getLogger("litesam.server")


@dataclass
class Settings:
    """How ``litesam serve`` runs.

    ``model``: registry name to load at start (None: the first whose checkpoint is in the cache, else
    none until the page picks one). ``checkpoint``: a file for that model; ``random_weights``: build
    every model without weights (demos, tests, timing). ``folder``/``output``: annotate a folder into
    one COCO JSON. ``cache_size``: images (with embeddings) held. ``token``: required from clients
    (set automatically when ``host`` is not loopback).
    """

    model: str | None = None
    checkpoint: str | None = None
    random_weights: bool = False
    host: str = "127.0.0.1"
    port: int = 8765
    folder: str | None = None
    output: str | None = None
    cache_size: int = 8
    max_upload_bytes: int = 50 << 20
    max_checkpoint_bytes: int = 4 << 30
    max_pixels: int = 40_000_000
    points_per_side: int = 16
    token: str | None = None
    log_level: str = "info"
    model_options: dict[str, Any] = field(default_factory=dict)


# -- request bodies (documented in /openapi.json) ------------------------------------------------------


class PredictRequest(BaseModel):
    image_id: str = Field(description="id from POST /api/images")
    points: list[tuple[float, float]] = Field(default_factory=list, description="[[x, y], ...] image pixels")
    labels: list[int] = Field(default_factory=list, description="1 foreground, 0 background, one per point")
    box: tuple[float, float, float, float] | None = Field(default=None, description="x0, y0, x1, y1 pixels")
    multimask: bool = Field(default=True, description="several candidate masks (else the single best)")
    pick: int | Literal["best"] | None = Field(
        default=None,
        description="return the mask of this candidate only (its index, or 'best': the highest score); "
        "'scores' still has every candidate's score",
    )
    format: Literal["rle", "png", "bits"] = Field(
        default="rle",
        description="masks as uncompressed column-major RLE, base64 PNG, or base64 row-major bits "
        "(numpy.packbits: 8 pixels a byte, first in the high bit; what the page uses)",
    )


class EverythingRequest(BaseModel):
    image_id: str
    points_per_side: int | None = Field(default=None, ge=1, le=64, description="grid size (server default)")


class SelectRequest(BaseModel):
    name: str


class OpenRequest(BaseModel):
    index: int = Field(ge=0)


class KeepRequest(BaseModel):
    image_id: str
    rle: dict[str, Any] = Field(description="uncompressed RLE {'size': [H, W], 'counts': [...]}")
    label: str = "object"
    score: float | None = None


# -- the model slot ------------------------------------------------------------------------------------


def _checkpoint_path(name: str) -> Path:
    return cache_dir() / get_spec(name).checkpoint_filename


def model_info(name: str, random_weights: bool) -> dict[str, Any]:
    """What the page shows about a registry model: whether it can run here and what file it needs."""
    spec = get_spec(name)
    present = _checkpoint_path(name).is_file()
    downloadable = spec.url is not None and not offline()
    return {
        "name": name,
        "kind": spec.kind,
        "description": spec.description,
        "source": spec.source,
        "input_size": spec.transform.image_size,
        "checkpoint": spec.checkpoint_filename,
        "checkpoint_path": str(_checkpoint_path(name)),
        "url": spec.url,
        "sha256": spec.sha256,
        "present": present,
        "downloadable": downloadable,
        "available": random_weights or present or downloadable,
    }


class ModelSlot:
    """The one model the server runs; swapped whole (requests in flight keep the old one)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name: str | None = None
        self.predictor: Predictor | None = None
        self._lock = threading.Lock()

    def load(self, name: str, checkpoint: str | None = None, force: bool = False) -> None:
        """Build ``name`` (random weights, ``checkpoint``, or the official file via the cache); a no-op
        for the current model unless ``force``."""
        spec = get_spec(name)
        with self._lock:
            if spec.name == self.name and checkpoint is None and not force:
                return
            if self.settings.random_weights:  # prepared for inference as a loaded checkpoint would be
                model = build_model(spec.name, fuse=True, **self.settings.model_options)
            else:
                model = build_model(spec.name, checkpoint=checkpoint or "auto", **self.settings.model_options)
            self.predictor, self.name = Predictor(model), spec.name
            # the app's and the model's ~200k objects live as long as the server: kept out of the
            # collector's full passes, which otherwise stall a click now and then (~170 ms each)
            gc.collect()
            gc.freeze()
            log.info("model %s ready", spec.name)

    def current(self) -> tuple[str, Predictor]:
        predictor, name = self.predictor, self.name
        if predictor is None or name is None:
            raise InputError("no model is loaded: pick one on the page (POST /api/models/select)")
        return name, predictor


def _startup_model(settings: Settings) -> str | None:
    if settings.model is not None:
        return get_spec(settings.model).name
    if settings.random_weights:
        return list_models("promptable")[0]
    return next(
        (n for n in list_models() if _checkpoint_path(n).is_file() and get_spec(n).kind != "detector"), None
    )


# -- images ----------------------------------------------------------------------------------------------


def read_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """File bytes -> HxWx3 uint8 RGB, sniffing the format from the content (never the name or header);
    InputError for a non-image, an unsupported format or more than ``max_pixels`` pixels."""
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise TooManyPixels(f"image has too many pixels ({e})") from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(
            "the upload is not an image litesam can read (JPEG, PNG, BMP, GIF, TIFF, WebP)"
        ) from e
    if img.format not in SNIFFED_FORMATS:
        raise InputError(f"unsupported image format {img.format}")
    if img.width * img.height > max_pixels:
        raise TooManyPixels(
            f"image is {img.width}x{img.height} = {img.width * img.height} pixels; the limit is "
            f"{max_pixels} (litesam serve --max-pixels)"
        )
    try:
        img.load()
        return load_image(ImageOps.exif_transpose(img))
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"cannot decode the image: {e} (truncated or corrupt?)") from e


class TooManyPixels(InputError):
    """An image over the server's pixel limit."""


def masks_payload(masks: torch.Tensor, scores: torch.Tensor, fmt: str) -> list[dict[str, Any]]:
    """MxHxW bool masks and M scores -> JSON records: score, area, XYWH bbox and the mask as uncompressed
    column-major RLE (``rle``), a base64 PNG (``png``) or base64 row-major bits, 8 pixels a byte, first
    pixel in the high bit (``bits``, as ``np.packbits``: the same size whatever the mask's shape)."""
    areas = masks.flatten(1).sum(1).tolist()
    boxes = masks_to_boxes(masks).tolist()
    encoded: list[Any]
    if fmt == "rle":
        encoded = [{"size": list(masks.shape[1:]), "counts": c.tolist()} for c in mask_to_rle(masks)]
    elif fmt == "png":
        encoded = []
        for mask in masks.numpy():
            buf = io.BytesIO()
            Image.fromarray(mask).save(buf, format="PNG")  # bool: a 1-bit PNG
            encoded.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    else:
        encoded = [base64.b64encode(np.packbits(m)).decode("ascii") for m in masks.numpy()]
    return [
        {
            "score": score,
            "area": area,
            "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1] if area else [0, 0, 0, 0],
            fmt: code,
        }
        for score, area, (x0, y0, x1, y1), code in zip(scores.tolist(), areas, boxes, encoded, strict=True)
    ]


# -- guards ----------------------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware: Host header (DNS rebinding), same-origin state changes, access token, body size."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        host, port = settings.host, settings.port
        names = {host, "localhost", "127.0.0.1"} if _is_loopback(host) else {host}
        names = {f"[{n}]" if ":" in n else n for n in names}
        self.any_host = host in ("0.0.0.0", "::", "")
        self.hosts = {f"{n}:{port}" for n in names} | (names if port == 80 else set())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self.check(scope, headers)
        if problem is not None:
            status, message = problem
            return await JSONResponse({"detail": message}, status)(scope, receive, send)
        await self.app(scope, receive, send)

    def check(self, scope: dict, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if not self.any_host and host not in self.hosts:
            return 403, f"Host {host!r} is not this server's address (DNS rebinding protection)"
        if self.settings.token and not self._token_ok(scope, headers):
            return 401, "an access token is required (the URL printed by litesam serve)"
        if scope["method"] in STATE_CHANGING:
            origin = headers.get("origin")
            if origin is not None and origin != f"http://{host}":
                return 403, f"cross-origin request from {origin} refused"
            if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                return 403, "cross-site request refused"
            if "content-length" not in headers and headers.get("transfer-encoding"):
                return 411, "send a Content-Length"
            limit = (
                self.settings.max_checkpoint_bytes
                if scope["path"] == "/api/checkpoints"
                else self.settings.max_upload_bytes
            )
            if int(headers.get("content-length") or 0) > limit:
                return 413, f"request body over the limit of {limit} bytes (litesam serve --max-upload-mb)"
        return None

    def _token_ok(self, scope: dict, headers: dict[str, str]) -> bool:
        want = self.settings.token or ""
        given = [headers.get("x-litesam-token", "")]
        given += [
            c.split("=", 1)[1]
            for c in headers.get("cookie", "").split("; ")
            if c.startswith("litesam_token=")
        ]
        query = scope.get("query_string", b"").decode("latin-1")
        given += [q.split("=", 1)[1] for q in query.split("&") if q.startswith("token=")]
        return any(g and secrets.compare_digest(g, want) for g in given)


# -- the app ---------------------------------------------------------------------------------------------


def create_app(settings: Settings) -> FastAPI:
    """The web app for ``settings``: page at ``/``, API under ``/api``, OpenAPI at ``/openapi.json``."""
    slot = ModelSlot(settings)
    cache = EmbeddingCache(settings.cache_size)
    folder_images = find_images([settings.folder]) if settings.folder else []
    if settings.folder and not folder_images:
        raise InputError(f"no images in {settings.folder}")
    output = settings.output
    if settings.folder and output is None:
        output = str(
            Path(settings.folder.rstrip("/")).with_name(Path(settings.folder).name + "_annotations.json")
        )
    store = AnnotationStore(output)
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="litesam-prefetch")
    startup = _startup_model(settings)
    startup_error: str | None = None
    if startup is not None:
        try:
            slot.load(startup, None if settings.checkpoint in (None, "auto") else settings.checkpoint)
        except LitesamError as e:
            if settings.checkpoint not in (None, "auto"):
                raise
            startup_error = str(e)  # offline first run: the page says which file to get
            log.warning("%s", e)

    app = FastAPI(title="litesam", version="1", description="Click-to-segment and folder annotation API.")
    app.add_middleware(Guard, settings=settings)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(LitesamError)
    async def _user_error(request: Request, exc: LitesamError) -> JSONResponse:
        status = 404 if isinstance(exc, UnknownImageError) else 422
        return JSONResponse({"detail": str(exc)}, status)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, 500)

    def encode(image_id: str) -> tuple[str, ImageState]:
        name, predictor = slot.current()
        return name, cache.state(image_id, name, predictor.encode)

    def add_image(data: bytes, name: str, run_encode: bool = True) -> dict[str, Any]:
        rgb = read_upload(data, settings.max_pixels)
        image_id = content_id(data)
        cache.add(image_id, rgb, name)
        start = time.perf_counter()
        if run_encode:
            encode(image_id)
        return {
            "image_id": image_id,
            "name": name,
            "width": rgb.shape[1],
            "height": rgb.shape[0],
            "encode_ms": round(1000 * (time.perf_counter() - start), 1),
        }

    @app.get("/", include_in_schema=False)
    def page(request: Request) -> Response:
        response = FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)
        if settings.token and request.query_params.get("token") == settings.token:
            response.set_cookie("litesam_token", settings.token, httponly=True, samesite="strict")
        return response

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        """Server state: loaded model, images held, last encode time, folder mode."""
        return {
            "status": "ok",
            "model": slot.name,
            "model_error": startup_error if slot.name is None else None,
            "images_cached": len(cache),
            "cache_size": cache.max_images,
            "last_encode_ms": None if cache.last_encode_s is None else round(1000 * cache.last_encode_s, 1),
            "folder": settings.folder,
            "output": output,
            "random_weights": settings.random_weights,
        }

    @app.get("/api/models")
    def models() -> dict[str, Any]:
        """Registry models the page can drive (promptable and instance kinds), with their checkpoints."""
        names = [n for n in list_models() if get_spec(n).kind != "detector"]
        return {
            "current": slot.name,
            "cache_dir": str(cache_dir()),
            "offline": offline(),
            "random_weights": settings.random_weights,
            "models": [model_info(n, settings.random_weights) for n in names],
        }

    @app.post("/api/models/select")
    def select(body: SelectRequest) -> dict[str, Any]:
        """Load another model (downloading its checkpoint into the cache if needed)."""
        slot.load(body.name)
        return models()

    @app.post("/api/checkpoints")
    def add_checkpoint(file: Annotated[UploadFile, File()], model: Annotated[str, Form()]) -> dict[str, Any]:
        """Store a checkpoint file for ``model`` in the cache after checking its SHA-256 against the
        registry and loading it with the safe, strict loader; then make it the current model."""
        spec = get_spec(model)
        dest = _checkpoint_path(spec.name)
        digest = hashlib.sha256()

        def copy(f: Any) -> None:
            while block := file.file.read(1 << 20):
                digest.update(block)
                f.write(block)

        part = atomic_write(dest.with_name(dest.name + ".upload"), copy)
        try:
            if spec.sha256 is not None and digest.hexdigest() != spec.sha256.lower():
                raise InputError(
                    f"{file.filename} is not {spec.checkpoint_filename}: its SHA-256 is "
                    f"{digest.hexdigest()}, the registry's {spec.sha256.lower()}"
                )
            part.replace(dest)
        finally:
            part.unlink(missing_ok=True)
        try:
            slot.load(spec.name, force=True)  # the safe (weights_only), strict loader, or an error
        except LitesamError:
            dest.unlink(missing_ok=True)
            raise
        return models()

    @app.post("/api/images")
    def upload(file: Annotated[UploadFile, File()], encode_now: bool = True) -> dict[str, Any]:
        """Upload an image (multipart field ``file``); its embedding is computed now (once per content)."""
        return add_image(file.file.read(), Path(file.filename or "image").name, encode_now)

    @app.post("/api/predict")
    def predict(body: PredictRequest) -> dict[str, Any]:
        """Masks for points (labels 1/0) and/or a box on an uploaded image; only the decoder runs."""
        if not body.points and body.box is None:
            raise InputError("give at least one point or a box")
        _, state = encode(body.image_id)
        prompts = Prompts.single(
            point_coords=body.points or None, point_labels=body.labels if body.points else None, box=body.box
        )
        start = time.perf_counter()
        name, predictor = slot.current()
        prediction = predictor.decode(state, prompts, multimask_output=body.multimask)
        scores = prediction.scores[0]
        if body.pick is None:
            picked = list(range(len(scores)))
        elif body.pick == "best":
            picked = [int(scores.argmax())]
        elif 0 <= body.pick < len(scores):
            picked = [body.pick]
        else:
            raise InputError(f"pick {body.pick} is not a candidate: this prompt has {len(scores)} masks")
        masks = state.upscale(prediction.low_res[:, picked])[0] > predictor.mask_threshold
        records = masks_payload(masks, scores[picked], body.format)
        for record, index in zip(records, picked, strict=True):
            record["index"] = index
        return {
            "masks": records,
            "scores": scores.tolist(),
            "width": state.original_size[1],
            "height": state.original_size[0],
            "model": name,
            "decode_ms": round(1000 * (time.perf_counter() - start), 1),
        }

    @app.post("/api/everything")
    def everything(body: EverythingRequest) -> dict[str, Any]:
        """Every object of an uploaded image: records with uncompressed RLE, largest first."""
        entry = cache.get(body.image_id)
        name, state = encode(body.image_id)  # the cached embedding: not encoded again
        _, predictor = slot.current()
        generator = MaskGenerator(
            predictor.model,
            points_per_side=body.points_per_side or settings.points_per_side,
            output_mode="uncompressed_rle",
        )
        records = generator.generate(entry.rgb, state=state)
        records.sort(key=lambda r: -r["area"])
        return {"records": records, "model": name}

    @app.get("/api/folder")
    def folder() -> dict[str, Any]:
        """The annotated folder's images (with their number of kept objects) and the output file."""
        if not settings.folder:
            raise UnknownImageError("not in folder mode: start litesam serve with a folder")
        counts = store.counts()
        return {
            "folder": settings.folder,
            "output": output,
            "images": [
                {
                    "index": i,
                    "name": job.path.relative_to(settings.folder).as_posix(),
                    "objects": counts.get(job.path.relative_to(settings.folder).as_posix(), 0),
                }
                for i, job in enumerate(folder_images)
            ],
        }

    def folder_job(index: int) -> tuple[Path, str]:
        if index >= len(folder_images):
            raise UnknownImageError(f"the folder has {len(folder_images)} images; no index {index}")
        path = folder_images[index].path
        return path, path.relative_to(settings.folder).as_posix()

    @app.get("/api/folder/images/{index}")
    def folder_image(index: int) -> Response:
        """The folder's image number ``index``, as stored."""
        path, _ = folder_job(index)
        return Response(path.read_bytes(), media_type="application/octet-stream")

    @app.post("/api/folder/open")
    def folder_open(body: OpenRequest) -> dict[str, Any]:
        """Open the folder's image ``index`` (encode it; the next one is encoded in the background)."""
        path, name = folder_job(body.index)
        result = add_image(path.read_bytes(), name)
        if body.index + 1 < len(folder_images):
            background.submit(_prefetch, body.index + 1)
        return {**result, "objects": store.objects(name)}

    def _prefetch(index: int) -> None:
        try:
            path, name = folder_job(index)
            add_image(path.read_bytes(), name)
        except LitesamError as e:
            log.warning("prefetch of image %d: %s", index, e)

    @app.get("/api/annotations")
    def annotations(image_id: str) -> dict[str, Any]:
        """Kept objects of an image (uncompressed ``rle`` and ``label`` added)."""
        return {"objects": store.objects(cache.get(image_id).name)}

    @app.post("/api/annotations")
    def keep(body: KeepRequest) -> dict[str, Any]:
        """Keep a mask as an object with a label; saved at once in folder mode."""
        entry = cache.get(body.image_id)
        size = list(body.rle.get("size", []))
        if size != [entry.rgb.shape[0], entry.rgb.shape[1]]:
            raise InputError(f"the mask is {size}, the image {[entry.rgb.shape[0], entry.rgb.shape[1]]}")
        return store.add(entry.name, body.rle, body.label, body.score)

    @app.delete("/api/annotations/{annotation_id}")
    def forget(annotation_id: int) -> dict[str, Any]:
        """Delete a kept object."""
        store.remove(annotation_id)
        return {"deleted": annotation_id}

    @app.get("/api/annotations/coco")
    def coco() -> Response:
        """All kept objects as COCO JSON (compressed RLE segmentation, bbox XYWH, area, category)."""
        return JSONResponse(
            store.snapshot(), headers={"Content-Disposition": 'attachment; filename="annotations.json"'}
        )

    app.state.cache = cache
    app.state.store = store
    return app


_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'",
    "Cache-Control": "no-store",
}


def serve(settings: Settings) -> None:
    """Run the app with uvicorn until interrupted (a token is required when not on loopback)."""
    import uvicorn

    if not _is_loopback(settings.host) and not settings.token:
        settings.token = secrets.token_urlsafe(16)
    logging.basicConfig(level=settings.log_level.upper(), format="litesam serve: %(message)s")
    app = create_app(settings)
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"http://{shown}:{settings.port}/" + (f"?token={settings.token}" if settings.token else "")
    print(f"litesam serve: open {url}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)
