"""The app's settings from command-line flags and environment variables.

The same ``app.py`` runs on a laptop (localhost only, ``./store``) and as a Hugging Face Space
(listening on all interfaces, data on the persistent ``/data`` disk when the Space has one), so
the defaults depend on where it runs; flags override the environment, which overrides defaults.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SPACES_DATA = Path("/data")


@dataclass(frozen=True)
class AppConfig:
    """Everything ``build_app`` and ``launch`` need; tests build one directly."""

    model: str | None = None  # checkpoint dir or hub id; None: the store's active model, else the embedded one
    store: Path = Path("store")
    models_dir: Path | None = None  # where retrains write; None: <store>/models
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    auth: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    max_file_size: str = "25mb"
    max_duration_s: float | None = None  # None: ser.audio's limit
    window_s: float = 3.0
    hop_s: float = 1.5
    concurrency_limit: int = 2
    queue_max_size: int = 64
    retrain_args: tuple[str, ...] = ()  # extra flags for `finetune retrain`
    # The base corpus a retrain starts from (with the store's labels on top). Without one, a retrain
    # learns from the store's few labelled clips alone and is nearly always rejected.
    retrain_corpus: str | None = None
    retrain_root: Path | None = None
    retrain_nice: int = 10  # the retrain child's niceness: predictions keep the CPU while it trains
    analytics: bool = False  # Gradio's usage analytics: off unless the user turns them on
    data_roots: tuple[Path, ...] = ()  # server folders the Annotate tab may read; none: uploads only
    admins: tuple[str, ...] = ()  # logins (with auth) that may retrain, switch models and read data roots
    annotators: tuple[str, ...] = ()  # logins (with auth) that may annotate queues; empty: every login
    admin_token: str | None = field(default=None, repr=False)  # SER_ADMIN_TOKEN: typed into the page, makes that request an admin's
    retention_days: float | None = None  # clips older than this may be purged by an admin
    max_decodes: int = 2  # audio decodes at once across every event (each can hold ~100s of MB)
    cache_max_age_s: int = 3600  # uploads and served audio in Gradio's cache are deleted after this

    @property
    def retrain_out(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.store / "models"

    @property
    def retrain_command_args(self) -> tuple[str, ...]:
        """The flags the Models tab adds to `finetune retrain`: the base corpus, then --retrain-args."""
        corpus = ("--corpus", self.retrain_corpus, "--root", str(self.retrain_root)) if self.retrain_corpus else ()
        return (*corpus, *self.retrain_args)

    @property
    def has_base_corpus(self) -> bool:
        return bool(self.retrain_corpus) or "--corpus" in self.retrain_args


def on_spaces(env: Mapping[str, str]) -> bool:
    """Hugging Face Spaces set ``SPACE_ID`` in every Space's environment."""
    return bool(env.get("SPACE_ID"))


def default_store(env: Mapping[str, str]) -> Path:
    """Spaces lose their disk on restart except the persistent ``/data`` mount, so use it when present."""
    if on_spaces(env) and SPACES_DATA.is_dir():
        return SPACES_DATA / "ser-store"
    return Path("store")


def parse_auth(text: str | None) -> tuple[tuple[str, str], ...]:
    """``user:pass[,user2:pass2...]`` -> pairs for ``launch(auth=...)``."""
    if not text:
        return ()
    pairs = []
    for item in text.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            raise argparse.ArgumentTypeError(f"--auth wants user:password pairs separated by commas, got {item!r}")
        pairs.append((user, password))
    return tuple(pairs)


def parse_names(text: str | None) -> tuple[str, ...]:
    """``alice,bob`` -> ("alice", "bob")."""
    return tuple(name.strip() for name in (text or "").split(",") if name.strip())


