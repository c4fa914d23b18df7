"""``python -m finetune download`` against a real HTTP server on 127.0.0.1 serving a fake archive.

The server speaks HTTP Range like Zenodo and GitHub do, and can be told to drop the connection
part-way, to ignore Range, or to serve damaged bytes, so resuming and corruption are exercised for
real. No test reaches the network.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from finetune import download as dl
from finetune.download import SOURCES, Archive, DownloadError, Source, unpack, verify_tree

REPO = Path(__file__).resolve().parents[1]
TOP = "fake-0123abcd"  # the top folder of a GitHub-style archive


class FakeServer:
    """Serves ``files`` (path -> bytes) with Range support; records each request's Range header."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.drop_after: int | None = None  # close the first response after this many body bytes
        self.ignore_range = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                outer.requests.append((self.path, self.headers.get("Range")))
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and not outer.ignore_range:
                    start = int(match.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                payload = body[start:]
                if outer.drop_after is not None:
                    payload, outer.drop_after = payload[: outer.drop_after], None
                    self.wfile.write(payload)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


def clips() -> dict[str, bytes]:
    """Relative path -> content of the fake corpus: 3 clips in 2 speaker folders, plus a text file."""
    return {
        "f1/rab-f1-b1.wav": b"RIFF" + os.urandom(3000),
        "f1/neu-f1-b1.wav": b"RIFF" + os.urandom(2000),
        "m1/rab-m1-b1.wav": b"RIFF" + os.urandom(5000),
    }


def make_zip(files: dict[str, bytes], extra: dict[str, bytes] | None = None) -> bytes:
    """A GitHub-style archive: the corpus under ``TOP/audio/``, other repository files beside it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{TOP}/README.md", "not part of the corpus")
        for name, data in files.items():
            zf.writestr(f"{TOP}/audio/{name}", data)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buffer.getvalue()


def expected_digest(files: dict[str, bytes]) -> str:
    """The tree digest written out by hand (not by tree_digest) from the known contents."""
    lines = "".join(f"{name}\t{hashlib.sha256(data).hexdigest()}\n" for name, data in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def fake_source(url: str, archive: bytes | None, files: dict[str, bytes], *, audio: bool = True) -> Source:
    return Source(
        title="Fake corpus",
        homepage="http://127.0.0.1/",
        licence="FAKE LICENCE TEXT: research use only.",
        layout="<to>/fake/f1/rab-f1-b1.wav",
        files=len(files),
        audio_sha256=expected_digest(files) if audio else None,
        archives=(
            Archive(
                url,
                "fake.zip",
                sha256=hashlib.sha256(archive).hexdigest() if archive is not None else None,
                members=((f"{TOP}/audio/", ""),),
            ),
        ),
    )


def run_cli(monkeypatch, source: Source, to: Path, *extra: str) -> int:
    """``python -m finetune download fake --to TO`` in-process, with ``fake`` added to SOURCES."""
    monkeypatch.setitem(SOURCES, "fake", source)
    parser = argparse.ArgumentParser()
    dl.add_arguments(parser)
    return dl.run(parser.parse_args(["fake", "--to", str(to), *extra]))


def assert_corpus(root: Path, files: dict[str, bytes]) -> None:
    found = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert found == files


def test_download_verifies_unpacks_and_prints_the_licence(server, tmp_path, monkeypatch, capsys):
    files = clips()
    archive = make_zip(files)
    server.files["/fake.zip"] = archive
    rc = run_cli(monkeypatch, fake_source(server.url + "/fake.zip", archive, files), tmp_path, "--accept-licence")
    out = capsys.readouterr().out
    assert rc == 0
    assert "FAKE LICENCE TEXT" in out
    assert f"--root {tmp_path / 'fake'}" in out
    assert_corpus(tmp_path / "fake", files)  # only the corpus folder of the archive, README left out
    assert not (tmp_path / ".downloads").exists()  # the archive is removed once the corpus verifies
    assert [p.name for p in tmp_path.iterdir()] == ["fake"]  # no staging folder left behind


def test_licence_must_be_accepted(server, tmp_path, monkeypatch, capsys):
    files = clips()
    archive = make_zip(files)
    server.files["/fake.zip"] = archive
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: no prompt possible
    rc = run_cli(monkeypatch, fake_source(server.url + "/fake.zip", archive, files), tmp_path)
    captured = capsys.readouterr()
    assert rc == 2
    assert "FAKE LICENCE TEXT" in captured.out
    assert "--accept-licence" in captured.err
    assert server.requests == []


def test_refuses_to_overwrite_an_existing_corpus_folder(server, tmp_path, monkeypatch, capsys):
    files = clips()
    archive = make_zip(files)
    server.files["/fake.zip"] = archive
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "mine.wav").write_bytes(b"keep me")
    rc = run_cli(monkeypatch, fake_source(server.url + "/fake.zip", archive, files), tmp_path, "--accept-licence")
    assert rc == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "fake" / "mine.wav").read_bytes() == b"keep me"
    assert server.requests == []  # refused before downloading anything


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path, monkeypatch, capsys):
    files = clips()
    archive = make_zip(files)
    server.files["/fake.zip"] = archive
    server.drop_after = len(archive) // 3
    source = fake_source(server.url + "/fake.zip", archive, files)
    assert run_cli(monkeypatch, source, tmp_path, "--accept-licence") == 2
    assert "run again to resume" in capsys.readouterr().err
    part = tmp_path / ".downloads" / "fake.zip.part"
    assert part.stat().st_size == len(archive) // 3
    assert not (tmp_path / "fake").exists()

    assert run_cli(monkeypatch, source, tmp_path, "--accept-licence") == 0
    assert server.requests == [("/fake.zip", None), ("/fake.zip", f"bytes={len(archive) // 3}-")]
    assert_corpus(tmp_path / "fake", files)


def test_a_server_that_ignores_range_restarts_the_download(server, tmp_path, monkeypatch):
    files = clips()
    archive = make_zip(files)
    server.files["/fake.zip"] = archive
    server.ignore_range = True
    downloads = tmp_path / ".downloads"
    downloads.mkdir()
    (downloads / "fake.zip.part").write_bytes(archive[:100])
    assert run_cli(monkeypatch, fake_source(server.url + "/fake.zip", archive, files), tmp_path, "--accept-licence") == 0
    assert server.requests == [("/fake.zip", "bytes=100-")]
    assert_corpus(tmp_path / "fake", files)


def test_a_whole_part_file_is_finished_without_refetching(server, tmp_path):
    archive = make_zip(clips())
    server.files["/fake.zip"] = archive
    (tmp_path / "fake.zip.part").write_bytes(archive)
    sha = hashlib.sha256(archive).hexdigest()
    path = dl.download(server.url + "/fake.zip", tmp_path / "fake.zip", sha)
    assert path.read_bytes() == archive
    assert server.requests == [("/fake.zip", f"bytes={len(archive)}-")]  # answered 416: nothing left


def test_a_corrupted_download_is_detected_and_deleted(server, tmp_path, monkeypatch, capsys):
    files = clips()
    archive = make_zip(files)
    damaged = bytearray(archive)
    damaged[len(damaged) // 2] ^= 0xFF
    server.files["/fake.zip"] = bytes(damaged)
    source = fake_source(server.url + "/fake.zip", archive, files)
    assert run_cli(monkeypatch, source, tmp_path, "--accept-licence") == 2
    err = capsys.readouterr().err
    assert "corrupted download" in err and hashlib.sha256(damaged).hexdigest() in err
    assert not (tmp_path / "fake").exists()
    assert list(tmp_path.rglob("fake.zip*")) == []  # deleted, so the next run starts over

    server.files["/fake.zip"] = archive  # the mirror is fixed: the same command now succeeds
    assert run_cli(monkeypatch, source, tmp_path, "--accept-licence") == 0
    assert_corpus(tmp_path / "fake", files)


def test_without_an_archive_checksum_the_audio_digest_still_catches_damage(server, tmp_path, monkeypatch, capsys):
    files = clips()
    tampered = dict(files, **{"f1/neu-f1-b1.wav": b"RIFF" + bytes(2000)})
    server.files["/fake.zip"] = make_zip(tampered)
    source = fake_source(server.url + "/fake.zip", None, files)  # archive sha256 unknown
    assert run_cli(monkeypatch, source, tmp_path, "--accept-licence") == 2
    err = capsys.readouterr().err
    assert "content digest" in err and "delete it to download again" in err
    assert not (tmp_path / "fake").exists()
    assert [p.name for p in tmp_path.iterdir()] == [".downloads"]  # staging removed


def test_a_wrong_file_count_is_reported(server, tmp_path, monkeypatch, capsys):
    files = clips()
    fewer = dict(list(files.items())[:2])
    server.files["/fake.zip"] = make_zip(fewer)
    source = fake_source(server.url + "/fake.zip", None, files, audio=False)
    assert run_cli(monkeypatch, source, tmp_path, "--accept-licence") == 2
    assert "expected 3 audio files, found 2" in capsys.readouterr().err


def test_a_truncated_archive_without_checksum_is_deleted_for_the_next_run(server, tmp_path, monkeypatch, capsys):
    files = clips()
    archive = make_zip(files)
    server.files["/fake.zip"] = archive[: len(archive) - 40]  # the zip's central directory cut off
    source = fake_source(server.url + "/fake.zip", None, files)
    assert run_cli(monkeypatch, source, tmp_path, "--accept-licence") == 2
    assert "damaged or not an archive" in capsys.readouterr().err
    assert not (tmp_path / ".downloads" / "fake.zip").exists()


def test_an_unreachable_server_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    files = clips()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/fake.zip"  # closed once the block ends
    assert run_cli(monkeypatch, fake_source(url, None, files), tmp_path, "--accept-licence") == 2
    assert "refused" in capsys.readouterr().err.lower()
    assert list(tmp_path.iterdir()) == []


def test_http_errors_are_one_readable_line(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        dl.download(server.url + "/missing.zip", tmp_path / "missing.zip")


def test_an_archive_cannot_write_outside_the_corpus_folder(tmp_path):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(make_zip({}, extra={f"{TOP}/audio/../../evil.wav": b"x"}))
    with pytest.raises(DownloadError, match="unsafe path"):
        unpack(archive, tmp_path / "out", [(f"{TOP}/audio/", "")])
    assert not (tmp_path / "evil.wav").exists()


def test_manual_corpora_print_where_to_get_them(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    dl.add_arguments(parser)
    for name in ("crema-d", "tess"):
        assert dl.run(parser.parse_args([name, "--to", str(tmp_path)])) == 1
        out = capsys.readouterr().out
        assert "cannot be downloaded automatically" in out
        assert f"--root {tmp_path / name}" in out
        assert "Licence" in out and SOURCES[name].homepage in out
    assert list(tmp_path.iterdir()) == []


def test_every_known_corpus_has_a_complete_source():
    assert set(SOURCES) == {"emodb", "ravdess", "crema-d", "tess", "nemo", "emovo", "turev"}
    for name, source in SOURCES.items():
        assert source.licence and source.layout and source.files > 0, name
        assert "--root <to>/" + name in source.layout, name
        assert source.automatic != bool(source.manual), name
        for archive in source.archives:
            assert archive.url.startswith(("http://", "https://")), name
            assert archive.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", archive.sha256), name
        assert source.audio_sha256 is None or re.fullmatch(r"[0-9a-f]{64}", source.audio_sha256), name


def _local_copy(name: str) -> Path | None:
    """A copy of the real corpus on this machine, laid out as ``--root`` expects, if there is one."""
    shared = Path(os.environ.get("SER_SHARED_DATA", REPO.parent / "shared" / "data"))
    candidates = [shared / name, *(parent / "corpora" / name for parent in REPO.parents)]
    if os.environ.get("SER_CORPORA"):
        candidates.insert(0, Path(os.environ["SER_CORPORA"]) / name)
    return next((path for path in candidates if path.is_dir()), None)


@pytest.mark.parametrize("name", [name for name, source in SOURCES.items() if source.audio_sha256])
def test_recorded_counts_and_digests_match_the_real_corpus(name):
    root = _local_copy(name)
    if root is None:
        pytest.skip(f"no local copy of {name} (set SER_CORPORA to a folder holding {name}/)")
    verify_tree(root, SOURCES[name].files, SOURCES[name].audio_sha256)


def test_licence_texts_are_written_once_in_the_corpus_specs():
    """download, the run cards and the probe card all print ``ser.corpora.CorpusSpec.licence``."""
    from finetune.card import corpus_licence
    from finetune.probe_card import _training_data
    from ser.corpora import corpus_spec

    for name, source in SOURCES.items():
        licence = corpus_spec(name).licence
        assert source.licence == licence, name
        assert licence in corpus_licence(name) and licence in _training_data(name), name
    both = corpus_licence("emodb,nemo")
    assert corpus_spec("emodb").licence in both and corpus_spec("nemo").licence in both
    assert "Unknown" in corpus_licence("folder")  # no publisher's terms known: said so
