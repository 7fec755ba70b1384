"""The teacher-embedding store: precomputed image embeddings in float16 shards with a JSON-lines index.

Layout of a store folder:

- ``index.jsonl`` — line 1 is the header (``format``, ``teacher``, ``preprocess`` as image_size / pixel_mean
  / pixel_std, embedding ``shape``, ``dtype`` float16, ``images_root``); every further line is one entry:
  ``image`` (posix path relative to ``images_root``), ``shard``, ``offset`` (entry number inside the shard)
  and ``crc32`` of the entry's float16 bytes.
- ``shard_00000.bin`` ... — raw little-endian float16 arrays, ``shard_size`` entries of ``shape`` each,
  read back through memory maps (bounded memory however large the store).

Writing is resumable: each batch is appended to its shard and fsync'd *before* its index lines are appended
and fsync'd, so after a kill the index names only complete entries. On reopening, a torn last index line is
dropped, shard bytes past the indexed entries (a batch cut off mid-write) are truncated away and rewritten,
and images already indexed are skipped: no duplicate, no lost entry.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..errors import InputError
from ..modeling.sam import Sam
from ..utils.image import ImageError, load_image
from ..utils.io import find_images, writable_folder
from ..utils.parallel import barrier, rank_share
from ..utils.transforms import ImageTransform

FORMAT = "litesam-embeddings/1"
INDEX = "index.jsonl"
_AUTOCAST = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PARTS = "parts"  # per-process stores of a many-process embed run, merged into the store at the end


@dataclass(frozen=True)
class Entry:
    """One stored embedding: ``image`` relative to the store's images root, its place and checksum."""

    image: str
    shard: int
    offset: int
    crc32: int


def prepare_image(path: str | os.PathLike, transform: ImageTransform) -> torch.Tensor:
    """Image file -> 3xSxS float32 encoder input, exactly as the model's predictor makes it
    (``transform.to_input``).

    The only transform used for distillation: the targets are fixed per image, so any other augmentation
    (flips, crops, colour) would pair a changed input with an unchanged teacher embedding.
    """
    return transform.to_input(load_image(path))[0]


