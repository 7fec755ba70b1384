"""``litesam bench``'s table: per setting the median and spread of each task, GFLOP/s, share of the
matmul peak, peak memory, and the ratio to the fastest peer of its precision class."""

from __future__ import annotations

from typing import Any

from .run import PEERS, TASKS


def is_peer(row: dict[str, Any]) -> bool:
    """Whether a row is (also) a setting users would pick instead of litesam: a peer's row, or litesam's
    own ONNX Runtime / OpenVINO backend row, which is the peer's setting timed once for both."""
    return row["group"] == "peer" or (row["backend"], row["precision"]) in PEERS


def ratios(record: dict[str, Any]) -> dict[str, dict[str, float]]:
    """label -> task -> median / the fastest peer's median in the row's precision class (the precision
    it ran in; the fastest row of the class where it has no peer); > 1 is slower."""
    out: dict[str, dict[str, float]] = {row["label"]: {} for row in record["rows"]}
    for task in TASKS:
        timed = [row for row in record["rows"] if task in row]
        for precision in {row["ran"] for row in timed}:
            same = [row for row in timed if row["ran"] == precision]
            reference = [row for row in same if is_peer(row)] or same
            best = min(row[task]["median_s"] for row in reference)
            for row in same:
                out[row["label"]][task] = row[task]["median_s"] / best
    return out


def _seconds(t: float) -> str:
    return f"{t * 1000:.1f} ms" if t < 1 else f"{t:.2f} s"


def format_table(record: dict[str, Any]) -> str:
    """The record as a text table (one line per setting) with a header saying what was measured."""
    rel = ratios(record)
    tasks = [t for t in TASKS if any(t in row for row in record["rows"])]
    header = ["setting", "ran"]
    for task in tasks:
        header += [f"{task} median [min-max]", "GFLOP/s", "% peak", "x peer"]
    header += ["peak RSS MiB", "setup s"]
    lines = [header]
    for row in record["rows"]:
        cells = [row["label"], row["ran"]]
        for task in tasks:
            t = row[task]
            cells += [
                f"{_seconds(t['median_s'])} [{_seconds(t['min_s'])}-{_seconds(t['max_s'])}]",
                f"{t['gflops_per_s']:.1f}",
                f"{100 * t['peak_fraction']:.1f}",
                f"{rel[row['label']][task]:.2f}",
            ]
        cells += [f"{row['peak_rss_mib']:.0f}", f"{row['setup_s']:.1f}"]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    peaks = ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in record["matmul_peak_gflops"].items())
    if "bf16" not in record["matmul_peak_gflops"]:
        peaks += " (no native bf16 on this CPU: bf16 peak not measured)"
    weights = record["checkpoint"] or "random weights (no checkpoint)"
    notes = [
        f"{record['model']} on {record['machine']['cpu']}, {record['threads']} threads, {weights};"
        f" {record['repeat']} runs after {record['warmup']} warm-up;"
        f" everything: {record['points_per_side']}^2 points on a"
        f" {record['image_hw'][1]}x{record['image_hw'][0]} image",
        f"matmul peak ({record['matmul_size']}^2): {peaks}; FLOPs counted on the torch model"
        " (matmul/conv/attention); x peer: median / the fastest peer of the same precision class",
    ]
    notes += [f"skipped {s['label']}: {s['reason']}" for s in record["skipped"]]
    return "\n".join(text + notes)
