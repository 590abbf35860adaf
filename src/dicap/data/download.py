"""Resumable, verified downloads with the standard library only.

The paper suite's datasets are gigabytes (SUN397 alone is 39 GB) served by university web
servers, so a download must survive a dropped connection without starting over, and must
never leave a file under its final name that has not been checked.  Hence:

* bytes go to ``<dest>.part``; an interrupted transfer resumes from its size with an HTTP
  ``Range: bytes=N-`` request.  A server that ignores Range (answers 200) restarts it from
  zero, a 206 whose Content-Range does not start at N is not trusted either;
* the finished ``.part`` is hashed (every published checksum of the file, in one pass) and
  only a match is renamed onto ``dest``; a mismatch deletes it and raises one line naming the
  URL and both hashes, so a corrupted or substituted file can never be used by accident;
* a file whose source publishes no checksum (CoOp's Google-Drive split files) is not trusted
  silently: the sha256 seen is written to ``<dest>.sha256`` and a warning says the file is
  UNVERIFIED.  Later runs compare against that record (trust on first use), so a file that
  changes on disk afterwards is caught; pin the recorded value in the registry once reviewed.

Only ``urllib.request`` is used: no new dependency, and it follows redirects (CaltechDATA,
Hugging Face and Google Drive all redirect) while keeping the Range header.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tqdm import tqdm

from dicap.io import atomic_output

log = logging.getLogger(__name__)

ALGORITHMS = ("sha256", "md5")
MIRROR_ENV = "DICAP_MIRROR"
CHUNK = 1 << 20
# Worth another try: the server or the network hiccuped.  A 404 or 403 will not fix itself.
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
TRANSIENT = (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException)


class TruncatedDownload(ConnectionError):
    """The server closed the connection before sending all the bytes it announced."""


@dataclass(frozen=True)
class Verified:
    """A file on disk and what is known about it: what the registry checked, and its sha256."""

    path: Path
    algorithm: str
    checksum: str | None  # the published value that matched; None when nobody publishes one
    sha256: str
    verified: bool

    def record(self) -> dict[str, object]:
        return {"filename": self.path.name, "algorithm": self.algorithm, "checksum": self.checksum,
                "sha256": self.sha256, "verified": self.verified}


def mirror_url(url: str, base_url: str | None = None) -> str:
    """``url`` with its scheme and host replaced by ``base_url`` (or ``$DICAP_MIRROR``).

    The path and query are kept, so a mirror serves each file at the path the original host
    uses: ``https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz`` with
    ``DICAP_MIRROR=http://cache.lan:8000/datasets`` becomes
    ``http://cache.lan:8000/datasets/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz``.  Checksums are
    verified exactly as for the original host, so a mirror cannot substitute files.
    """
    base = base_url if base_url is not None else os.environ.get(MIRROR_ENV) or None
    if not base:
        return url
    b, u = urlsplit(base), urlsplit(url)
    if b.scheme not in ("http", "https") or not b.netloc:
        raise ValueError(f"mirror base URL {base!r} must look like http(s)://host[:port][/prefix]")
    return urlunsplit((b.scheme, b.netloc, b.path.rstrip("/") + u.path, u.query, ""))


def file_digests(path: str | os.PathLike, algorithms: Iterable[str]) -> dict[str, str]:
    """Hex digests of ``path`` for every algorithm, reading the file once."""
    hashers = {a: _hasher(a) for a in dict.fromkeys(algorithms)}
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


def fetch(
    url: str,
    dest: str | os.PathLike,
    checksum: str | None,
    algorithm: str = "sha256",
    *,
    cross_checks: Mapping[str, str] | None = None,
    retries: int = 4,
    backoff: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Verified:
    """Download ``url`` to ``dest`` unless a verified copy is already there.

    ``checksum`` is the published ``algorithm`` ("sha256" or "md5") digest; ``None`` means
    none is published (the file is kept, its sha256 recorded in ``<dest>.sha256``, and a
    warning logged).  ``cross_checks`` maps further algorithms to values published elsewhere
    for the same file; all must match.  Transient network errors are retried ``retries``
    times, sleeping ``backoff * 2**attempt`` seconds, each retry resuming the ``.part``
    (a ``.part`` left by an earlier call is resumed only when a checksum will vouch for it).
    """
    dest = Path(dest)
    expected = _expected(checksum, algorithm, cross_checks)
    present = _already_there(url, dest, expected, algorithm)
    if present is not None:
        return present
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not expected and part.exists():
        # Without a checksum, bytes left by an earlier run could belong to an older version of
        # the file and nothing would notice the splice: such files start from zero.
        log.info("%s has no published checksum; discarding the partial download %s", url, part)
        part.unlink()
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout, progress)
            break
        except urllib.error.HTTPError as err:
            if err.code not in RETRY_STATUS or attempt == retries:
                raise ConnectionError(f"could not download {url}: HTTP {err.code} {err.reason}") from err
            _wait(url, part, err, attempt, backoff)
        except TRANSIENT as err:
            if isinstance(err, urllib.error.URLError) and isinstance(err.reason, str):
                raise ConnectionError(f"could not download {url}: {err.reason}") from err  # e.g. unknown url type
            if attempt == retries:
                raise ConnectionError(f"could not download {url} after {retries + 1} attempts: {err}") from err
            _wait(url, part, err, attempt, backoff)
    return _verify_and_place(url, part, dest, expected, algorithm)


def verify_placed(
    path: str | os.PathLike,
    checksum: str | None,
    algorithm: str,
    instructions: str,
    *,
    cross_checks: Mapping[str, str] | None = None,
) -> Verified:
    """Check a file the user had to place by hand (ImageNet's licence, Stanford Cars' dead host).

    A missing file raises FileNotFoundError whose message is ``instructions``, word for word,
    because that is the only useful thing to tell the user.  A wrong checksum raises ValueError
    but leaves the file alone: it is the user's copy (possibly 140 GB), not ours to delete.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(instructions)
    expected = _expected(checksum, algorithm, cross_checks)
    if not expected:
        return _unverified(path, str(path))
    actual = file_digests(path, {**expected, "sha256": ""})  # one pass over a file that may be 140 GB
    for alg, value in expected.items():
        if actual[alg] != value:
            raise ValueError(f"{path} is not the expected file: {alg} expected {value}, got {actual[alg]}; "
                             "replace it with the original (it was left in place)")
    return Verified(path, algorithm, expected[algorithm], actual["sha256"], True)