def transform_to_json(transform: ImageTransform) -> dict[str, Any]:
    """The transform as the index header stores it (plain JSON types)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(transform).items()}


def transform_from_json(data: dict[str, Any]) -> ImageTransform:
    """Inverse of :func:`transform_to_json`."""
    return ImageTransform(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _shard_name(shard: int) -> str:
    return f"shard_{shard:05d}.bin"


def _checksum(array: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(array, dtype="<f2").tobytes())


def _read_index(root: Path) -> tuple[dict[str, Any] | None, list[Entry], int]:
    """(header or None, entries, byte length of the complete lines) of ``root/index.jsonl``; a line that
    is no header or entry is an :class:`InputError` naming the file and the line number."""
    path = root / INDEX
    if not path.is_file():
        return None, [], 0
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]  # a line without its newline was torn by a kill
    lines = complete.decode(errors="replace").splitlines()
    if not lines:
        return None, [], 0
    header = _index_line(path, 1, lines[0], dict)
    if header.get("format") != FORMAT:
        raise InputError(f"{path}, line 1: not a {FORMAT} index header (format {header.get('format')!r})")
    entries = [_index_line(path, n, line, Entry) for n, line in enumerate(lines[1:], 2)]
    return header, entries, len(complete)


def _index_line(path: Path, number: int, line: str, kind: Callable[..., Any]) -> Any:
    """Line ``number`` of the index ``path`` as ``kind(**fields)`` of its JSON object; an InputError naming
    the file and the line number if it is not one."""
    try:
        return kind(**json.loads(line))
    except (ValueError, TypeError) as e:  # not JSON, not an object, missing or unknown fields
        raise InputError(f"{path}, line {number}: not a valid index line ({e})") from e


class EmbeddingStore:
    """Read access to a store folder: ``len(store)``, ``store.embedding(i)``, ``store.image_path(i)``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        header, self.entries, _ = _read_index(self.root)
        if header is None:
            raise InputError(f"no embedding index in {self.root} (run `litesam distill embed` first)")
        self.header = header
        self.teacher: str = header["teacher"]
        self.transform = transform_from_json(header["preprocess"])
        self.shape: tuple[int, ...] = tuple(header["shape"])
        self.shard_size: int = header["shard_size"]
        self.images_root = Path(header["images_root"])
        self._maps: dict[int, np.memmap] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def image_path(self, i: int, images_root: str | os.PathLike | None = None) -> Path:
        """Path of entry ``i``'s image, under ``images_root`` (default: the folder it was embedded from)."""
        return Path(images_root or self.images_root) / self.entries[i].image

    @property
    def shards(self) -> list[int]:
        """The numbers of the shard files the index refers to."""
        return sorted({e.shard for e in self.entries})

    def close(self) -> None:
        """Release the shard memory maps (reading again reopens them)."""
        self._maps.clear()

    def embedding(self, i: int) -> torch.Tensor:
        """Entry ``i`` as a float16 tensor of ``shape`` (e.g. 256x64x64); checksum verified."""
        entry = self.entries[i]
        if entry.shard not in self._maps:
            self._maps[entry.shard] = np.memmap(
                self.root / _shard_name(entry.shard), dtype="<f2", mode="r"
            ).reshape(-1, *self.shape)
        array = np.array(self._maps[entry.shard][entry.offset])
        if _checksum(array) != entry.crc32:
            raise InputError(self._damaged(entry))
        return torch.from_numpy(array)

    def verify(self, shards: Iterable[int] | None = None, progress: bool = False) -> None:
        """Check that the shard files (``shards``, default all) hold every indexed entry with its CRC32,
        reading one entry at a time (bounded memory, however large the store); the first damage found is
        an :class:`InputError` naming the shard, the entry and its image."""
        chosen = self.shards if shards is None else shards
        by_shard: dict[int, list[Entry]] = {shard: [] for shard in chosen}
        for entry in self.entries:
            if entry.shard in by_shard:
                by_shard[entry.shard].append(entry)
        with tqdm(total=sum(map(len, by_shard.values())), desc="verify embeddings", unit="entry",
                  disable=not progress, file=sys.stderr) as bar:  # fmt: skip
            for shard, entries in sorted(by_shard.items()):
                self._verify_shard(shard, sorted(entries, key=lambda e: e.offset))
                bar.update(len(entries))

    def _verify_shard(self, shard: int, entries: list[Entry]) -> None:
        """Check one shard file: long enough for its ``entries`` (sorted by offset), each one's CRC32."""
        path = self.root / _shard_name(shard)
        entry_bytes = int(np.prod(self.shape)) * 2
        needed = (entries[-1].offset + 1) * entry_bytes if entries else 0
        size = path.stat().st_size if path.is_file() else -1
        if size < needed:
            found = "is missing" if size < 0 else f"has {size} bytes"
            raise InputError(f"corrupt embedding store: {path} {found}, but its index needs {needed}")
        with open(path, "rb") as f:
            for entry in entries:
                f.seek(entry.offset * entry_bytes)
                if zlib.crc32(f.read(entry_bytes)) != entry.crc32:
                    raise InputError(self._damaged(entry))

    def _damaged(self, entry: Entry) -> str:
        return (
            f"corrupt embedding store: {self.root / _shard_name(entry.shard)}, entry {entry.offset}"
            f" (image {entry.image}) fails its CRC32 checksum; embed the images again into a new folder"
        )

    def check_transform(self, transform: ImageTransform, who: str) -> None:
        """Raise ValueError unless the store was made with preprocessing ``pp`` (that of ``who``)."""
        if transform != self.transform:
            raise InputError(
                f"embeddings in {self.root} were made by {self.teacher} with another preprocessing"
                f" ({self.transform}) than {who} expects ({transform}): the student would learn from"
                " inputs it never sees. Re-embed with a"
                " teacher of the same preprocessing."
            )


