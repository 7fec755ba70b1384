"""The teacher-embedding store of decoupled distillation: content, resume after a kill, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import photo
from PIL import Image
from torch import nn

import litesam
from litesam.distill import embeddings
from litesam.distill.embeddings import INDEX, EmbeddingStore, embed_images, merge_parts, prepare_image
from litesam.errors import InputError
from litesam.modeling import Sam
from litesam.utils.transforms import ImageTransform
from litesam.zoo.sam import sam_with_encoder

SIZE = 64  # encoder input side of the tiny models: one pixel per cell of the 64x64 embedding grid


def tiny_teacher(seed: int = 0) -> Sam:
    """A SAM whose 'encoder' is one 3x3 convolution: Bx3x64x64 -> Bx256x64x64."""
    torch.manual_seed(seed)
    return sam_with_encoder(nn.Conv2d(3, 256, 3, padding=1), ImageTransform(image_size=SIZE)).eval()


def tiny_student(seed: int = 1, pp: ImageTransform | None = None) -> Sam:
    """A SAM with a different tiny encoder (conv, GELU, 1x1 conv): Bx3x64x64 -> Bx256x64x64."""
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GELU(), nn.Conv2d(16, 256, 1))
    return sam_with_encoder(encoder, pp or ImageTransform(image_size=SIZE))


def make_images(folder: Path, count: int) -> list[str]:
    """SA-1B-like folder: sa_<i>.jpg with a sa_<i>.json beside it, a third in a subfolder; relative paths."""
    names = []
    for i in range(count):
        name = f"{'sub/' if i % 3 == 2 else ''}sa_{i}.jpg"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(40 + 3 * i, 56, seed=i)).save(folder / name)
        (folder / name).with_suffix(".json").write_text(json.dumps({"annotations": []}))
        names.append(name)
    return sorted(names)


def stored(store: EmbeddingStore) -> dict[str, torch.Tensor]:
    return {e.image: store.embedding(i) for i, e in enumerate(store.entries)}


class CrashAfter:
    """Forward hook that raises on call ``n`` (a kill in the middle of a run)."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __call__(self, *_: object) -> None:
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt("killed")


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, list[str]]:
    return tmp_path / "images", make_images(tmp_path / "images", 7)


def test_store_holds_the_teachers_float16_embedding_of_every_image(images, tmp_path):
    folder, names = images
    teacher = tiny_teacher()
    summary = embed_images(teacher, folder, tmp_path / "emb", "tiny_vit", batch_size=3, shard_size=4,
                           progress=False)  # fmt: skip
    assert (summary.written, summary.skipped, summary.failed) == (7, 0, [])
    store = EmbeddingStore(tmp_path / "emb")
    assert sorted(e.image for e in store.entries) == names  # json files are not images
    assert store.teacher == "tiny_vit" and store.transform == teacher.transform
    assert store.shape == (256, 64, 64) and len(list((tmp_path / "emb").glob("shard_*.bin"))) == 2
    for i, entry in enumerate(store.entries):
        with torch.no_grad():
            expected = teacher.encode(prepare_image(folder / entry.image, store.transform)[None])[
                "image_embeddings"
            ][0]
        got = store.embedding(i)
        assert got.dtype == torch.float16 and store.image_path(i) == folder / entry.image
        torch.testing.assert_close(got.float(), expected, atol=2e-3, rtol=1e-3)


