"""The downloader against a local HTTP server with Range support."""

import hashlib
import http.server
import io
import re
import tarfile
import threading
import warnings

import pytest
from data_helpers import build_speech_commands_tree

from gradlab.data import DownloadError, load_speech_commands
from gradlab.data.download import (
    EXTRACTED_MARKER,
    MAX_MEMBER_BYTES,
    download_file,
    extract_speech_commands,
)
from gradlab.data.speech_commands import (
    ARCHIVE_NAME,
    FOLDER_NAME,
    SPEECH_COMMANDS_SHA256,
    SPEECH_COMMANDS_URL,
    prepare_speech_commands,
)


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}  # path -> bytes
    cut_after: dict = {}  # path -> bytes sent before the connection drops
    log: list = []  # (path, Range header)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.log.append((self.path, self.headers.get("Range")))
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match:
            start = int(match[1])
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
        chunk = body[start:]
        if self.path in self.cut_after:
            self.wfile.write(chunk[: self.cut_after.pop(self.path)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(chunk)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def archive_bytes(tmp_path_factory):
    """A small archive in the real layout: ./<word>/<file>.wav, the lists, noise, a README."""
    source = tmp_path_factory.mktemp("source")
    build_speech_commands_tree(
        source, {"one": 5, "two": 5, "three": 5, "four": 3}, validation=1, test=1
    )
    (source / "README.md").write_text("fake")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(source.rglob("*")):
            tar.add(path, arcname="./" + path.relative_to(source).as_posix(), recursive=False)
    return buffer.getvalue()


@pytest.fixture()
def server(archive_bytes):
    _Handler.files = {
        "/good.tar.gz": archive_bytes,
        "/truncated.tar.gz": archive_bytes[: len(archive_bytes) // 2],
        "/wrong.tar.gz": archive_bytes[:-10] + b"0123456789",
    }
    _Handler.cut_after = {}
    _Handler.log = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", archive_bytes
    httpd.shutdown()
    httpd.server_close()


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def test_download_verifies_and_renames(server, tmp_path):
    url, data = server
    target = tmp_path / "a.tar.gz"
    digest = download_file(f"{url}/good.tar.gz", target, sha256=_sha(data), progress=False)
    assert digest == _sha(data) and target.read_bytes() == data
    assert not (tmp_path / "a.tar.gz.part").exists()
    assert _sha(data) in (tmp_path / "a.tar.gz.sha256").read_text()
    # A second call reuses the verified file without a request.
    _Handler.log.clear()
    download_file(f"{url}/good.tar.gz", target, sha256=_sha(data), progress=False)
    assert _Handler.log == []


def test_interrupted_download_is_kept_and_resumed_with_range(server, tmp_path):
    url, data = server
    target = tmp_path / "a.tar.gz"
    _Handler.cut_after["/good.tar.gz"] = 1000
    with pytest.raises(DownloadError, match="resume"):
        download_file(f"{url}/good.tar.gz", target, sha256=_sha(data), progress=False)
    part = tmp_path / "a.tar.gz.part"
    assert not target.exists() and part.stat().st_size == 1000
    download_file(f"{url}/good.tar.gz", target, sha256=_sha(data), progress=False)
    assert _Handler.log[-1] == ("/good.tar.gz", "bytes=1000-")
    assert target.read_bytes() == data and not part.exists()


def test_complete_part_file_is_verified_after_416(server, tmp_path):
    url, data = server
    (tmp_path / "a.tar.gz.part").write_bytes(data)
    download_file(f"{url}/good.tar.gz", tmp_path / "a.tar.gz", sha256=_sha(data), progress=False)
    assert (tmp_path / "a.tar.gz").read_bytes() == data


@pytest.mark.parametrize("name", ["truncated.tar.gz", "wrong.tar.gz"])
def test_bad_archive_never_passes_for_a_good_one(server, tmp_path, name):
    url, data = server
    target = tmp_path / "a.tar.gz"
    with pytest.raises(DownloadError, match="expected"):
        download_file(f"{url}/{name}", target, sha256=_sha(data), progress=False)
    assert not target.exists() and not (tmp_path / "a.tar.gz.part").exists()


def test_unverified_download_warns_and_records_the_digest(server, tmp_path):
    url, data = server
    with pytest.warns(UserWarning, match=_sha(data)):
        digest = download_file(
            f"{url}/good.tar.gz", tmp_path / "a.tar.gz", sha256=None, progress=False
        )
    assert digest == _sha(data)


def test_extraction_keeps_only_chosen_words_and_lists(server, tmp_path):
    _, data = server
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(data)
    tree = tmp_path / "tree"
    extract_speech_commands(archive, tree, ["two", "one"])
    assert sorted(p.name for p in tree.iterdir()) == sorted(
        [EXTRACTED_MARKER, "one", "two", "testing_list.txt", "validation_list.txt"]
    )
    assert len(list((tree / "one").glob("*.wav"))) == 5
    with pytest.raises(ValueError, match="no files for: zebra"):
        extract_speech_commands(archive, tree, ["zebra"])
    truncated = tmp_path / "t.tar.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DownloadError, match="truncated or corrupt"):
        extract_speech_commands(truncated, tmp_path / "tree2", ["one", "two", "three", "four"])


def test_an_oversized_member_is_refused_and_never_written(server, tmp_path, monkeypatch):
    """A 9.4 MB archive once extracted a 2 GiB "wav"; members are capped."""
    url, _ = server
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, size in (
            ("./validation_list.txt", 0),
            ("./testing_list.txt", 0),
            ("./one/00000000_nohash_0.wav", 1000),
            ("./one/big_nohash_0.wav", MAX_MEMBER_BYTES + 1),
        ):
            member = tarfile.TarInfo(name)
            member.size = size
            tar.addfile(member, io.BytesIO(bytes(size)))
    crafted = buffer.getvalue()
    assert len(crafted) < MAX_MEMBER_BYTES // 100  # zeros compress: the archive looks harmless
    _Handler.files["/big.tar.gz"] = crafted
    monkeypatch.setenv("GRADLAB_DATA", str(tmp_path / "home"))
    with pytest.raises(DownloadError, match=r"refusing to extract \./one/big_nohash_0\.wav"):
        prepare_speech_commands(
            words=["one"], url=f"{url}/big.tar.gz", sha256=_sha(crafted), progress=False
        )
    tree = tmp_path / "home" / FOLDER_NAME
    written = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())
    assert written == ["one/00000000_nohash_0.wav", "testing_list.txt", "validation_list.txt"]
    assert not (tmp_path / "home" / ARCHIVE_NAME).exists()  # not kept for reuse


def test_loader_downloads_into_the_data_folder_and_adds_words_later(server, tmp_path, monkeypatch):
    url, data = server
    monkeypatch.setenv("GRADLAB_DATA", str(tmp_path / "home"))
    options = dict(url=f"{url}/good.tar.gz", sha256=_sha(data), num_workers=1, progress=False)
    splits = load_speech_commands(words=["one", "two"], **options)
    tree = tmp_path / "home" / FOLDER_NAME
    assert splits.info["root"] == str(tree)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (6, 2, 2)
    assert not (tree / "three").exists() and not (tree / "_background_noise_").exists()
    assert (tmp_path / "home" / "features").is_dir()  # default cache under GRADLAB_DATA
    requests = len(_Handler.log)
    one_file = sorted((tree / "one").glob("*.wav"))[0]
    before = one_file.stat().st_mtime_ns
    splits = load_speech_commands(words=["three", "one"], **options)
    assert len(_Handler.log) == requests  # extracted from the kept archive, no new download
    assert splits.class_names == ("three", "one") and (tree / "three").is_dir()
    assert one_file.stat().st_mtime_ns == before  # "one" was not extracted again


def test_offline_error_says_where_it_looked_why_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADLAB_DATA", str(tmp_path / "home"))
    with pytest.raises(DownloadError) as error:
        prepare_speech_commands(url="http://127.0.0.1:9/none.tar.gz", sha256=None, progress=False)
    message = str(error.value)
    assert str(tmp_path / "home" / FOLDER_NAME) in message  # where
    assert "download failed" in message and "refused" in message.lower()  # what and why
    assert "root=" in message and "GRADLAB_DATA" in message  # how to point at a copy
    assert not (tmp_path / "home" / ARCHIVE_NAME).exists()


def test_corrupt_unverified_archive_is_deleted(server, tmp_path, monkeypatch):
    url, _ = server
    monkeypatch.setenv("GRADLAB_DATA", str(tmp_path / "home"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DownloadError, match="truncated or corrupt"):
            prepare_speech_commands(url=f"{url}/truncated.tar.gz", sha256=None, progress=False)
    assert not (tmp_path / "home" / ARCHIVE_NAME).exists()


def test_the_default_download_is_verified_against_the_pinned_digest(server, tmp_path, monkeypatch):
    url, data = server
    monkeypatch.setenv("GRADLAB_DATA", str(tmp_path / "home"))
    assert SPEECH_COMMANDS_URL.startswith("https://")
    with pytest.raises(DownloadError, match=f"{_sha(data)}, expected {SPEECH_COMMANDS_SHA256}"):
        prepare_speech_commands(url=f"{url}/good.tar.gz", progress=False)  # a fake archive
    assert not (tmp_path / "home" / ARCHIVE_NAME).exists()
    assert not (tmp_path / "home" / FOLDER_NAME).exists()


def test_no_download_when_root_is_given(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        prepare_speech_commands(root=tmp_path, url="http://127.0.0.1:9/x", progress=False)


def test_data_home_honours_gradlab_data_then_xdg(tmp_path, monkeypatch):
    from gradlab.data.paths import data_home, default_cache_dir

    monkeypatch.delenv("GRADLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_home() == tmp_path / "xdg" / "gradlab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_home() == tmp_path / "home" / ".cache" / "gradlab"
    monkeypatch.setenv("GRADLAB_DATA", str(tmp_path / "mine"))
    assert (
        data_home() == tmp_path / "mine" and default_cache_dir() == tmp_path / "mine" / "features"
    )
