"""Training a student encoder on stored teacher embeddings: learning, exact resume, DDP, outputs, CLI."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image
from test_distill_embed import SIZE, CrashAfter, flip_a_byte, make_images, tiny_student, tiny_teacher

from litesam import build_model, registry
from litesam.distill.cli import COMMANDS, add_parsers
from litesam.distill.embeddings import EmbeddingStore, embed_images
from litesam.distill.train import TrainConfig, epoch_order, lr_factor, train_student
from litesam.errors import InputError
from litesam.evaluation.cli import add_parser as add_eval_parser
from litesam.evaluation.cli import run as run_eval
from litesam.prompts import Prompts
from litesam.registry import ModelSpec
from litesam.utils.transforms import ImageTransform

# 10 images, global batch 4: 2 steps per epoch (2 images left out per epoch, a different 2 each time).
CONFIG = TrainConfig(epochs=3, batch_size=4, lr=1e-2, warmup_steps=2, save_every=100)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("distill")
    make_images(root / "images", 10)
    embed_images(tiny_teacher(), root / "images", root / "emb", "tiny_teacher", batch_size=5, progress=False)
    return root / "emb"


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def log_steps(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_loss_goes_down_and_the_result_is_a_sam_with_the_teachers_decoder(store, tmp_path, monkeypatch):
    teacher, student = tiny_teacher(), tiny_student()
    before = {k: v.clone() for k, v in student.image_encoder.state_dict().items()}
    path = train_student(student, store, tmp_path / "run", CONFIG, decoder_state=teacher.state_dict(),
                         progress=False, meta={"student": "tiny_student"})  # fmt: skip
    losses = [r["loss"] for r in log_steps(tmp_path / "run")]
    assert [r["step"] for r in log_steps(tmp_path / "run")] == list(range(1, 7))
    assert losses[-1] < 0.7 * losses[0]
    with Image.open(tmp_path / "run" / "loss_curve.png") as curve:
        assert curve.format == "PNG" and curve.size == (640, 360)

    # Loadable by build_model under the student's registry name, with the teacher's decoder carried over.
    spec = ModelSpec("tiny_student", lambda pp: tiny_student(pp=pp), "test", transform=ImageTransform(SIZE))
    monkeypatch.setattr(registry, "_REGISTRY", {"tiny_student": spec})
    loaded = build_model("tiny_student", checkpoint=path, fuse=False)
    for key, value in teacher.state_dict().items():
        if not key.startswith("image_encoder."):
            assert torch.equal(loaded.state_dict()[key], value), key
    trained = loaded.image_encoder.state_dict()
    assert any(not torch.equal(trained[k], v) for k, v in before.items())
    x = torch.zeros(1, 3, SIZE, SIZE)
    with torch.no_grad():
        points, labels = torch.tensor([[[10.0, 20.0]]]), torch.ones(1, 1)
        low_res, iou = loaded.decode(loaded.encode(x), Prompts(points=points, labels=labels))
    assert low_res.shape == (1, 3, 256, 256) and iou.shape == (1, 3)


def test_a_killed_run_resumed_ends_with_the_same_weights(store, tmp_path):
    config = replace(CONFIG, save_every=3)  # checkpoints at steps 2 (epoch end), 3, 4 (epoch end), 6
    reference = train_student(tiny_student(), store, tmp_path / "a", config, progress=False)

    student = tiny_student()
    student.image_encoder.register_forward_hook(CrashAfter(4))  # killed during step 4
    with pytest.raises(KeyboardInterrupt):
        train_student(student, store, tmp_path / "b", config, progress=False)
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert (saved["step"], saved["epoch"], saved["position"]) == (3, 1, 1)  # mid epoch 2
    assert [r["step"] for r in log_steps(tmp_path / "b")] == [1, 2, 3]

    resumed = train_student(tiny_student(seed=5), store, tmp_path / "b", config, resume=True, progress=False)
    for key, value in weights(reference).items():
        assert torch.equal(weights(resumed)[key], value), key
    assert [r["step"] for r in log_steps(tmp_path / "b")] == list(range(1, 7))
    assert [r["loss"] for r in log_steps(tmp_path / "b")] == [r["loss"] for r in log_steps(tmp_path / "a")]


def test_runs_refuse_to_overwrite_to_resume_differently_or_to_mix_preprocessing(store, tmp_path):
    train_student(tiny_student(), store, tmp_path / "run", replace(CONFIG, epochs=1), progress=False)
    with pytest.raises(InputError, match=r"exists: pass --resume \(resume=True in Python\)"):
        train_student(tiny_student(), store, tmp_path / "run", replace(CONFIG, epochs=1), progress=False)
    with pytest.raises(ValueError, match="lr"):
        train_student(tiny_student(), store, tmp_path / "run", replace(CONFIG, epochs=1, lr=0.5), resume=True,
                      progress=False)  # fmt: skip
    with pytest.raises(InputError, match="nothing to resume"):
        train_student(tiny_student(), store, tmp_path / "new", CONFIG, resume=True, progress=False)
    other = tiny_student(pp=ImageTransform(image_size=SIZE, pixel_mean=(0.0, 0.0, 0.0)))
    with pytest.raises(ValueError, match="preprocess"):
        train_student(other, store, tmp_path / "other", CONFIG, progress=False)


def test_a_damaged_store_is_refused_before_step_1_naming_shard_entry_and_image(store, tmp_path):
    damaged = tmp_path / "emb"
    shutil.copytree(store, damaged)
    flip_a_byte(damaged / "shard_00000.bin", 3)
    image = next(e.image for e in EmbeddingStore(damaged).entries if (e.shard, e.offset) == (0, 3))
    with pytest.raises(InputError) as err:
        train_student(tiny_student(), damaged, tmp_path / "run", CONFIG, progress=False)
    expected = f"{damaged / 'shard_00000.bin'}, entry 3 (image {image}) fails its CRC32 checksum"
    assert expected in str(err.value)
    assert list((tmp_path / "run").iterdir()) == []  # no step was taken, nothing written


def test_verify_false_starts_without_reading_the_store_first(store, tmp_path, monkeypatch):
    monkeypatch.setattr(EmbeddingStore, "verify", lambda *a, **k: pytest.fail("the store was verified"))
    train_student(tiny_student(), store, tmp_path / "run", replace(CONFIG, epochs=1), progress=False,
                  verify=False)  # fmt: skip
    assert (tmp_path / "run" / "last.pt").is_file()


def test_data_order_and_learning_rate_schedule():
    first, again, second = epoch_order(10, 4, 0, 0), epoch_order(10, 4, 0, 0), epoch_order(10, 4, 0, 1)
    assert first.shape == (2, 4) and torch.equal(first, again) and not torch.equal(first, second)
    assert len(set(first.flatten().tolist())) == 8
    assert [lr_factor(s, 4, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(12, 4, 20) == pytest.approx(0.5) and lr_factor(20, 4, 20) == pytest.approx(0.0)
    assert all(lr_factor(s, 4, 20) >= lr_factor(s + 1, 4, 20) for s in range(4, 20))
    assert math.isclose(lr_factor(4, 4, 20), 1.0)


def _ddp_worker(rank: int, init: str, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        train_student(tiny_student(), store, out, replace(CONFIG, epochs=2), device="cpu", progress=False)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(store, tmp_path):
    single = train_student(tiny_student(), store, tmp_path / "one", replace(CONFIG, epochs=2), progress=False)
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_ddp_worker, args=(init, str(store), str(tmp_path / "two")), nprocs=2, join=True)
    ddp = weights(tmp_path / "two" / "last.pt")
    assert torch.load(tmp_path / "two" / "last.pt", weights_only=True)["world_size"] == 2
    for key, value in weights(single).items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-4, atol=1e-6, msg=key)
    losses = [r["loss"] for r in log_steps(tmp_path / "two")]
    assert losses == pytest.approx([r["loss"] for r in log_steps(tmp_path / "one")], rel=1e-4)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    add_parsers(sub)
    add_eval_parser(sub)
    return parser


def _cli(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return {**COMMANDS, "eval": run_eval}[args.command](args)


def test_cli_embeds_trains_resumes_and_evaluates_by_registry_name(tmp_path, monkeypatch, capsys):
    builders = {"tiny_teacher": lambda pp: tiny_teacher(), "tiny_student": lambda pp: tiny_student(pp=pp)}
    specs = {
        name: ModelSpec(name, fn, "test", transform=ImageTransform(SIZE)) for name, fn in builders.items()
    }
    monkeypatch.setattr(registry, "_REGISTRY", specs)
    make_images(tmp_path / "images", 5)
    teacher_pt = tmp_path / "teacher.pt"
    torch.save(tiny_teacher().state_dict(), teacher_pt)
    common = ["--device", "cpu", "--workers", "0", "--no-progress"]
    embed = ["distill", "embed", "--teacher", "tiny_teacher", "--checkpoint", str(teacher_pt),
             "--images", str(tmp_path / "images"), "--out", str(tmp_path / "emb"), *common]  # fmt: skip
    assert _cli(embed) == 0
    train = ["distill", "train", "--student", "tiny_student", "--embeddings", str(tmp_path / "emb"),
             "--out", str(tmp_path / "run"), "--teacher-checkpoint", str(teacher_pt), "--epochs", "2",
             "--batch-size", "2", *common]  # fmt: skip
    assert _cli(train) == 0
    assert _cli([*train, "--resume"]) == 0  # a finished run resumes to itself
    with pytest.raises(InputError, match="--resume"):
        _cli(train)
    with monkeypatch.context() as patch:
        patch.setattr(EmbeddingStore, "verify", lambda *a, **k: pytest.fail("the store was verified"))
        assert _cli([*train, "--resume", "--skip-verify"]) == 0
    capsys.readouterr()
    assert _cli(["eval", "miou", "--teacher", "tiny_teacher", "--teacher-checkpoint", str(teacher_pt),
                 "--student", str(tmp_path / "run" / "last.pt"), "--images", str(tmp_path / "images"),
                 "--num-points", "1", "--no-boxes", "--json", "--device", "cpu"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert len(report["images"]) == 5 and 0.0 <= report["miou"] <= 1.0
    make_images(tmp_path / "one", 1)
    assert _cli(["distill", "finetune-decoder", "--student", str(tmp_path / "run" / "last.pt"),
                 "--teacher", "tiny_teacher", "--teacher-checkpoint", str(teacher_pt), "--images",
                 str(tmp_path / "one"), "--out", str(tmp_path / "tuned"), "--num-points", "1", "--no-boxes",
                 *common]) == 0  # fmt: skip
    assert (tmp_path / "tuned" / "finetuned.pt").is_file()


def test_cli_registers_every_stage():
    parser = _parser()
    for argv in (["distill", "embed", "--teacher", "t", "--images", "i", "--out", "o"],
                 ["distill", "train", "--student", "s", "--embeddings", "e", "--out", "o"],
                 ["distill", "finetune-decoder", "--student", "s", "--teacher", "t", "--images", "i",
                  "--out", "o"],
                 ["eval", "miou", "--teacher", "t", "--student", "s", "--images", "i"]):  # fmt: skip
        assert parser.parse_args(argv).command == argv[0]


def test_gradient_accumulation_gives_the_same_weights(store, tmp_path):
    config = replace(CONFIG, epochs=1)
    whole = train_student(tiny_student(), store, tmp_path / "whole", config, progress=False)
    micro = train_student(tiny_student(), store, tmp_path / "micro", replace(config, accumulate=2),
                          progress=False)  # fmt: skip
    for key, value in weights(whole).items():
        torch.testing.assert_close(weights(micro)[key], value, rtol=1e-5, atol=1e-7, msg=key)
    with pytest.raises(InputError, match="not a multiple of 1 process.* x 3 accumulation"):
        train_student(tiny_student(), store, tmp_path / "odd", replace(config, accumulate=3), progress=False)


def _killed_ddp_worker(rank: int, init: str, store: str, out: str, kill_at: int, resume: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    student = tiny_student()
    if kill_at:
        student.image_encoder.register_forward_hook(CrashAfter(kill_at))  # every process dies at once
    try:
        train_student(student, store, out, replace(CONFIG, save_every=3), device="cpu", progress=False,
                      resume=resume)  # fmt: skip
    except KeyboardInterrupt:
        pass
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_killed_mid_epoch_resume_bit_exactly(store, tmp_path):
    def run(out: str, kill_at: int, resume: bool, tag: str) -> None:
        init = f"file://{tmp_path / ('rendezvous-' + tag)}"
        mp.spawn(_killed_ddp_worker, args=(init, str(store), out, kill_at, resume), nprocs=2, join=True)

    run(str(tmp_path / "clean"), 0, False, "clean")
    run(str(tmp_path / "killed"), 4, False, "killed")  # killed during step 4, after the step-3 checkpoint
    saved = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert (saved["step"], saved["world_size"]) == (3, 2)
    run(str(tmp_path / "killed"), 0, True, "resumed")
    clean, resumed = weights(tmp_path / "clean" / "last.pt"), weights(tmp_path / "killed" / "last.pt")
    for key, value in clean.items():
        assert torch.equal(resumed[key], value), key
    assert [r["loss"] for r in log_steps(tmp_path / "killed")] == [
        r["loss"] for r in log_steps(tmp_path / "clean")
    ]
