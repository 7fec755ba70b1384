"""Which registered model a checkpoint is, from its keys and shapes alone (no name tables: every spec is
asked).

Each spec converts the state_dict (its ``convert_state_dict``), builds its architecture on the meta
device (sized from the state_dict where it has ``build_from_state_dict``; cached per process otherwise)
and compares key -> shape maps. Fixed architectures are preferred to ones sized from the file (a pruned
SAM family accepts any SAM-shaped state_dict). Nothing fits: an InputError naming the closest models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache

import torch

from .checkpoint import CheckpointError
from .errors import InputError
from .registry import ModelSpec, StateDict, get_spec, list_models

log = logging.getLogger(__name__)

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Match:
    """How well a state_dict fits one registered model."""

    spec: ModelSpec
    fits: bool  # every key present with its shape, nothing extra
    score: float  # keys with the right shape / all keys of the file and the model
    converted: bool  # the spec's convert_state_dict renamed keys (another official layout)
    sized_from_file: bool  # widths read from the file (build_from_state_dict)


def _shapes(state: StateDict) -> Shapes:
    return {k: tuple(v.shape) for k, v in state.items()}


@cache
def _fixed_shapes(name: str) -> Shapes:
    with torch.device("meta"):
        return _shapes(get_spec(name).instantiate().state_dict())


def match(spec: ModelSpec, state: StateDict) -> Match:
    """How ``state`` (as read from a file) fits ``spec``."""
    try:
        converted = spec.convert(state)
    except (CheckpointError, ValueError, KeyError):
        converted = dict(state)
    ours = _shapes(converted)
    expected, sized = _fixed_shapes(spec.name), False
    if expected != ours and spec.build_from_state_dict is not None:  # published widths first
        try:
            with torch.device("meta"):
                expected = _shapes(spec.instantiate(converted).state_dict())
            sized = True
        except (CheckpointError, ValueError, KeyError, IndexError, RuntimeError):
            pass
    same = sum(1 for k, shape in ours.items() if expected.get(k) == shape)
    score = same / max(len(set(ours) | set(expected)), 1)
    return Match(spec, ours == expected, score, set(converted) != set(state), sized)


def candidates(state: StateDict) -> list[Match]:
    """Every registered model's :class:`Match`, best first: fitting fixed architectures, fitting
    file-sized ones, then by score."""
    matches = [match(get_spec(name), state) for name in list_models()]
    return sorted(matches, key=lambda m: (not m.fits, m.sized_from_file, -m.score))


def identify(state: StateDict, source: str = "checkpoint") -> Match:
    """The registered model ``state`` fits (logged, with any other model of the same architecture, e.g.
    EdgeSAM and EdgeSAM-3x: the first registered is taken); InputError naming the closest if none."""
    ranked = candidates(state)
    best = ranked[0]
    if not best.fits:
        close = ", ".join(f"{m.spec.name} ({m.score:.1%} of keys)" for m in ranked[:3])
        raise InputError(f"{source} fits no registered model; closest: {close}. Pass the model name")
    twins = [m.spec.name for m in ranked[1:] if m.fits and m.sized_from_file == best.sized_from_file]
    also = f" (same architecture as {', '.join(twins)}: pass a name to choose)" if twins else ""
    layout = " in a converted layout" if best.converted else ""
    log.warning("%s: identified as %s%s%s", source, best.spec.name, layout, also)
    return best
