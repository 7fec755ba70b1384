"""``litesam distill embed|train|finetune-decoder``: the distillation commands (and the model options of
``litesam eval miou``, whose command lives in :mod:`litesam.evaluation.cli`).

Registered on the main parser by :func:`add_parsers`; :data:`COMMANDS` maps the top-level command names to
their handlers (``args -> exit status``). Models are registry names; a student may also be given as a
checkpoint written by ``distill train`` (its model name is recorded there) or with ``--student-model``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError

# A student given as a checkpoint path: the registry name saved under "meta" by `distill train`.
_META_STUDENT = "student"


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=8, help="passes over the embeddings (default 8)")
    p.add_argument("--batch-size", type=int, default=8, help="global batch over all processes (default 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default 0.05)")
    p.add_argument("--warmup-steps", type=int, default=250, help="linear warm-up steps (default 250)")
    p.add_argument("--clip-grad", type=float, default=1.0, help="gradient norm clipping (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data order and initial weights")
    p.add_argument("--save-every", type=int, default=1000, help="checkpoint every N steps and at epoch ends")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument(
        "--accumulate",
        type=int,
        default=1,
        help="split each process's batch into N micro-batches (same gradient, less memory; default 1)",
    )
    p.add_argument(
        "--sync-bn",
        action="store_true",
        help="BatchNorm statistics over all processes under torchrun (RepViT, EdgeSAM students; GPUs)",
    )


def _add_student_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--student", required=True, help="registry name, or a checkpoint written by `litesam distill train`"
    )
    p.add_argument("--student-model", help="registry name of a --student checkpoint that does not record it")
    p.add_argument("--student-checkpoint", help="weights for a --student given by name (default: random)")


def _add_teacher_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--teacher", required=required, help="teacher registry name, e.g. sam_vit_h")
    p.add_argument(
        "--teacher-checkpoint",
        "--checkpoint",
        default="auto",
        help="teacher weights; 'auto' (default) uses the cached official file, downloading it if needed",
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``distill`` (with ``embed``, ``train``, ``finetune-decoder``)."""
    distill = sub.add_parser(
        "distill",
        help="train a light encoder from a SAM teacher (decoupled distillation)",
        description="Decoupled distillation: embed images with the teacher once, train the student encoder"
        " on the stored embeddings (MSE), optionally fine-tune the student's mask decoder.",
    )
    stages = distill.add_subparsers(dest="stage", required=True, metavar="STAGE")

    embed = stages.add_parser(
        "embed",
        help="store the teacher's image embeddings (resumable)",
        description="Embed every image under --images (recursively; SA-1B jpg+json or a plain folder)"
        " with the teacher into --out: float16 shards + index.jsonl. Rerunning resumes. Under torchrun"
        " (`torchrun --nproc-per-node N -m litesam distill embed ...`, any number of nodes) each process"
        " embeds every N-th image into out/parts/, and process 0 merges the parts at the end into the"
        " store a single process would have written.",
    )
    _add_teacher_args(embed)
    embed.add_argument("--images", required=True, help="folder of images")
    embed.add_argument("--out", required=True, help="embedding store folder")
    embed.add_argument("--batch-size", type=int, default=8, help="images per teacher forward (default 8)")
    embed.add_argument("--shard-size", type=int, default=256, help="embeddings per shard file (default 256)")
    embed.add_argument(
        "--teacher-dtype",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="run the teacher in bf16/fp16 autocast (CUDA GPUs; ~2x faster; default fp32)",
    )

    merge = stages.add_parser(
        "merge",
        help="merge the parts of an interrupted many-process embed run",
        description="Move out/parts/ (written by `distill embed` under torchrun) into the store OUT, in the"
        " single-process order. `distill embed` does this itself when all its processes finish.",
    )
    merge.add_argument("out", metavar="OUT", help="embedding store folder")
    merge.add_argument("--no-progress", action="store_true", help="no progress bar")

    train = stages.add_parser(
        "train",
        help="train a student encoder on stored embeddings (resumable, torchrun for many GPUs)",
        description="MSE to the teacher embeddings, AdamW, warm-up + cosine, gradient clipping. Writes"
        " --out/last.pt (loadable by build_model), log.jsonl and loss_curve.png. Many GPUs:"
        " torchrun --nproc-per-node N -m litesam distill train ...",
    )
    train.add_argument("--student", required=True, help="student registry name, e.g. repvit_sam")
    train.add_argument("--embeddings", required=True, help="store folder written by `distill embed`")
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument(
        "--teacher-checkpoint",
        default="auto",
        help="weights of the store's teacher, whose prompt encoder and mask decoder the student gets"
        " (default 'auto': the official file)",
    )
    train.add_argument("--images", help="images folder, if it moved since `distill embed`")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    train.add_argument(
        "--skip-verify",
        action="store_true",
        help="start without checking every stored embedding's CRC32 first (each is still checked when read)",
    )
    _add_train_options(train)

    tune = stages.add_parser(
        "finetune-decoder",
        help="fine-tune the student's mask decoder on the teacher's masks (optional stage)",
        description="Frozen student encoder; the mask decoder learns the teacher's masks for sampled point"
        " and box prompts (focal + dice + IoU-head losses). Writes --out/finetuned.pt.",
    )
    _add_student_args(tune)
    _add_teacher_args(tune)
    tune.add_argument("--images", required=True, help="folder of images")
    tune.add_argument("--out", required=True, help="output folder")
    tune.add_argument("--epochs", type=int, default=1, help="passes over the images (default 1)")
    tune.add_argument("--num-points", type=int, default=8, help="point prompts per image (default 8)")
    tune.add_argument("--no-boxes", action="store_true", help="no box prompts")
    tune.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (default 1e-5)")
    tune.add_argument(
        "--embeddings",
        help="the teacher's stored embeddings of --images (`distill embed`): its encoder then never runs",
    )
    tune.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    tune.add_argument(
        "--save-every", type=int, default=100, help="checkpoint every N steps and at epoch ends"
    )
    tune.add_argument("--seed", type=int, default=0, help="seed of the prompts and image order")

    for p in (embed, train, tune):
        p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
        p.add_argument("--workers", type=int, default=4, help="image loading processes (default 4)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_miou_args(p: argparse.ArgumentParser) -> None:
    """The options of ``litesam eval miou`` that name the models, images and prompts."""
    _add_teacher_args(p)
    _add_student_args(p)
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--num-points", type=int, default=10, help="point prompts per image (default 10)")
    p.add_argument("--no-boxes", action="store_true", help="no box prompts")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompts")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")


