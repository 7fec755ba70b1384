"""Uploaded images and their embeddings: a bounded LRU keyed by content hash.

An image's id is the SHA-256 of its file bytes; its :class:`~litesam.predictor.ImageState` is computed
once per (model, image) and shared by every request (it is immutable). Concurrent requests for the same
missing embedding wait for one encode instead of running several.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..predictor import ImageState


class UnknownImageError(InputError):
    """An image id the server does not hold (never uploaded, or evicted from the cache)."""


def content_id(data: bytes) -> str:
    """The id of an image file: the hex SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class CachedImage:
    """One image: ``rgb`` HxWx3 uint8, its ``name`` (file name) and its embeddings per model name."""

    rgb: np.ndarray
    name: str
    states: dict[str, ImageState]


class EmbeddingCache:
    """At most ``max_images`` images with their embeddings, least recently used evicted first.

    ``state(image_id, model_name, encode)`` returns the cached embedding or runs ``encode(rgb)`` once
    (other callers for the same key wait for it). ``last_encode_s`` is the duration of the latest
    encode (the page uses it to show progress).
    """

    def __init__(self, max_images: int = 8) -> None:
        if max_images < 1:
            raise InputError(f"the embedding cache must hold at least 1 image, got {max_images}")
        self.max_images = max_images
        self._images: OrderedDict[str, CachedImage] = OrderedDict()
        self._lock = threading.Lock()
        self._encoding: dict[tuple[str, str], threading.Lock] = {}
        self.last_encode_s: float | None = None

    def __len__(self) -> int:
        return len(self._images)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._images

    def add(self, image_id: str, rgb: np.ndarray, name: str) -> None:
        """Hold ``rgb`` under ``image_id`` (kept as is if already there), evicting the oldest image."""
        with self._lock:
            if image_id not in self._images:
                self._images[image_id] = CachedImage(rgb, name, {})
            self._images.move_to_end(image_id)
            while len(self._images) > self.max_images:
                self._images.popitem(last=False)

    def get(self, image_id: str) -> CachedImage:
        """The image under ``image_id``; UnknownImageError if there is none."""
        with self._lock:
            entry = self._images.get(image_id)
            if entry is None:
                raise UnknownImageError(
                    f"unknown image_id {image_id!r}: upload the image first (POST /api/images)"
                )
            self._images.move_to_end(image_id)
            return entry

    def state(self, image_id: str, model_name: str, encode: Callable[[np.ndarray], ImageState]) -> ImageState:
        """The embedding of ``image_id`` by ``model_name``, encoding it (once) if missing."""
        entry = self.get(image_id)
        key = (image_id, model_name)
        with self._lock:
            if model_name in entry.states:
                return entry.states[model_name]
            gate = self._encoding.setdefault(key, threading.Lock())
        with gate:
            if model_name not in entry.states:
                start = time.perf_counter()
                state = encode(entry.rgb)
                self.last_encode_s = time.perf_counter() - start
                with self._lock:
                    entry.states[model_name] = state
        with self._lock:
            self._encoding.pop(key, None)
        return entry.states[model_name]
