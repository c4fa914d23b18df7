"""``python -m finetune download CORPUS --to DIR``: fetch a corpus from its official source.

A user who cloned the repository alone has no corpus, and every training command needs one. This
fetches each corpus the project reads (``ser.corpora`` names) from the place its authors publish
it, shows its licence first, resumes an interrupted download (HTTP ``Range``), never overwrites a
folder that already exists, and checks what arrived: the archive's SHA-256 where it is known, then
the number of audio files and a digest of their content (``tree_digest``) where it is known. A
corpus whose authors hand it out only through a form gets exact instructions instead.

``SOURCES`` is the one table of where each corpus comes from and the layout ``--root`` expects.
Checksums are recorded only where they were computed from real copies of the files; ``None`` means
unknown (then only the file count is checked), never a guess.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from ser.corpora import corpus_spec

AUDIO_SUFFIXES = (".wav", ".flac")
CHUNK = 1 << 20
TIMEOUT_S = 60.0
USER_AGENT = "ser-finetune-download/1 (python urllib)"


class DownloadError(RuntimeError):
    """A download that failed or did not verify; the message says what to do next."""


@dataclass(frozen=True)
class Archive:
    """One file to fetch, and which of its members become which paths under the corpus folder.

    ``members`` maps a path prefix inside the archive to a prefix under ``--root`` ("" = all);
    members outside every prefix are left out (GitHub archives carry whole repositories).
    """

    url: str
    filename: str
    sha256: str | None = None  # of the archive file; None: unknown
    members: tuple[tuple[str, str], ...] = (("", ""),)


@dataclass(frozen=True)
class Source:
    """Where a corpus comes from, under what licence, and what its ``--root`` folder holds."""

    title: str
    homepage: str
    licence: str
    layout: str  # what --root points at after the download
    files: int  # audio files expected under --root
    audio_sha256: str | None = None  # tree_digest of the audio under --root; None: unknown
    archives: tuple[Archive, ...] = ()
    manual: str | None = None  # instructions when it cannot be fetched automatically
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def automatic(self) -> bool:
        return bool(self.archives)


_NEMO_COMMIT = "66de9999a8f2f605eb5f64841790aa5cb0877782"
_EMOVO_COMMIT = "c13834136874dbf9404f077fd977890605ac90bd"
_TUREV_COMMIT = "be9873eccbc40538acbeb5e67c718bda96763cf3"

# Keyed by the corpus names of ser.corpora (and of `--corpus`); the licence texts are its CorpusSpecs'.
SOURCES: dict[str, Source] = {
    "emodb": Source(
        title="EmoDB, Berlin Database of Emotional Speech (Burkhardt et al., Interspeech 2005)",
        homepage="http://emodb.bilderbar.info/",
        licence=corpus_spec("emodb").licence,
        layout="<to>/emodb/wav/03a01Fa.wav ... (535 clips; --root <to>/emodb)",
        files=535,
        # Computed from the 535 wav/ files of the copy this project's default model was trained on.
        audio_sha256="3aafab06fa8a62a8af26e96b06057a02042e44714d4627e614dca55a509f8125",
        archives=(Archive("http://emodb.bilderbar.info/download/download.zip", "emodb-download.zip"),),
    ),
    "ravdess": Source(
        title="RAVDESS speech audio (Livingstone and Russo, PLoS ONE 2018)",
        homepage="https://zenodo.org/records/1188976",
        licence=corpus_spec("ravdess").licence,
        layout="<to>/ravdess/Actor_01/03-01-01-01-01-01-01.wav ... (24 actors x 60 clips; --root <to>/ravdess)",
        files=1440,
        archives=(
            Archive(
                "https://zenodo.org/records/1188976/files/Audio_Speech_Actors_01-24.zip?download=1",
                "Audio_Speech_Actors_01-24.zip",
            ),
        ),
        notes=("about 200 MB; the sung clips (Audio_Song_Actors_01-24.zip) are a separate file of the record",),
    ),
    "crema-d": Source(
        title="CREMA-D (Cao et al., IEEE Trans. Affective Computing 2014)",
        homepage="https://github.com/CheyneyComputerScience/CREMA-D",
        licence=corpus_spec("crema-d").licence,
        layout="<to>/crema-d/1001_DFA_ANG_XX.wav ... (7,442 clips in one folder; --root <to>/crema-d)",
        files=7442,
        manual=(
            "Its audio is stored with Git LFS, which a plain archive download does not resolve. With "
            "git-lfs installed:\n"
            "  git lfs install\n"
            "  git clone https://github.com/CheyneyComputerScience/CREMA-D.git\n"
            "  mv CREMA-D/AudioWAV <to>/crema-d\n"
            "then check: python -m finetune describe --corpus crema-d --root <to>/crema-d"
        ),
    ),
    "tess": Source(
        title="TESS, Toronto Emotional Speech Set (Dupuis and Pichora-Fuller, 2010)",
        homepage="https://doi.org/10.5683/SP2/E8H2MF",
        licence=corpus_spec("tess").licence,
        layout="<to>/tess/OAF_angry/OAF_back_angry.wav ... (2,800 clips; --root <to>/tess)",
        files=2800,
        manual=(
            "It is published on the University of Toronto's Dataverse, which serves each file through "
            "its own page:\n"
            "  open https://doi.org/10.5683/SP2/E8H2MF, choose 'Access Dataset' > 'Download ZIP',\n"
            "  unzip it into <to>/tess (folders such as OAF_angry, YAF_happy holding the .wav files)\n"
            "then check: python -m finetune describe --corpus tess --root <to>/tess"
        ),
    ),
    "nemo": Source(
        title="nEMO, Polish emotional speech (Christop, LREC-COLING 2024)",
        homepage="https://github.com/amu-cai/nEMO",
        licence=corpus_spec("nemo").licence,
        layout="<to>/nemo/samples/EB0_anger_1.wav ... and <to>/nemo/data.tsv (4,481 clips; --root <to>/nemo)",
        files=4481,
        # Computed from the samples/ files of that commit.
        audio_sha256="88f0d6b38c0f7c4ef747e4b1788b71447754f656dcbcb8c7261e77e93258cd97",
        archives=(
            Archive(
                f"https://github.com/amu-cai/nEMO/archive/{_NEMO_COMMIT}.zip",
                f"nEMO-{_NEMO_COMMIT}.zip",
                members=((f"nEMO-{_NEMO_COMMIT}/samples/", "samples/"), (f"nEMO-{_NEMO_COMMIT}/data.tsv", "data.tsv")),
            ),
        ),
        notes=(
            "the authors' repository at a fixed commit; about 530 MB of audio",
            "also on the Hugging Face Hub as the dataset amu-cai/nEMO (parquet), readable online with "
            "--corpus hub --root amu-cai/nEMO",
        ),
    ),
    "emovo": Source(
        title="EMOVO, Italian emotional speech (Costantini et al., LREC 2014)",
        homepage="http://voice.fub.it/activities/corpora/emovo/index.html",
        licence=corpus_spec("emovo").licence,
        layout="<to>/emovo/f1/rab-f1-b2.wav ... (speaker folders f1 f2 f3 m1 m2 m3; 588 clips; --root <to>/emovo)",
        files=588,
        # tree_digest of the data/EMOVO files of that commit.
        audio_sha256="9997cf4d9a3717d03268eaa16ad7901460a7250f332cefc7f26737cdee3f8b12",
        archives=(
            Archive(
                f"https://github.com/fp1acm8/SER/archive/{_EMOVO_COMMIT}.zip",
                f"SER-{_EMOVO_COMMIT}.zip",
                members=((f"SER-{_EMOVO_COMMIT}/data/EMOVO/", ""),),
            ),
        ),
        notes=("a public GitHub copy at a fixed commit (the official page has gone offline at times)",),
    ),
    "turev": Source(
        title="TurEV-DB, Turkish emotional speech (Canpolat et al., SLTU 2020)",
        homepage="https://github.com/Xeonen/TurEV-DB",
        licence=corpus_spec("turev").licence,
        layout="<to>/turev/Angry/1358_kz_beste.wav ... (folders Angry Calm Happy Sad; 1,735 clips; --root <to>/turev)",
        files=1735,
        # tree_digest of the 'Sound Source' files of that commit.
        audio_sha256="39bae552d2a3ebb9355cb782dbd9c26f7d07a197d7c4ce5cfe46d0f03fd3c688",
        archives=(
            Archive(
                f"https://github.com/Xeonen/TurEV-DB/archive/{_TUREV_COMMIT}.zip",
                f"TurEV-DB-{_TUREV_COMMIT}.zip",
                members=((f"TurEV-DB-{_TUREV_COMMIT}/Sound Source/", ""),),
            ),
        ),
        notes=("the authors' repository at a fixed commit; only its 'Sound Source' folder is kept",),
    ),
}


# ------------------------------------------------------------------------------------------ command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", choices=sorted(SOURCES), help="which corpus")
    parser.add_argument("--to", required=True, type=Path, help="folder the corpus folder goes in (<to>/<corpus>)")
    parser.add_argument("--accept-licence", action="store_true", help="accept the printed licence without a prompt")


def run(args: argparse.Namespace) -> int:
    source = SOURCES[args.corpus]
    print(describe(args.corpus, source, args.to))
    if not source.automatic:
        print(f"\n{args.corpus} cannot be downloaded automatically.\n{source.manual.replace('<to>', str(args.to))}")
        return 1
    if not _accepted(args.accept_licence):
        print("error: the licence was not accepted; nothing downloaded (--accept-licence accepts it)", file=sys.stderr)
        return 2
    try:
        root = fetch_corpus(args.corpus, source, args.to)
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"\n{args.corpus}: {source.files} audio files in {root}, verified.")
    print(f"Next: python -m finetune describe --corpus {args.corpus} --root {root}")
    return 0


def describe(name: str, source: Source, to: Path) -> str:
    """What the user is about to fetch and accept, printed before anything is downloaded."""
    lines = [f"{name}: {source.title}", f"  from:    {source.homepage}"]
    lines += [f"  archive: {archive.url}" for archive in source.archives]
    lines += [f"  layout:  {source.layout.replace('<to>', str(to))}"]
    lines += [f"  note:    {note}" for note in source.notes]
    lines += ["", "Licence:", f"  {source.licence}"]
    return "\n".join(lines)


def _accepted(flag: bool) -> bool:
    if flag:
        return True
    if not sys.stdin.isatty():
        return False
    return input("Accept this licence? [y/N] ").strip().lower() in {"y", "yes"}


# ---------------------------------------------------------------------------------------- mechanism


def fetch_corpus(name: str, source: Source, to: Path) -> Path:
    """Download, verify and unpack ``source`` into ``to/name``; returns that folder (the ``--root``).

    Archives are kept in ``to/.downloads`` until the corpus verifies, so an interrupted run resumes
    where it stopped; the corpus folder appears only once complete (unpacked beside it, then renamed).
    """
    root = Path(to) / name
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DownloadError(f"{root} already exists; refusing to overwrite it (remove it, or pick another --to)")
    downloads = Path(to) / ".downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    try:
        files = [download(archive.url, downloads / archive.filename, archive.sha256) for archive in source.archives]
    finally:
        if not any(downloads.iterdir()):
            downloads.rmdir()  # nothing to resume: leave no trace
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=to))
    try:
        for archive, path in zip(source.archives, files):
            try:
                unpack(path, staging, archive.members)
            except DownloadError as error:
                path.unlink()  # unreadable: the next run fetches it again
                raise DownloadError(f"{error}; it was deleted, run again to download it anew") from error
        try:
            verify_tree(staging, source.files, source.audio_sha256)
        except DownloadError as error:
            kept = ", ".join(str(path) for path in files)
            raise DownloadError(f"{error} (kept {kept}; delete it to download again)") from error
        if root.exists():
            root.rmdir()  # empty, checked above
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for path in files:
        path.unlink()
    if not any(downloads.iterdir()):
        downloads.rmdir()
    return root


def download(url: str, dest: Path, sha256: str | None = None, *, timeout: float = TIMEOUT_S) -> Path:
    """``url`` -> ``dest``, resuming a ``dest.part`` left by an interrupted run with an HTTP Range request.

    A complete ``dest`` that matches ``sha256`` is reused. A mismatching download is deleted (so
    that the next run starts over) and reported.
    """
    if dest.exists():
        _check_sha256(dest, sha256, url)
        return dest
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={have}-"} if have else {})}
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and have:  # nothing left to send: the part file is already whole
            response = None
        else:
            raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        hint = "; run again to resume" if have else ""
        raise DownloadError(f"{url}: {getattr(error, 'reason', error)}{hint}") from error
    if response is not None:
        with response:
            resumed = have and response.status == 206 and _range_start(response.headers.get("Content-Range")) == have
            if have and not resumed:
                print(f"{dest.name}: the server did not resume; downloading from the start", file=sys.stderr)
                have = 0
            total = _total_size(response, have)
            _copy(response, part, append=bool(resumed), have=have, total=total, url=url)
    os.replace(part, dest)
    _check_sha256(dest, sha256, url)
    return dest


def unpack(archive: Path, out: Path, members: Iterable[tuple[str, str]] = (("", ""),)) -> int:
    """Extract the members of a zip or tar archive under the given prefixes; returns files written.

    An absolute path or ``..`` in a member is refused (an archive must not write outside ``out``).
    A damaged archive raises ``DownloadError``.
    """
    members = list(members)
    count = 0
    try:
        for name, read in _archive_entries(archive):
            target = _target(name, members)
            if target is None:
                continue
            pure = PurePosixPath(target)
            if pure.is_absolute() or ".." in pure.parts or not pure.parts:
                raise DownloadError(f"{archive.name}: unsafe path in archive: {name!r}")
            path = out.joinpath(*pure.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            with read() as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            count += 1
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as error:
        raise DownloadError(f"{archive.name} is damaged or not an archive ({error})") from error
    return count


def audio_files(root: Path) -> list[Path]:
    """The audio files under ``root``, in a stable order."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def tree_digest(root: Path) -> str:
    """SHA-256 over ``relative/path<TAB>sha256-of-file`` lines of every audio file under ``root``.

    It does not depend on how the files were packed (GitHub's archives are not byte-stable), only
    on their names and content, so it also checks a copy fetched any other way.
    """
    lines = [f"{p.relative_to(root).as_posix()}\t{_sha256(p)}\n" for p in audio_files(root)]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def verify_tree(root: Path, files: int, digest: str | None) -> None:
    """Raise ``DownloadError`` unless ``root`` holds ``files`` audio files with content ``digest``."""
    found = len(audio_files(root))
    if found != files:
        raise DownloadError(f"expected {files} audio files, found {found}: the archive is not the expected one")
    if digest is not None and (actual := tree_digest(root)) != digest:
        raise DownloadError(f"the audio files' content digest is {actual}, expected {digest}")


