"""A command-line dispatcher shared by ``python -m ser`` and ``python -m finetune``.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``,
or with ``main(argv, prog=..., description=...) -> int`` when it parses its own options (the
training commands declare theirs as dataclasses for ``transformers.HfArgumentParser``). Modules
are imported only when their command runs, so ``--help`` stays fast and one broken command cannot
take the others down.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence


def dispatch(prog: str, description: str, commands: dict[str, tuple[str, str]], argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; ``commands`` maps name -> (module, help)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = argv[0] if argv and argv[0] in commands else None
    module = importlib.import_module(commands[wanted][0]) if wanted is not None else None
    if hasattr(module, "main"):  # the command parses its own options
        return int(module.main(argv[1:], prog=f"{prog} {wanted}", description=commands[wanted][1] or None))
    for name, (module_name, help_text) in commands.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            importlib.import_module(module_name).add_arguments(sub)
    args, extra = parser.parse_known_args(argv) if wanted is None else (parser.parse_args(argv), [])
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return int(importlib.import_module(commands[args.command][0]).run(args))