class _Images(Dataset):
    """(position, 3xSxS input or None when unreadable, error text) for a list of image paths."""

    def __init__(self, paths: Sequence[Path], transform: ImageTransform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            return i, prepare_image(self.paths[i], self.transform), ""
        except ImageError as e:
            return i, None, str(e)


@dataclass
class EmbedSummary:
    """What one ``embed_images`` call did: images newly embedded, already in the store, unreadable."""

    written: int
    skipped: int
    failed: list[str]


class _Writer:
    """Appends embeddings to the shards and index of a store folder; repairs a killed run on opening."""

    def __init__(self, root: Path, header: dict[str, Any]) -> None:
        self.root = writable_folder(root)
        old, entries, length = _read_index(root)
        if old is not None:
            diff = {k: (old.get(k), v) for k, v in header.items() if old.get(k) != v and k != "shape"}
            if diff:
                changes = "; ".join(f"{k}: store has {a!r}, now {b!r}" for k, (a, b) in diff.items())
                raise InputError(f"{root} holds embeddings made differently ({changes}); use another --out")
        self.header = old or header
        self.header_written = old is not None
        self.done = {e.image for e in entries}
        counts: dict[int, int] = {}
        for e in entries:
            counts[e.shard] = max(counts.get(e.shard, 0), e.offset + 1)
        self.shard = max(counts, default=0)
        self.count = counts.get(self.shard, 0)
        self._repair(counts, length)

    def _repair(self, counts: dict[int, int], index_length: int) -> None:
        index = self.root / INDEX
        if index.exists():
            os.truncate(index, index_length)
        for path in self.root.glob("shard_*.bin"):
            shard = int(path.stem.split("_")[1])
            if shard not in counts:
                path.unlink()  # written by a batch whose index lines never made it
            elif "shape" in self.header:
                size = counts[shard] * self._entry_bytes
                if path.stat().st_size < size:
                    raise InputError(f"{path} is shorter than its index says: the store is corrupt")
                os.truncate(path, size)

    @property
    def _entry_bytes(self) -> int:
        return int(np.prod(self.header["shape"])) * 2

    def append(self, images: Sequence[str], embeddings: np.ndarray) -> None:
        """Store N embeddings (N x shape, float16) of ``images``: shards, then index, each fsync'd."""
        if "shape" not in self.header:
            self.header = {**self.header, "shape": list(embeddings.shape[1:])}
        lines = [] if self.header_written else [json.dumps(self.header)]
        touched: dict[int, Any] = {}
        try:
            for image, array in zip(images, embeddings, strict=True):
                if self.count == self.header["shard_size"]:
                    self.shard, self.count = self.shard + 1, 0
                if self.shard not in touched:
                    touched[self.shard] = open(self.root / _shard_name(self.shard), "ab")
                touched[self.shard].write(np.ascontiguousarray(array, dtype="<f2").tobytes())
                entry = Entry(image, self.shard, self.count, _checksum(array))
                lines.append(json.dumps(asdict(entry)))
                self.count += 1
        finally:
            for f in touched.values():
                f.flush()
                os.fsync(f.fileno())
                f.close()
        with open(self.root / INDEX, "a") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        self.header_written = True
        self.done.update(images)


@torch.inference_mode()
def embed_images(
    teacher: Sam,
    images: str | os.PathLike,
    out: str | os.PathLike,
    teacher_name: str,
    batch_size: int = 8,
    shard_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
    teacher_dtype: str = "fp32",
) -> EmbedSummary:
    """Embed every image under the folder ``images`` (recursively; SA-1B's jpg + json layout or a plain
    folder) with ``teacher.encode`` into the store ``out``; resumes a previous run into ``out``.

    ``teacher_name`` (e.g. ``sam_vit_h``) and the teacher's preprocessing are recorded in the index; a
    store made by another teacher or preprocessing is refused. Unreadable images are reported and skipped
    (and retried by the next run). ``shard_size``: entries per shard file (256 x 2 MiB for SAM's 256x64x64).

    Many processes (``rank`` of ``world_size``, e.g. from torchrun): each embeds every ``world_size``-th
    image of the sorted list into its own part store ``out/parts/<rank>-of-<world_size>/`` (same crash
    safety and resume); when all have finished (a barrier of the process group, if there is one), rank 0
    moves the parts into ``out`` with :func:`merge_parts`, in the single-process order, so the index is
    the one a single process would have written. Parts of another world size are refused.

    ``teacher_dtype``: ``"bf16"`` / ``"fp16"`` run the teacher under CUDA autocast (GPUs only; the store
    is float16 either way, and the header records the choice).
    """
    root = Path(images).resolve()
    if not root.is_dir():
        raise InputError(f"image folder not found: {root}")
    if teacher.transform.resize == "letterbox":
        raise InputError(
            "the teacher must be a SAM-like model with a fixed-size embedding, not a YOLO-style one"
        )
    header = {
        "format": FORMAT,
        "teacher": teacher_name,
        "preprocess": transform_to_json(teacher.transform),
        "dtype": "float16",
        "shard_size": shard_size,
        "images_root": str(root),
    }
    if teacher_dtype not in _AUTOCAST:
        raise InputError(f"teacher_dtype must be one of {', '.join(_AUTOCAST)}, got {teacher_dtype!r}")
    if teacher_dtype != "fp32":
        if torch.device(device).type != "cuda":
            raise InputError(f"a {teacher_dtype} teacher needs a CUDA GPU; use fp32 on {device}")
        header["teacher_dtype"] = teacher_dtype
    found = [job.path.relative_to(root).as_posix() for job in find_images([root], recursive=True)]
    if world_size == 1:
        writer = _Writer(Path(out), header)
        todo = [name for name in found if name not in writer.done]
    else:
        _check_parts(Path(out), world_size)
        done = {e.image for e in _read_index(Path(out))[1]}
        writer = _Writer(_part_folder(Path(out), rank, world_size), header)
        share = rank_share([name for name in found if name not in done], rank, world_size)
        todo = [name for name in share if name not in writer.done]
    loader = DataLoader(
        _Images([root / name for name in todo], teacher.transform),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=list,
        pin_memory=torch.device(device).type == "cuda",
    )
    teacher = teacher.to(device).eval()
    failed: list[str] = []
    with tqdm(total=len(todo), desc="embed", unit="image", disable=not progress, file=sys.stderr) as bar:
        for batch in loader:
            good = [(i, x) for i, x, _ in batch if x is not None]
            failed.extend(f"{todo[i]}: {err}" for i, x, err in batch if x is None)
            if good:
                x = torch.stack([x for _, x in good]).to(device, non_blocking=True)
                with torch.autocast("cuda", dtype=_AUTOCAST[teacher_dtype], enabled=teacher_dtype != "fp32"):
                    emb = teacher.encode(x)["image_embeddings"]
                emb = emb.float().cpu().numpy().astype(np.float16)
                writer.append([todo[i] for i, _ in good], emb)
            bar.update(len(batch))
    for line in failed:
        print(f"skipped unreadable image {line}", file=sys.stderr)
    if world_size > 1:
        barrier()  # every process has finished its share: the parts are complete
        if rank == 0:
            merge_parts(out)
        barrier()
    return EmbedSummary(written=len(todo) - len(failed), skipped=len(found) - len(todo), failed=failed)


def _part_folder(out: Path, rank: int, world_size: int) -> Path:
    return out / PARTS / f"{rank:05d}-of-{world_size:05d}"


def _check_parts(out: Path, world_size: int) -> None:
    """InputError if ``out`` holds parts of a run with another number of processes."""
    other = sorted({p.name.split("-of-")[1] for p in (out / PARTS).glob("*-of-*")} - {f"{world_size:05d}"})
    if other:
        raise InputError(
            f"{out / PARTS} holds an unfinished embedding run with {int(other[0])} processes: rerun with"
            f" that many (--nproc-per-node) to finish it, or merge what is there with `litesam distill merge"
            f" {out}` first"
        )


def merge_parts(out: str | os.PathLike, progress: bool = False) -> int:
    """Move the part stores of a many-process ``embed`` run (``out/parts/``) into the store ``out``, in the
    order a single process would have written them (the sorted image list), checking every entry's CRC32;
    returns the number of entries moved. Crash-safe: a rerun after a kill continues where it stopped,
    and the parts are removed only once everything is in ``out``."""
    out = Path(out)
    parts = sorted(p for p in (out / PARTS).glob("*-of-*") if (p / INDEX).is_file())
    if not parts:
        return 0
    stores = [EmbeddingStore(p) for p in parts]
    writer = _Writer(out, stores[0].header)
    for store in stores[1:]:
        if {**store.header, "shape": None} != {**stores[0].header, "shape": None}:
            raise InputError(f"{store.root} was made differently from {stores[0].root}: cannot merge them")
    root = Path(stores[0].header["images_root"])
    order = {
        job.path.relative_to(root).as_posix(): i for i, job in enumerate(find_images([root], recursive=True))
    }
    pending = sorted(
        ((order.get(e.image, len(order)), e.image, store, i) for store in stores
         for i, e in enumerate(store.entries) if e.image not in writer.done),
        key=lambda item: item[:2],
    )  # fmt: skip
    chunk = writer.header["shard_size"]
    with tqdm(total=len(pending), desc="merge", unit="entry", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(pending), chunk):
            part = pending[start : start + chunk]
            arrays = np.stack([store.embedding(i).numpy() for _, _, store, i in part])
            writer.append([image for _, image, _, _ in part], arrays)
            bar.update(len(part))
    for store in stores:
        store.close()
    shutil.rmtree(out / PARTS)
    return len(pending)
