"""A local dataset host for the download tests: a Range-aware HTTP server on 127.0.0.1 (the
``server`` fixture in conftest.py runs it) and small archives with the real layouts of three
datasets, served at the real URLs' paths with the registry's own entries."""

from __future__ import annotations

import copy
import hashlib
import io
import re
import tarfile
import zipfile
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from PIL import Image

from dicap.data.paper_sources import load_registry

# --- a tiny mirror --------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """GET with ``Range: bytes=N-`` support; the server object carries files and switches."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv = self.server
        body = srv.files.get(self.path)
        rng = self.headers.get("Range")
        if self.path in srv.fail_once:
            status = srv.fail_once.pop(self.path)
            srv.requests.append((self.path, rng, status))
            self.send_error(status)
            return
        if body is None:
            srv.requests.append((self.path, rng, 404))
            self.send_error(404)
            return
        status, start = 200, 0
        if rng and not srv.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(body):
                srv.requests.append((self.path, rng, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        srv.requests.append((self.path, rng, status))
        chunk = body[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Type", srv.content_types.get(self.path, "application/octet-stream"))
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        cut = srv.truncate_once.pop(self.path, None)
        self.wfile.write(chunk if cut is None else chunk[:cut])  # HTTP/1.0: the connection closes after

    def log_message(self, *args: object) -> None:
        pass


def serve(srv, url: str, body: bytes) -> str:
    """Serve ``body`` at the path (and query) of the real ``url``; return the local URL."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    srv.files[path] = body
    return srv.base + path


# --- archives with the real layouts ---------------------------------------------------------


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (seed * 40 % 256, 80, 160)).save(buf, "JPEG")
    return buf.getvalue()


def tar_bytes(entries: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


SPLIT = b'{"train": [], "val": [], "test": []}\n'

# Per dataset: the bytes of each registry file, and the paths the real layout must show.
LAYOUTS = {
    "oxford_pets": (
        {"images.tar.gz": tar_bytes({"images/Abyssinian_1.jpg": jpeg(1), "images/beagle_2.jpg": jpeg(2)}),
         "annotations.tar.gz": tar_bytes({"annotations/list.txt": b"Abyssinian_1 1 1 1\n",
                                          "annotations/trainval.txt": b"Abyssinian_1 1 1 1\n"}),
         "split_zhou_OxfordPets.json": SPLIT},
        ["images/Abyssinian_1.jpg", "images/beagle_2.jpg", "annotations/list.txt"],
    ),
    "dtd": (
        {"dtd-r1.0.1.tar.gz": tar_bytes({"dtd/images/banded/banded_0002.jpg": jpeg(3),
                                         "dtd/images/zigzagged/zigzagged_0003.jpg": jpeg(4),
                                         "dtd/labels/train1.txt": b"banded/banded_0002.jpg\n"}),
         "split_zhou_DescribableTextures.json": SPLIT},
        ["dtd/images/banded/banded_0002.jpg", "dtd/images/zigzagged/zigzagged_0003.jpg", "dtd/labels/train1.txt"],
    ),
    "eurosat": (
        {"EuroSAT.zip": zip_bytes({"2750/AnnualCrop/AnnualCrop_1.jpg": jpeg(5),
                                   "2750/SeaLake/SeaLake_7.jpg": jpeg(6)}),
         "split_zhou_EuroSAT.json": SPLIT},
        ["2750/AnnualCrop/AnnualCrop_1.jpg", "2750/SeaLake/SeaLake_7.jpg"],
    ),
}


def local_registry(srv, keys, overrides: dict[str, bytes] | None = None) -> dict:
    """The real registry's entries for ``keys``, served locally, checksums of the test bytes.

    Published checksums become those of the small archives (same algorithm; cross-checks
    recomputed); files whose registry checksum is null stay null, as in the real thing."""
    real = load_registry()
    reg = {"version": 1, "datasets": {}}
    for key in keys:
        entry = copy.deepcopy(real["datasets"][key])
        blobs = {**LAYOUTS[key][0], **(overrides or {})}
        for f in entry["files"]:
            data = blobs[f["filename"]]
            serve(srv, f["url"], data)
            if f["checksum"] is not None:
                f["checksum"] = hashlib.new(f["algorithm"], data).hexdigest()
                for c in f.get("cross_checks", []):
                    c["checksum"] = hashlib.new(c["algorithm"], data).hexdigest()
        reg["datasets"][key] = entry
    return reg