def test_a_killed_run_resumes_without_duplicate_or_lost_entries(images, tmp_path):
    folder, names = images
    teacher = tiny_teacher()
    embed_images(teacher, folder, tmp_path / "clean", "t", batch_size=2, shard_size=3, progress=False)

    out = tmp_path / "emb"
    hook = teacher.image_encoder.register_forward_hook(CrashAfter(3))  # dies on the third batch
    with pytest.raises(KeyboardInterrupt):
        embed_images(teacher, folder, out, "t", batch_size=2, shard_size=3, progress=False)
    hook.remove()
    assert len(EmbeddingStore(out)) == 4
    # The kill also tore the next batch: half an entry in the shard, half a line in the index.
    with open(out / "shard_00001.bin", "ab") as f:
        f.write(b"\x01" * 1000)
    with open(out / INDEX, "a") as f:
        f.write('{"image": "sa_6.jpg", "sha')

    summary = embed_images(teacher, folder, out, "t", batch_size=2, shard_size=3, progress=False)
    assert (summary.written, summary.skipped) == (3, 4)
    store = EmbeddingStore(out)
    assert sorted(e.image for e in store.entries) == names
    clean = stored(EmbeddingStore(tmp_path / "clean"))
    for name, emb in stored(store).items():
        assert torch.equal(emb, clean[name])
    entry_bytes = 256 * 64 * 64 * 2
    for shard, count in ((0, 3), (1, 3), (2, 1)):
        assert (out / f"shard_{shard:05d}.bin").stat().st_size == count * entry_bytes


def test_rerun_only_embeds_new_images(images, tmp_path):
    folder, _ = images
    teacher = tiny_teacher()
    embed_images(teacher, folder, tmp_path / "emb", "t", progress=False)
    Image.fromarray(photo(50, 50, seed=99)).save(folder / "new.png")
    summary = embed_images(teacher, folder, tmp_path / "emb", "t", progress=False)
    assert (summary.written, summary.skipped) == (1, 7)
    assert len(EmbeddingStore(tmp_path / "emb")) == 8


def test_unreadable_images_are_reported_skipped_and_retried(images, tmp_path):
    folder, _ = images
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    summary = embed_images(tiny_teacher(), folder, tmp_path / "emb", "t", progress=False)
    assert summary.written == 7 and len(summary.failed) == 1 and "broken.jpg" in summary.failed[0]
    again = embed_images(tiny_teacher(), folder, tmp_path / "emb", "t", progress=False)
    assert (again.written, again.skipped, len(again.failed)) == (0, 7, 1)


def test_a_store_refuses_another_teacher_or_preprocessing(images, tmp_path):
    folder, _ = images
    embed_images(tiny_teacher(), folder, tmp_path / "emb", "t", progress=False)
    with pytest.raises(ValueError, match="teacher"):
        embed_images(tiny_teacher(), folder, tmp_path / "emb", "other", progress=False)
    other_std = sam_with_encoder(
        nn.Conv2d(3, 256, 3, padding=1), ImageTransform(SIZE, pixel_std=(1.0, 1.0, 1.0))
    )
    with pytest.raises(ValueError, match="preprocess"):
        embed_images(other_std, folder, tmp_path / "emb", "t", progress=False)
    store = EmbeddingStore(tmp_path / "emb")
    store.check_transform(ImageTransform(image_size=SIZE), "a student")
    with pytest.raises(ValueError, match="student"):
        store.check_transform(ImageTransform(image_size=1024), "the student")


ENTRY_BYTES = 256 * 64 * 64 * 2


def flip_a_byte(shard: Path, entry: int) -> None:
    """Damage entry number ``entry`` of a shard file (one flipped byte)."""
    data = bytearray(shard.read_bytes())
    data[entry * ENTRY_BYTES + 100] ^= 0xFF
    shard.write_bytes(bytes(data))


def test_a_corrupted_entry_fails_its_checksum_naming_shard_entry_and_image(images, tmp_path):
    folder, _ = images
    embed_images(tiny_teacher(), folder, tmp_path / "emb", "t", shard_size=4, progress=False)
    store = EmbeddingStore(tmp_path / "emb")
    store.verify()
    flip_a_byte(tmp_path / "emb" / "shard_00001.bin", 2)
    damaged = next(i for i, e in enumerate(store.entries) if (e.shard, e.offset) == (1, 2))
    expected = (
        f"{tmp_path / 'emb' / 'shard_00001.bin'}, entry 2 (image {store.entries[damaged].image}) fails its"
        " CRC32 checksum"
    )
    with pytest.raises(InputError) as err:
        store.embedding(damaged)
    assert expected in str(err.value)
    assert store.embedding(damaged - 1).shape == (256, 64, 64)
    with pytest.raises(InputError) as err:
        store.verify()
    assert expected in str(err.value)
    store.verify(shards=[0])  # the other shard is sound