def _device(args: argparse.Namespace) -> str:
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _images(folder: str) -> list[Path]:
    from ..utils.io import find_images

    if not Path(folder).is_dir():
        raise InputError(f"image folder not found: {folder}")
    return [job.path for job in find_images([folder], recursive=True)]


def _teacher_weights(name: str, checkpoint: str) -> Path:
    """The teacher's checkpoint file; 'auto' fetches the official one into the cache."""
    if checkpoint != "auto":
        return Path(checkpoint)
    from ..hub import fetch_checkpoint
    from ..registry import get_spec

    spec = get_spec(name)
    return fetch_checkpoint(spec.name, spec.url, spec.checkpoint_filename, spec.sha256, member=spec.member)


def _teacher(args: argparse.Namespace, device: str, fuse: bool | None = None) -> Any:
    """The ``--teacher`` model with its weights (``--teacher-checkpoint``, default the official file)."""
    from ..build import build_model

    weights = _teacher_weights(args.teacher, args.teacher_checkpoint)
    return build_model(args.teacher, checkpoint=weights, device=device, fuse=fuse)


def _student(args: argparse.Namespace, device: str) -> tuple[str, Any]:
    """(registry name, unfused model) of ``--student`` (a registry name or a checkpoint path)."""
    from ..build import build_model
    from ..checkpoint import load_checkpoint

    if Path(args.student).is_file():
        saved = load_checkpoint(args.student)
        meta = saved.get("meta", {}) if isinstance(saved, dict) else {}
        name = args.student_model or meta.get(_META_STUDENT)
        if name is None:
            raise InputError(f"{args.student} does not record its model: give --student-model NAME")
        return name, build_model(name, checkpoint=args.student, device=device, fuse=False)
    return args.student, build_model(
        args.student, checkpoint=args.student_checkpoint, device=device, fuse=False
    )