def parse_roots(text: str | None) -> tuple[Path, ...]:
    """``/data/a:/data/b`` (os.pathsep-separated, as PATH) -> paths."""
    return tuple(Path(part) for part in (text or "").split(os.pathsep) if part.strip())


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    spaces = on_spaces(env)
    parser = argparse.ArgumentParser(description="Speech emotion recognition: demo, annotation and retraining app.")
    parser.add_argument("--model", default=env.get("SER_MODEL"), help="checkpoint dir or hub id [SER_MODEL]")
    parser.add_argument("--store", type=Path, default=Path(env.get("SER_STORE") or default_store(env)),
                        help="annotation store directory [SER_STORE; default ./store, /data/ser-store on Spaces]")
    parser.add_argument("--models-dir", type=Path, default=env.get("SER_MODELS_DIR") or None,
                        help="where retrained models go [SER_MODELS_DIR; default <store>/models]")
    parser.add_argument("--host", default=env.get("SER_HOST") or ("0.0.0.0" if spaces else "127.0.0.1"),
                        help="interface to listen on [SER_HOST; default 127.0.0.1, 0.0.0.0 on Spaces]")
    parser.add_argument("--port", type=int, default=int(env.get("SER_PORT") or env.get("GRADIO_SERVER_PORT") or 7860),
                        help="port [SER_PORT]")
    parser.add_argument("--share", action="store_true", help="open a public gradio.live link (off by default)")
    parser.add_argument("--auth", type=parse_auth, default=parse_auth(env.get("SER_AUTH")),
                        help="annotator logins user:pass[,user:pass] [SER_AUTH]; labels then carry the login name")
    parser.add_argument("--max-file-size", default=env.get("SER_MAX_FILE_SIZE") or "25mb", help="largest upload")
    parser.add_argument("--max-duration", type=float, default=None, help="longest clip in seconds (default: ser.audio's)")
    parser.add_argument("--concurrency", type=int, default=2, help="predictions run at once (2 CPU cores: keep it small)")
    parser.add_argument("--queue-size", type=int, default=64, help="requests waiting before new ones are refused")
    parser.add_argument("--retrain-corpus", default=env.get("SER_RETRAIN_CORPUS") or None,
                        help="base corpus a Models-tab retrain trains on, with the stored labels on top (a name "
                             "known to ser.corpora, e.g. emodb; needs --retrain-root) [SER_RETRAIN_CORPUS]")
    parser.add_argument("--retrain-root", type=Path, default=env.get("SER_RETRAIN_ROOT") or None,
                        help="folder (or CSV) of the --retrain-corpus, e.g. data/emodb [SER_RETRAIN_ROOT]")
    parser.add_argument("--retrain-args", default=env.get("SER_RETRAIN_ARGS", ""),
                        help="more flags for the Models tab's `python -m finetune retrain`, e.g. "
                             "\"--holdout 0.3 --epochs 50\" [SER_RETRAIN_ARGS]")
    parser.add_argument("--retrain-nice", type=int, default=int(env.get("SER_RETRAIN_NICE") or 10),
                        help="niceness of the retrain process (default 10: predictions stay fast while it "
                             "trains) [SER_RETRAIN_NICE]")
    parser.add_argument("--analytics", action="store_true",
                        default=env.get("GRADIO_ANALYTICS_ENABLED", "").strip().lower() == "true",
                        help="send Gradio's usage analytics to its developers (off by default) "
                             "[GRADIO_ANALYTICS_ENABLED=True]")
    parser.add_argument("--data-root", dest="data_roots", type=Path, action="append", default=None,
                        help="a server folder whose audio, CSVs and saved datasets admins may queue (repeatable) "
                             "[SER_DATA_ROOTS, separated by ':'; default none: uploads only]")
    parser.add_argument("--admins", type=parse_names, default=parse_names(env.get("SER_ADMINS")),
                        help="logins (with --auth) that may retrain, switch models and load server folders [SER_ADMINS]")
    parser.add_argument("--annotators", type=parse_names, default=parse_names(env.get("SER_ANNOTATORS")),
                        help="logins (with --auth) that may annotate queues; default every login [SER_ANNOTATORS]")
    parser.add_argument("--retention-days", type=float,
                        default=float(env["SER_RETENTION_DAYS"]) if env.get("SER_RETENTION_DAYS") else None,
                        help="keep stored clips this many days; an admin purges older ones [SER_RETENTION_DAYS]")
    parser.add_argument("--max-decodes", type=int, default=2, help="audio files decoded at once, across every event")
    parser.add_argument("--cache-max-age", type=int, default=3600,
                        help="seconds Gradio keeps uploads and served audio in its cache (default 3600)")
    return parser


def apply_analytics_setting(config: AppConfig, environ: MutableMapping[str, str] | None = None) -> None:
    """Gradio reads ``GRADIO_ANALYTICS_ENABLED`` when a page is built and sends analytics unless
    it is "False"; set it from ``config`` so nothing leaves the machine unless asked for."""
    environ = os.environ if environ is None else environ
    environ["GRADIO_ANALYTICS_ENABLED"] = "True" if config.analytics else "False"


def parse_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> AppConfig:
    """Flags (``argv``, default ``sys.argv``) over environment (default ``os.environ``) over defaults."""
    env = os.environ if env is None else env
    parser = build_parser(env)
    args = parser.parse_args(argv)
    if bool(args.retrain_corpus) != bool(args.retrain_root):
        parser.error("--retrain-corpus and --retrain-root go together (the corpus's name and its folder)")
    return AppConfig(
        model=args.model or None,
        store=args.store,
        models_dir=Path(args.models_dir) if args.models_dir else None,
        host=args.host,
        port=args.port,
        share=args.share,
        auth=args.auth,
        max_file_size=args.max_file_size,
        max_duration_s=args.max_duration,
        concurrency_limit=args.concurrency,
        queue_max_size=args.queue_size,
        retrain_args=tuple(shlex.split(args.retrain_args)),
        retrain_corpus=args.retrain_corpus or None,
        retrain_root=Path(args.retrain_root) if args.retrain_root else None,
        retrain_nice=max(0, min(19, args.retrain_nice)),
        analytics=args.analytics,
        data_roots=tuple(args.data_roots) if args.data_roots else parse_roots(env.get("SER_DATA_ROOTS")),
        admins=args.admins,
        annotators=args.annotators,
        admin_token=env.get("SER_ADMIN_TOKEN") or None,  # a secret: never a flag (it would show in `ps`)
        retention_days=args.retention_days,
        max_decodes=max(1, args.max_decodes),
        cache_max_age_s=max(1, args.cache_max_age),
    )