# --- internals -------------------------------------------------------------------------------


def _hasher(algorithm: str) -> "hashlib._Hash":
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unsupported checksum algorithm {algorithm!r}; use one of {ALGORITHMS}")
    return hashlib.new(algorithm)


def _expected(checksum: str | None, algorithm: str, cross_checks: Mapping[str, str] | None) -> dict[str, str]:
    """All published digests of one file, lower-cased, keyed by algorithm."""
    _hasher(algorithm)
    expected = {algorithm: checksum.lower()} if checksum else {}
    for alg, value in (cross_checks or {}).items():
        _hasher(alg)
        if alg in expected and expected[alg] != value.lower():
            raise ValueError(f"two different published {alg} values for one file: {expected[alg]} and {value}")
        expected[alg] = value.lower()
    return expected


def _already_there(url: str, dest: Path, expected: dict[str, str], algorithm: str) -> Verified | None:
    """The verified file if ``dest`` exists and matches, else None (a stale one is removed)."""
    if not dest.is_file():
        return None
    if not expected:
        return _unverified(dest, url)
    actual = file_digests(dest, {**expected, "sha256": ""})
    if all(actual[a] == v for a, v in expected.items()):
        return Verified(dest, algorithm, expected[algorithm], actual["sha256"], True)
    # Only verified files are ever renamed onto dest, so this one was changed afterwards
    # (or the registry was updated): fetch it again rather than trust it.
    log.warning("%s does not match its published checksum any more; downloading it again", dest)
    dest.unlink()
    return None


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part``; return when the server has sent everything."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "dicap-downloader (python urllib)", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            # "Range not satisfiable": our .part is at least as long as the file.  Complete
            # (killed between transfer and rename) is the common case; verification decides.
            total = _content_range(err.headers.get("Content-Range"))[2]
            if total == offset:
                return
            log.warning("%s: server refused resuming at byte %d; starting again", url, offset)
            part.unlink()
            raise TruncatedDownload(f"stale partial file for {url}") from err
        raise
    with response:
        _refuse_html(url, part, response)
        if offset and response.status == 206:
            start, _, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:  # cannot splice that in; the retry starts from zero
                part.unlink()
                raise TruncatedDownload(f"{url} answered a resume at byte {offset} with bytes from {start}")
            mode = "ab"
        else:
            if offset:
                log.info("%s ignores Range requests; restarting the download from zero", url)
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        remaining = int(length) if length is not None else None
        total = offset + remaining if remaining is not None else None
        received = 0
        with open(part, mode) as fh, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                           desc=part.name[:-5], disable=not progress, mininterval=1) as bar:
            while chunk := response.read(CHUNK):
                fh.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if remaining is not None and received < remaining:
        raise TruncatedDownload(f"{url}: connection closed after {offset + received} of {total} bytes")