# ------------------------------------------------------------------------------------------ helpers


def _copy(response, part: Path, *, append: bool, have: int, total: int | None, url: str) -> None:
    from tqdm.auto import tqdm

    with open(part, "ab" if append else "wb") as out, tqdm(
        total=total, initial=have, unit="B", unit_scale=True, desc=part.name[: -len(".part")], disable=None
    ) as bar:
        try:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as error:
            raise DownloadError(f"{url}: interrupted ({error!r}); run again to resume") from error
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url}: got {size} of {total} bytes; run again to resume")


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", content_range or "")
    return int(match.group(1)) if match else None


def _total_size(response, have: int) -> int | None:
    match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range") or "")
    if match and response.status == 206:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return int(length) + (have if response.status == 206 else 0) if length else None


def _check_sha256(path: Path, expected: str | None, url: str) -> None:
    if expected is None:
        return
    actual = _sha256(path)
    if actual != expected.lower():
        path.unlink()
        raise DownloadError(
            f"{url}: corrupted download (SHA-256 {actual}, expected {expected}); it was deleted, run again"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _target(name: str, members: list[tuple[str, str]]) -> str | None:
    for prefix, dest in members:
        if name == prefix.rstrip("/") and not prefix.endswith("/") and prefix:
            return dest
        if name.startswith(prefix) and (prefix.endswith("/") or not prefix):
            rest = name[len(prefix):]
            return dest + rest if rest else None
    return None


def _archive_entries(archive: Path) -> Iterator[tuple[str, Callable[[], IO[bytes]]]]:
    """(member name, opener) for every regular file of a zip or tar archive, read while iterating."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, (lambda info=info: zf.open(info))
        return
    with tarfile.open(archive) as tf:
        for member in tf:
            if member.isfile():
                yield member.name, (lambda member=member: tf.extractfile(member))
