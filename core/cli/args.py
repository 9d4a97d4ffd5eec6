"""Argument parsing shared by every subcommand: one-line usage errors (exit code 2), number types,
and the MODEL and pruning-target options.

Nothing here imports torch when the module is imported: a subcommand's arguments are added the
first time that subcommand is parsed or its help is printed (``Parser(fill=...)``), so that
``main.py --help`` answers before torch (seconds to import) is loaded.
"""
from __future__ import annotations

import argparse

from core.errors import PruneStudioError
from core.io.specs import clean_spec

__all__ = ["TRUST_HELP", "Parser", "UsageError", "clean_spec", "fraction", "model_args", "nonneg_int",
           "positive_int", "round_to", "target_args"]

TRUST_HELP = ("run the Python code the files named here hold: factory files (also those a .pstudio "
              "or .psproj records), --inputs/--data/--loss functions, pickled models, Hugging Face "
              "custom code (only for files you trust)")


class UsageError(PruneStudioError):
    """Bad command-line usage: one ``error: ...`` line, exit code 2, like every other error."""


class Parser(argparse.ArgumentParser):
    """One-line errors instead of argparse's usage-and-exit; ``fill(parser)`` adds the arguments
    on first use (parsing or help) - subcommands whose options need torch stay cheap until then."""

    def __init__(self, *args, fill=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._fill = fill

    def _filled(self) -> None:
        fill, self._fill = self._fill, None
        if fill is not None:
            fill(self)

    def parse_known_args(self, args=None, namespace=None):
        self._filled()
        return super().parse_known_args(args, namespace)

    def format_help(self):
        self._filled()
        return super().format_help()

    def format_usage(self):
        self._filled()
        return super().format_usage()

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def fraction(text: str) -> float:
    """A number (range checks belong to the setting that reads it)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None


def _integer(text: str, low: int, what: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"must be {what}, got {v}")
    return v


def positive_int(text: str) -> int:
    return _integer(text, 1, "a positive integer")


def round_to(text: str):
    """A positive integer or ``auto``."""
    return "auto" if text.strip().lower() == "auto" else _integer(text, 1, "a positive integer or auto")


def nonneg_int(text: str) -> int:
    return _integer(text, 0, "0 or more")


def model_args(sp) -> None:
    """MODEL, its example inputs and how it is loaded (prune, graph, verify)."""
    from core.trace.inputs import DTYPES

    sp.add_argument("model", metavar="MODEL", type=clean_spec, help="torchvision:NAME | hf:DIR | timm:NAME | "
                    "file.py:factory | demo | saved model file")
    sp.add_argument("--input-shape", metavar="SHAPE", help="example input shape, e.g. "
                    "1,3,224,224 (several inputs separated by ';')")
    sp.add_argument("--input-dtype", choices=sorted(DTYPES), metavar="DTYPE",
                    help="dtype of the random example input (default float32; a language "
                    "model's own input: int64 token ids)")
    sp.add_argument("--inputs", metavar="FILE.py:FN", type=clean_spec, help="function returning example inputs "
                    "(tensor, tuple or dict) instead of --input-shape")
    sp.add_argument("--weights", metavar="FILE", help="state dict to load into MODEL")
    sp.add_argument("--trust", action="store_true", help=TRUST_HELP)
    sp.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    sp.add_argument("--seed", type=int, default=0, help="seed of random weights (torchvision:NAME, "
                    "timm:NAME, factories) and of the random criterion (default 0)")
    sp.add_argument("--attention", default="heads", choices=["heads", "head-dim"],
                    help="prune attention by whole heads (default) or by dimensions inside "
                    "every head (Swin, MaxViT, timm, nn.MultiheadAttention)")


def target_args(sp) -> None:
    """The pruning target and how channels are ranked (prune, verify)."""
    from core.plan.criteria import CRITERIA

    t = sp.add_mutually_exclusive_group()
    t.add_argument("--ratio", type=fraction, help="fraction of prunable channels to remove "
                   "(default 0.5)")
    t.add_argument("--target-flops", type=fraction, metavar="F",
                   help="fraction of FLOPs to remove (0.5 halves FLOPs)")
    t.add_argument("--target-params", type=fraction, metavar="P",
                   help="fraction of parameters to remove")
    t.add_argument("--target-latency", type=fraction, metavar="L",
                   help="fraction of latency to remove on --device (0.5 halves it): planned with "
                   "per-layer latency tables, then each plan timed against the original "
                   "interleaved and the aim corrected (up to 4 plans) until the measured "
                   "reduction is within 5 points; a miss is said")
    sp.add_argument("--importance", default="l2", choices=list(CRITERIA),
                    help="channel importance criterion (default l2)")
    r = sp.add_mutually_exclusive_group()
    r.add_argument("--global", dest="global_ranking", action="store_true",
                   help="rank channels across all groups")
    r.add_argument("--uniform", dest="global_ranking", action="store_false",
                   help="rank within each group (default; a FLOPs target then shapes the "
                   "ratios by --flops-allocation)")
    sp.add_argument("--flops-allocation", choices=["latency", "uniform"], default="latency",
                    help="with --target-flops (not --global): latency (default) removes more "
                    "where a modelled latency per FLOP is high (norms, activations, pooling at "
                    "high resolution: ResNet's stem), uniform the same share of every group")
    sp.add_argument("--round-to", type=round_to, default="auto", metavar="N|auto",
                    help="keep channel counts a multiple of N; auto (default): the multiple "
                    "measured fastest on --device (measured once, cached), or 8, 4, 1 in groups "
                    "under 4 times as wide as it; 1: exact counts")
    sp.add_argument("--ignore", action="append", default=[], metavar="NAME",
                    help="module whose output channels are kept (repeatable)")
    sp.add_argument("--max-group-ratio", type=fraction, default=0.95, metavar="R",
                    help="never remove more than this fraction of one group (default 0.95)")