def _refuse_html(url: str, part: Path, response: http.client.HTTPResponse) -> None:
    """Google Drive answers quota and virus-scan warnings with an HTML page and status 200;
    saving that under ``split_zhou_X.json`` would only fail much later, far from the cause."""
    content_type = response.headers.get("Content-Type", "")
    if content_type.startswith("text/html") and not part.name[:-5].endswith((".html", ".htm")):
        raise ValueError(f"{url} returned an HTML page instead of {part.name[:-5]} (a quota or confirmation page?); "
                         f"download it in a browser and place it at {part.with_suffix('')}")


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """(start, end, total) of a ``Content-Range: bytes start-end/total`` (or ``bytes */total``)."""
    if not value or not value.startswith("bytes "):
        return None, None, None
    span, _, total = value[6:].partition("/")
    start, _, end = span.partition("-")
    as_int = lambda s: int(s) if s.strip().isdigit() else None  # noqa: E731
    return as_int(start), as_int(end), as_int(total)


def _wait(url: str, part: Path, err: BaseException, attempt: int, backoff: float) -> None:
    delay = backoff * 2**attempt
    have = part.stat().st_size if part.exists() else 0
    log.warning("download of %s interrupted (%s); retrying in %.1f s from byte %d", url, err, delay, have)
    time.sleep(delay)


def _verify_and_place(url: str, part: Path, dest: Path, expected: dict[str, str], algorithm: str) -> Verified:
    actual = file_digests(part, {**expected, "sha256": ""})
    for alg, value in expected.items():
        if actual[alg] != value:
            part.unlink(missing_ok=True)
            raise ValueError(f"checksum mismatch for {url}: expected {alg} {value}, got {actual[alg]} (file deleted)")
    os.replace(part, dest)
    if not expected:
        return _record_unverified(dest, url, actual["sha256"])
    return Verified(dest, algorithm, expected[algorithm], actual["sha256"], True)


def _unverified(path: Path, origin: str) -> Verified:
    """An already-present file with no published checksum: hold it to its first-seen sha256."""
    sha = file_digests(path, ["sha256"])["sha256"]
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.exists():
        recorded = sidecar.read_text().split()[0].lower()
        if recorded != sha:
            raise ValueError(f"{path} changed since it was first downloaded: sha256 recorded in {sidecar.name} "
                             f"{recorded}, now {sha}; delete both to fetch it again")
        log.warning("%s is UNVERIFIED (no published checksum); it still matches the sha256 %s first recorded "
                    "in %s", path, sha, sidecar.name)
        return Verified(path, "sha256", None, sha, False)
    return _record_unverified(path, origin, sha)


def _record_unverified(path: Path, origin: str, sha: str) -> Verified:
    sidecar = path.with_name(path.name + ".sha256")
    with atomic_output(sidecar) as tmp:
        tmp.write_text(f"{sha}  {path.name}\n")
    log.warning("%s is UNVERIFIED: %s publishes no checksum; recorded its sha256 %s in %s -- pin it in the "
                "registry once you have checked the file", path, origin, sha, sidecar.name)
    return Verified(path, "sha256", None, sha, False)
