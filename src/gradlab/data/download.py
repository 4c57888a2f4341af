"""Downloading and selectively extracting dataset archives.

``download_file`` fetches a URL into ``<destination>.part``, resuming a
partial file with an HTTP Range request, verifies its SHA-256, and only then
renames it into place (``os.replace``), so an interrupted, truncated or
corrupt download is never mistaken for a good archive.
``extract_speech_commands`` streams a ``.tar.gz`` (``tarfile`` mode ``"r|gz"``)
and writes only the chosen words and the split lists.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import tarfile
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

from gradlab.store.atomic import write_atomic

# Not pooch (installed with librosa): pooch checks a SHA-256 and renames into place too, but it downloads into a
# temporary file that it deletes when the transfer fails, with no HTTP Range resume, so an interrupted 2.3 GB
# Speech Commands download would start again from zero; and it only logs the digest of an unpinned download
# where this module warns and records it.

_CHUNK = 1 << 20
LIST_FILES = ("validation_list.txt", "testing_list.txt")
#: Largest archive member written: a one-second 16 kHz 16-bit clip is about
#: 32 KB and each split list about 0.5 MB, so anything larger is refused.
MAX_MEMBER_BYTES = 4 * 1024 * 1024
#: Written into an extracted tree: the words extracted so far.
EXTRACTED_MARKER = ".gradlab_extracted.json"


class DownloadError(OSError):
    """A download or extraction failed; the message says why and what to do."""


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _content_range_start(header: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-", header or "")
    return int(match[1]) if match else None


def download_file(
    url: str,
    destination: str | os.PathLike,
    *,
    sha256: str | None,
    progress: bool = True,
    timeout: float = 60.0,
) -> str:
    """Downloads ``url`` to ``destination``, resuming and verifying.

    An existing ``destination`` is reused when it matches ``sha256`` (or when
    no checksum is given). Bytes arrive in ``<destination>.part``; if that
    file exists from an earlier attempt, only the rest is requested
    (``Range: bytes=<size>-``). A connection that ends early leaves the
    ``.part`` file for the next call to resume. A complete file whose SHA-256
    differs from ``sha256`` is deleted. The digest is also written to
    ``<destination>.sha256``.

    Args:
        url: HTTP(S) URL.
        destination: Final path of the file.
        sha256: Expected hex digest; ``None`` skips verification with a warning.
        progress: Show a tqdm progress bar.
        timeout: Seconds to wait for the server on each read.

    Returns:
        The file's SHA-256 hex digest.

    Raises:
        DownloadError: The server could not be reached, the transfer ended
            early, or the checksum did not match.
    """
    destination = Path(destination)
    expected = sha256.lower() if sha256 else None
    if destination.exists():
        digest = sha256_of(destination)
        if expected is None or digest == expected:
            return digest
        warnings.warn(
            f"{destination} does not match the expected SHA-256; downloading it again", stacklevel=2
        )
        destination.unlink()
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "gradlab"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to fetch: the part is complete
            response = None
        else:
            raise DownloadError(
                f"downloading {url} failed: HTTP {error.code} {error.reason}"
            ) from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"downloading {url} failed: {reason}") from error
    if response is not None:
        with response:
            range_start = _content_range_start(response.headers.get("Content-Range"))
            if response.status == 206 and range_start == offset:
                mode = "ab"
            else:  # the server ignored the range: start over
                offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            received = offset
            with (
                open(part, mode) as handle,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    desc=destination.name,
                    disable=not progress,
                ) as bar,
            ):
                try:
                    while block := response.read(_CHUNK):
                        handle.write(block)
                        received += len(block)
                        bar.update(len(block))
                except (http.client.IncompleteRead, OSError) as error:
                    raise DownloadError(
                        f"downloading {url} was interrupted after {received} bytes ({error}); "
                        f"the partial file {part} is kept and the next attempt resumes it"
                    ) from error
            if total is not None and received < total:
                raise DownloadError(
                    f"downloading {url} ended after {received} of {total} bytes; "
                    f"the partial file {part} is kept and the next attempt resumes it"
                )
    digest = sha256_of(part)
    if expected is not None and digest != expected:
        part.unlink()
        raise DownloadError(
            f"{url} downloaded with SHA-256 {digest}, expected {expected}; "
            f"the file was deleted (corrupt or a different file): try again, or check the URL"
        )
    if expected is None:
        warnings.warn(
            f"no SHA-256 given for {url}; not verified. Its SHA-256 is {digest} "
            f"(recorded in {destination.name}.sha256)",
            stacklevel=2,
        )
    os.replace(part, destination)
    record = destination.with_name(destination.name + ".sha256")
    line = f"{digest}  {destination.name}\n"
    write_atomic(record, lambda temporary: temporary.write_text(line))
    return digest


def _copy_to(source, path: Path, *, limit: int) -> None:
    """Copies at most ``limit`` bytes, whatever the member header claims."""
    with open(path, "wb") as handle:
        while block := source.read(min(_CHUNK, limit + 1 - handle.tell())):
            handle.write(block)
            if handle.tell() > limit:
                raise _MemberTooLarge(handle.tell())


class _MemberTooLarge(Exception):
    pass


def extracted_words(tree: Path) -> set[str]:
    """Words recorded as completely extracted into ``tree``."""
    marker = tree / EXTRACTED_MARKER
    try:
        return set(json.loads(marker.read_text())["words"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def extract_speech_commands(
    archive: str | os.PathLike, tree: str | os.PathLike, words: Iterable[str]
) -> None:
    """Streams a Speech Commands archive, writing only ``words`` and the lists.

    Each file is written to a temporary name and renamed into place; the
    words are recorded in ``EXTRACTED_MARKER`` only after the whole archive
    has been read, so an interrupted extraction is redone.

    Args:
        archive: The ``.tar.gz`` file.
        tree: Folder to extract into (``<tree>/<word>/<file>.wav``).
        words: Word folders to extract.

    Raises:
        DownloadError: The archive is truncated or not a gzip'd tar, or a
            member it would write is larger than ``MAX_MEMBER_BYTES``.
        ValueError: A word has no files in the archive.
    """
    tree = Path(tree)
    wanted = set(words)
    counts = dict.fromkeys(wanted, 0)
    tree.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, mode="r|gz") as stream:
            for member in stream:
                if not member.isfile():
                    continue
                name = member.name[2:] if member.name.startswith("./") else member.name
                parts = name.split("/")
                if name in LIST_FILES:
                    target = tree / name
                elif len(parts) == 2 and parts[0] in wanted and parts[1].endswith(".wav"):
                    target = tree / parts[0] / parts[1]
                    counts[parts[0]] += 1
                else:
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    raise _MemberTooLarge(member.size)
                source = stream.extractfile(member)
                write_atomic(target, partial(_copy_to, source, limit=MAX_MEMBER_BYTES))
    except _MemberTooLarge as error:
        raise DownloadError(
            f"refusing to extract {member.name} from {archive}: it holds {error.args[0]} bytes "
            f"or more, and members are capped at {MAX_MEMBER_BYTES} (a one-second clip is about "
            f"32 KB); this is not a Speech Commands archive: delete it and download it again"
        ) from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DownloadError(
            f"cannot read archive {archive} ({error}): it is truncated or corrupt; "
            f"delete it and download it again"
        ) from error
    missing = sorted(word for word, count in counts.items() if count == 0)
    if missing:
        raise ValueError(f"the archive {archive} has no files for: {', '.join(missing)}")
    record = json.dumps({"words": sorted(extracted_words(tree) | wanted)})
    write_atomic(tree / EXTRACTED_MARKER, lambda temporary: temporary.write_text(record))
