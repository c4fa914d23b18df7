"""Command options: dataclasses parsed by ``transformers.HfArgumentParser``, saved with every run.

Each command declares an option once, as a dataclass field whose metadata holds its ``help`` and
``choices``; the parser, the Python callers (``finetune.cv``, benchmarks) and the saved record all
read that one declaration. A run writes what it resolved to ``OUT/run_config.json``, and
``python -m finetune COMMAND --config OUT/run_config.json`` repeats it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, TypeVar

from transformers import HfArgumentParser

CONFIG_NAME = "run_config.json"

T = TypeVar("T")


def check_choices(options: Any) -> None:
    """Refuse a field value outside its ``choices``: argparse checks the command line, this the Python callers."""
    for option in fields(options):
        choices = option.metadata.get("choices")
        value = getattr(options, option.name)
        if choices is not None and value is not None and value not in choices:
            raise ValueError(f"{option.name} must be one of {', '.join(map(str, choices))}, not {value!r}")


def from_mapping(cls: type[T], values: Mapping[str, Any]) -> T:
    """``cls`` from the keys of ``values`` that name its fields; None keeps a default. Other keys are
    ignored: cross-validation and benchmarks hand one dict to whichever method they run."""
    known = {option.name for option in fields(cls) if option.init}
    return cls(**{key: value for key, value in values.items() if key in known and value is not None})


def parse_command(dataclass_types: Sequence[type], argv: Sequence[str], *, prog: str,
                  description: str | None = None) -> tuple[Any, ...]:
    """One instance per dataclass, from ``argv`` or, for ``--config FILE``, from a saved run."""
    parser = HfArgumentParser(
        dataclass_types, prog=prog, description=description,
        epilog=f"Repeat a run with the options it resolved: {prog} --config OUT/{CONFIG_NAME}",
    )
    argv = list(argv)
    if "--config" in argv:
        if len(argv) != 2 or argv[0] != "--config":
            parser.error("--config FILE repeats a saved run and takes no other options (edit a copy of the file)")
        return tuple(parser.parse_json_file(argv[1]))
    return parse_args(parser, argv)


def parse_args(parser: HfArgumentParser, argv: Sequence[str]) -> tuple[Any, ...]:
    """``parser``'s dataclasses from ``argv``; an unknown flag is a usage error, as in argparse, not a traceback."""
    *options, unknown = parser.parse_args_into_dataclasses(
        list(argv), return_remaining_strings=True, look_for_args_file=False
    )
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return tuple(options)


def config_dict(options: Sequence[Any]) -> dict[str, Any]:
    """The fields of every options dataclass, as JSON values, without secrets.

    ``TrainingArguments.to_dict`` (enums as their values) masks tokens as ``"<HUB_TOKEN>"``; a
    repeated run must not take the mask for a token, so those fields are left out (they keep their
    defaults).
    """
    values: dict[str, Any] = {}
    for part in options:
        values.update(part.to_dict() if hasattr(part, "to_dict") else asdict(part))
    return {key: value for key, value in values.items() if not key.endswith("_token")}


def save_config(folder: str | Path, options: Sequence[Any]) -> Path:
    """Write ``folder/run_config.json`` (atomically: every process of a distributed run writes it)."""
    path = Path(folder) / CONFIG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(config_dict(options), indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path