def test_verify_finds_a_missing_or_truncated_shard(images, tmp_path):
    folder, _ = images
    embed_images(tiny_teacher(), folder, tmp_path / "emb", "t", shard_size=4, progress=False)
    shard = tmp_path / "emb" / "shard_00000.bin"
    shard.write_bytes(shard.read_bytes()[: 3 * ENTRY_BYTES])
    with pytest.raises(InputError, match=f"{shard} has {3 * ENTRY_BYTES} bytes, but its index needs"):
        EmbeddingStore(tmp_path / "emb").verify()
    shard.unlink()
    with pytest.raises(InputError, match=f"{shard} is missing"):
        EmbeddingStore(tmp_path / "emb").verify()


@pytest.mark.parametrize(
    "line, number",
    [("not json", 3), ('{"image": "a.jpg", "shard": 0}', 3), ("[1, 2]", 3), ('{"format": 1}', 1)],
    ids=["not JSON", "missing fields", "not an object", "bad header"],
)
def test_a_damaged_index_line_is_reported_with_file_and_line_number(images, tmp_path, line, number):
    folder, _ = images
    embed_images(tiny_teacher(), folder, tmp_path / "emb", "t", progress=False)
    index = tmp_path / "emb" / INDEX
    lines = index.read_text().splitlines()
    lines[number - 1] = line
    index.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=f"{index}, line {number}: not a"):
        EmbeddingStore(tmp_path / "emb")
    with pytest.raises(InputError):
        embed_images(tiny_teacher(), folder, tmp_path / "emb", "t", progress=False)


def test_missing_store_and_folder_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="distill embed"):
        EmbeddingStore(tmp_path)
    with pytest.raises(InputError, match="image folder"):
        embed_images(tiny_teacher(), tmp_path / "nope", tmp_path / "emb", "t", progress=False)


def test_prepared_input_is_resized_normalized_and_padded(tmp_path):
    Image.fromarray(np.full((20, 40, 3), 200, np.uint8)).save(tmp_path / "a.png")
    pp = ImageTransform(image_size=SIZE)
    x = prepare_image(tmp_path / "a.png", pp)
    assert x.shape == (3, SIZE, SIZE)
    torch.testing.assert_close(x[:, 0, 0], (200 - torch.tensor(pp.pixel_mean)) / torch.tensor(pp.pixel_std))
    assert x[:, 32:].abs().max() == 0  # 20x40 -> 32x64, padded at the bottom


@pytest.mark.parametrize("name", litesam.list_models(kind="promptable"))
def test_stored_embeddings_are_what_the_predictor_computes_for_every_model(name, tmp_path):
    # The model's own transform (resize policy, pixel units, padding) in front of a cheap stand-in encoder:
    # what `distill embed` stores must be what `Predictor.encode` computes, for every registered transform.
    transform = litesam.get_spec(name).transform
    torch.manual_seed(0)
    teacher = sam_with_encoder(nn.Sequential(nn.AvgPool2d(16), nn.Conv2d(3, 256, 1)), transform).eval()
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 451, 3), dtype=np.uint8)).save(folder / "wide.png")
    Image.fromarray(rng.integers(0, 256, (257, 120, 3), dtype=np.uint8)).save(folder / "tall.png")
    embed_images(teacher, folder, tmp_path / "emb", name, progress=False)
    store = EmbeddingStore(tmp_path / "emb")
    predictor = litesam.Predictor(teacher)
    for i, entry in enumerate(store.entries):
        expected = predictor.encode(folder / entry.image).image_embeddings[0]
        stored = store.embedding(i).float()  # float16 in the store
        torch.testing.assert_close(stored, expected, atol=1e-3, rtol=1e-3)