def _embed(args: argparse.Namespace) -> int:
    from ..utils.parallel import join_process_group
    from .embeddings import embed_images

    rank, world, device = join_process_group(args.device)
    teacher = _teacher(args, str(device), fuse=False)
    summary = embed_images(
        teacher, args.images, args.out, args.teacher, batch_size=args.batch_size, shard_size=args.shard_size,
        device=device, num_workers=args.workers, progress=not args.no_progress and rank == 0, rank=rank,
        world_size=world, teacher_dtype=args.teacher_dtype,
    )  # fmt: skip
    where = f" (process {rank} of {world}; the parts are merged into {args.out})" if world > 1 else ""
    print(
        f"{summary.written} image(s) embedded, {summary.skipped} already in {args.out} or another process's"
        f" share, {len(summary.failed)} unreadable{where}"
    )
    return 1 if summary.failed else 0


def _merge(args: argparse.Namespace) -> int:
    from .embeddings import merge_parts

    print(f"{merge_parts(args.out, progress=not args.no_progress)} embedding(s) merged into {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from ..build import build_model
    from ..checkpoint import read_state_dict
    from .embeddings import EmbeddingStore
    from .train import TrainConfig, train_student

    store = EmbeddingStore(args.embeddings)
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, clip_grad=args.clip_grad, seed=args.seed, save_every=args.save_every,
        amp=not args.no_amp, num_workers=args.workers, accumulate=args.accumulate, sync_bn=args.sync_bn,
    )  # fmt: skip
    student = build_model(args.student, fuse=False)
    teacher_weights = None if args.resume else _teacher_weights(store.teacher, args.teacher_checkpoint)
    decoder = None if teacher_weights is None else read_state_dict(teacher_weights)
    path = train_student(
        student, args.embeddings, args.out, config, decoder_state=decoder, resume=args.resume,
        images=args.images, device=args.device, progress=not args.no_progress,
        meta={_META_STUDENT: args.student, "teacher": store.teacher}, verify=not args.skip_verify,
    )  # fmt: skip
    print(f"student {args.student} written to {path}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from ..utils.parallel import join_process_group
    from .finetune import finetune_decoder

    rank, _, device = join_process_group(args.device)  # torchrun: each process fine-tunes on its images
    teacher = _teacher(args, str(device), fuse=False)
    name, student = _student(args, str(device))
    result = finetune_decoder(
        student, teacher, _images(args.images), args.out, epochs=args.epochs,
        num_points=args.num_points, boxes=not args.no_boxes, lr=args.lr, seed=args.seed,
        progress=not args.no_progress and rank == 0, meta={_META_STUDENT: name, "teacher": args.teacher},
        embeddings=args.embeddings, resume=args.resume, save_every=args.save_every,
    )  # fmt: skip
    print(f"fine-tuned student written to {result.checkpoint}")
    return 0


def miou_report(args: argparse.Namespace, log: Any = None, progress: bool = False) -> Any:
    """The :class:`~.evaluate.MiouReport` of ``litesam eval miou``'s arguments (resuming from ``log``)."""
    from .evaluate import evaluate_miou

    device = _device(args)
    images = _images(args.images)  # before the models: a wrong folder fails in a second
    teacher = _teacher(args, device)
    return evaluate_miou(
        teacher, _student(args, device)[1], images, num_points=args.num_points, boxes=not args.no_boxes,
        seed=args.seed, progress=progress, log=log,
    )  # fmt: skip


def _distill(args: argparse.Namespace) -> int:
    stages = {"embed": _embed, "merge": _merge, "train": _train, "finetune-decoder": _finetune}
    return stages[args.stage](args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"distill": _distill}
