"""PruneStudio entry point.

``python main.py`` opens the desktop application on a built-in demo model; ``python main.py
prune|graph|verify ...`` runs the same pipeline headless (see ``python main.py --help``).
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and not argv[0].startswith("-") or argv[:1] in (["-h"], ["--help"]):
        from core.cli.main import main as cli_main
        return cli_main(argv)
    from gui.app import main as gui_main
    return gui_main(argv)


if __name__ == "__main__":
    sys.exit(main())