# ---- many processes ------------------------------------------------------------------------------------


def store_files(root: Path) -> dict[str, bytes]:
    """Every file of a store folder, by name (index and shards)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_sharded_embedding_writes_the_single_process_store(images, tmp_path):
    # batch_size=1: each image's embedding is then computed alike in both runs, so the bytes must match
    folder, _ = images
    embed_images(tiny_teacher(), folder, tmp_path / "one", "t", batch_size=1, shard_size=3, progress=False)
    for rank in (2, 1, 0):  # three processes; the last one merges (a process group's barrier orders them)
        embed_images(tiny_teacher(), folder, tmp_path / "three", "t", batch_size=1, shard_size=3,
                     progress=False, rank=rank, world_size=3)  # fmt: skip
    assert not (tmp_path / "three" / "parts").exists()
    assert store_files(tmp_path / "three") == store_files(tmp_path / "one")


def test_a_killed_sharded_run_resumes_and_another_process_count_is_refused(images, tmp_path):
    folder, _ = images
    kwargs = dict(batch_size=1, shard_size=3, progress=False, world_size=2)
    embed_images(tiny_teacher(), folder, tmp_path / "clean", "t", batch_size=1, shard_size=3, progress=False)
    out = tmp_path / "emb"
    teacher = tiny_teacher()
    hook = teacher.image_encoder.register_forward_hook(CrashAfter(2))  # process 1 dies on its 2nd image
    with pytest.raises(KeyboardInterrupt):
        embed_images(teacher, folder, out, "t", rank=1, **kwargs)
    hook.remove()
    assert len(EmbeddingStore(out / "parts" / "00001-of-00002")) == 1
    with pytest.raises(InputError, match="unfinished embedding run with 2 processes"):
        embed_images(tiny_teacher(), folder, out, "t", rank=0, **dict(kwargs, world_size=3))
    for rank in (1, 0):
        embed_images(tiny_teacher(), folder, out, "t", rank=rank, **kwargs)
    assert store_files(out) == store_files(tmp_path / "clean")


def test_merge_continues_after_a_kill_in_the_middle(images, tmp_path, monkeypatch):
    folder, _ = images
    kwargs = dict(batch_size=1, shard_size=2, progress=False)
    embed_images(tiny_teacher(), folder, tmp_path / "clean", "t", **kwargs)
    out = tmp_path / "emb"
    monkeypatch.setattr(embeddings, "merge_parts", lambda out: 0)  # both parts finish, no merge yet
    for rank in (1, 0):
        embed_images(tiny_teacher(), folder, out, "t", rank=rank, world_size=2, **kwargs)
    monkeypatch.undo()
    append = embeddings._Writer.append
    calls = []

    def dies_on_the_third_batch(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        append(self, *args)

    monkeypatch.setattr(embeddings._Writer, "append", dies_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        merge_parts(out)
    monkeypatch.undo()
    assert len(EmbeddingStore(out)) == 4 and (out / "parts").is_dir()
    assert merge_parts(out) == 3
    assert store_files(out) == store_files(tmp_path / "clean")


def _embed_worker(rank: int, init: str, folder: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        embed_images(tiny_teacher(), folder, out, "t", batch_size=1, shard_size=3, progress=False,
                     rank=dist.get_rank(), world_size=dist.get_world_size())  # fmt: skip
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_embed_what_one_process_embeds(images, tmp_path):
    folder, _ = images
    embed_images(tiny_teacher(), folder, tmp_path / "one", "t", batch_size=1, shard_size=3, progress=False)
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_embed_worker, args=(init, str(folder), str(tmp_path / "two")), nprocs=2, join=True)
    assert store_files(tmp_path / "two") == store_files(tmp_path / "one")
