"""Headless command line: ``python main.py prune|graph|verify|finetune|... ...`` (see ``--help``).

This module only builds the parser and dispatches; each command family lives in its own module
(:mod:`core.cli.prune`, :mod:`core.cli.graph`, :mod:`core.cli.verify`, :mod:`core.cli.train`), none
of which imports this one. torch is imported when a command runs, not to parse or print help.

Exit codes: 0 success; 1 ``verify`` found a mismatch; 2 bad input or any PruneStudio error (one
line ``error: ...`` on stderr, no output file left behind); 130 interrupted (SIGINT), 143 terminated
(SIGTERM): unfinished outputs and their temporary files are removed, existing files kept.
"""
from __future__ import annotations

import argparse
import os
import sys

from core.cli import graph, prune, train, verify
from core.cli.args import Parser
from core.cli.common import Progress, interrupted
from core.errors import PruneStudioError
from core.io import tempfiles

MODELS_HELP = """\
MODEL is one of:
  torchvision:NAME            torchvision architecture, random weights (add --weights FILE)
  torchvision:NAME@DEFAULT    torchvision's pretrained weights, only if already in the torch hub
                              cache (nothing is downloaded)
  hf:path/to/dir              a local Hugging Face model directory (config.json + weights);
                              integer inputs (token ids) are folded into its vocabulary;
                              without --input-shape: 1,32 token ids (a vision model: one image)
  timm:NAME[@pretrained]      a timm model, random weights (@pretrained: only if already cached)
  path/to/file.py:factory     calls factory() from that file (needs --trust)
  demo                        the built-in demo network (input 1,3,32,32)
  model.pt | model.pstudio    a saved model; pickled whole models, and a .pstudio recording a
                              factory file or a pickle, need --trust
"""

EXAMPLES = """\
examples:
  python main.py prune torchvision:resnet18 --input-shape 1,3,224,224 --ratio 0.5 -o r18.pt
  python main.py prune net.py:make --trust --input-shape 1,3,64,64 --target-flops 0.5 --global -o net.onnx
  python main.py graph torchvision:resnet18 --input-shape 1,3,224,224 --json graph.json
  python main.py verify demo --input-shape 1,3,32,32 --ratio 0.3

exit codes: 0 ok, 1 verify found a mismatch, 2 error (one line on stderr), 130 interrupted,
143 terminated (SIGTERM)
"""


def epilog() -> str:
    """The help's closing text: the MODEL forms, the output forms (from the exporters registry),
    examples and exit codes."""
    from core.io.exporters import epilog as outputs
    return f"{MODELS_HELP}\n{outputs()}\n\n{EXAMPLES}"


def build_parser() -> argparse.ArgumentParser:
    text = epilog()
    p = Parser(prog="prunestudio", description="PruneStudio: structural pruning of PyTorch models "
               "(DepGraph). Without a subcommand main.py opens the desktop application.",
               epilog=text, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", parser_class=Parser,
                           metavar="{prune,graph,verify,finetune,sparse-train,sensitivity,evaluate}")
    prune.register(sub, text)
    graph.register(sub)
    verify.register(sub)
    train.register(sub)
    return p


def error_line(e: BaseException) -> str:
    """``error: ...`` on one line (an OSError names its file)."""
    if isinstance(e, OSError) and e.strerror:
        where = f": {e.filename}" if e.filename else ""
        text = f"{e.strerror}{where}"
    else:
        text = str(e) or type(e).__name__
    return "error: " + " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    with tempfiles.signal_handlers():
        try:
            return _main(argv)
        except (KeyboardInterrupt, tempfiles.Terminated) as e:  # arrived outside _main's body
            return interrupted(e)


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    progress = Progress(enabled=sys.stderr.isatty())
    try:
        if not argv:
            parser.print_help()
            return 2
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help
            return int(e.code or 0)
        if args.command is None:
            parser.print_help()
            return 2
        try:
            if getattr(args, "train_command", False):
                return train.run(args)
            return args.run(args, progress)
        except SystemExit as e:  # the model's or inputs' own code called sys.exit / exit()
            progress.close()
            print(f"error: the run was stopped by a call to sys.exit({e.code!r}) (in the model's "
                  f"or the inputs' code?) before anything was written", file=sys.stderr, flush=True)
            return 2
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): files are written
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except (KeyboardInterrupt, tempfiles.Terminated) as e:
        progress.close()
        return interrupted(e)
    except (PruneStudioError, OSError, ValueError) as e:
        progress.close()
        print(error_line(e), file=sys.stderr, flush=True)
        return 2
    except Exception as e:  # noqa: BLE001 - a bug: still one line, but say so
        progress.close()
        if os.environ.get("PRUNESTUDIO_DEBUG"):
            raise
        print(f"error: internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]} "
              f"(set PRUNESTUDIO_DEBUG=1 for the traceback)", file=sys.stderr, flush=True)
        return 2
    finally:
        progress.close()
