"""``litesam bench --peers`` for the issue's models, one JSON record each, then ``make_readme.py``.

    python benchmarks/bench_runtimes.py [--models mobile_sam edge_sam ...] [--threads 2] [--repeat 5]
        [--precision fp32 bf16 int8] [--random] [--no-everything]

Runs each model in one process with the official packages importable through the test stand-ins for
torchvision and timm (as the other benchmark scripts), so the official PyTorch code is among the peers
where it is pip-installed (segment-anything, mobilesam-mirror). Checkpoints: the cached official files
(``--checkpoint auto``); ``--random`` times random weights instead (nothing to download).
"""

from __future__ import annotations

import argparse

from common import REPO, import_official
from make_readme import main as make_readme

from litesam.cli import main as litesam

MODELS = ["mobile_sam", "edge_sam", "efficientvit_sam_l0", "repvit_sam", "sam_vit_b"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16", "int8"])
    parser.add_argument("--backends", nargs="+", default=["torch", "onnxruntime", "openvino"],
                        help="litesam's own backends to time (--peers times the peers)")  # fmt: skip
    parser.add_argument("--random", action="store_true", help="random weights (no checkpoint download)")
    parser.add_argument("--no-everything", action="store_true", help="skip segment-everything (bench_amg.py)")
    args = parser.parse_args()
    for package in ("segment_anything", "mobile_sam"):
        try:
            import_official(package)
        except ImportError as e:
            print(f"official {package} not importable ({e}): its peer rows are skipped")
    results = REPO / "benchmarks" / "results"
    records = []
    for name in args.models:
        out = results / f"{name}.json"
        argv = ["bench", "--model", name, "--peers", "--backend", *args.backends,
                "--precision", *args.precision,
                "--threads", str(args.threads), "--repeat", str(args.repeat), "--json", str(out)]  # fmt: skip
        if not args.random:
            argv += ["--checkpoint", "auto"]
        if args.no_everything:
            argv.append("--no-everything")
        if litesam(argv) == 0:
            records.append(str(out))
    return make_readme(records)


if __name__ == "__main__":
    raise SystemExit(main())
