"""The paper suite's downloads (data/download.py), without internet: a Range-aware HTTP server on
127.0.0.1 (local_mirror.py) serves small files; fetch verifies, resumes, retries and refuses."""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import urlsplit

import pytest

from dicap.data.download import fetch, mirror_url, verify_placed
from local_mirror import SPLIT, md5, serve, sha256


def test_fetch_skips_a_file_already_verified(server, tmp_path):
    data = b"x" * 5000
    url = serve(server, "https://example.org/a/file.bin", data)
    fetch(url, tmp_path / "file.bin", md5(data), "md5", progress=False)
    fetch(url, tmp_path / "file.bin", md5(data), "md5", progress=False)
    assert len(server.requests) == 1


@pytest.mark.parametrize("wrong", ["primary", "cross_check"])
def test_checksum_mismatch_deletes_file_and_names_url_and_both_hashes(server, tmp_path, wrong):
    data = b"the real bytes" * 1000
    url = serve(server, "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz", data)
    bad = "0" * 32 if wrong == "primary" else "f" * 64
    checksum, cross = (bad, {"sha256": sha256(data)}) if wrong == "primary" else (md5(data), {"sha256": bad})
    dest = tmp_path / "dtd-r1.0.1.tar.gz"
    with pytest.raises(ValueError) as err:
        fetch(url, dest, checksum, "md5", cross_checks=cross, progress=False)
    msg = str(err.value)
    actual = md5(data) if wrong == "primary" else sha256(data)
    assert url in msg and bad in msg and actual in msg and "\n" not in msg
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_truncated_download_resumes_with_range(server, tmp_path):
    data = os.urandom(300_000)
    url = serve(server, "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz", data)
    path = urlsplit(url).path
    server.truncate_once[path] = 123_456
    got = fetch(url, tmp_path / "images.tar.gz", md5(data), "md5", backoff=0, progress=False)
    assert got.verified and (tmp_path / "images.tar.gz").read_bytes() == data
    assert server.requests == [(path, None, 200), (path, "bytes=123456-", 206)]


def test_server_ignoring_range_still_gives_the_right_file(server, tmp_path):
    data = os.urandom(200_000)
    url = serve(server, "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip", data)
    server.ignore_range = True
    dest = tmp_path / "caltech-101.zip"
    dest.with_name(dest.name + ".part").write_bytes(b"stale bytes from another file" * 100)
    got = fetch(url, dest, sha256(data), "sha256", progress=False)
    assert got.verified and dest.read_bytes() == data
    assert server.requests == [(urlsplit(url).path, f"bytes={29 * 100}-", 200)]


def test_transient_error_is_retried_and_404_is_not(server, tmp_path):
    data = b"abc" * 100
    url = serve(server, "https://example.org/flaky.bin", data)
    server.fail_once["/flaky.bin"] = 503
    assert fetch(url, tmp_path / "flaky.bin", md5(data), "md5", backoff=0, progress=False).verified
    assert [r[2] for r in server.requests] == [503, 200]
    with pytest.raises(ConnectionError, match=re.escape(server.base + "/missing.bin") + ".*404"):
        fetch(server.base + "/missing.bin", tmp_path / "missing.bin", md5(data), "md5", backoff=0, progress=False)
    assert [r[2] for r in server.requests] == [503, 200, 404]


def test_html_page_instead_of_the_file_is_refused(server, tmp_path):
    url = serve(server, "https://drive.usercontent.google.com/download?id=abc&export=download&confirm=t",
                b"<html>Google Drive can't scan this file for viruses</html>")
    server.content_types[urlsplit(url).path + "?" + urlsplit(url).query] = "text/html; charset=utf-8"
    with pytest.raises(ValueError, match="HTML page"):
        fetch(url, tmp_path / "split_zhou_X.json", None, "sha256", progress=False)
    assert not (tmp_path / "split_zhou_X.json").exists()


def test_unverified_file_is_held_to_its_first_sha256(server, tmp_path, caplog):
    url = serve(server, "https://example.org/split.json", SPLIT)
    dest = tmp_path / "split.json"
    (tmp_path / "split.json.part").write_bytes(SPLIT[:10])  # nothing would vouch for a splice: not resumed
    with caplog.at_level(logging.WARNING, logger="dicap"):
        first = fetch(url, dest, None, "sha256", progress=False)
    assert not first.verified and "UNVERIFIED" in caplog.text
    assert server.requests == [("/split.json", None, 200)] and dest.read_bytes() == SPLIT
    assert (tmp_path / "split.json.sha256").read_text().split()[0] == sha256(SPLIT)
    dest.write_bytes(b"edited")
    with pytest.raises(ValueError, match="changed since it was first downloaded"):
        fetch(url, dest, None, "sha256", progress=False)
    assert len(server.requests) == 1


def test_mirror_replaces_scheme_and_host_only(monkeypatch):
    url = "https://drive.usercontent.google.com/download?id=1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs&export=download"
    assert mirror_url(url, "http://127.0.0.1:9/m/") == \
        "http://127.0.0.1:9/m/download?id=1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs&export=download"
    monkeypatch.setenv("DICAP_MIRROR", "http://cache:8000")
    assert mirror_url("https://www.robots.ox.ac.uk/~vgg/x.tgz") == "http://cache:8000/~vgg/x.tgz"
    monkeypatch.delenv("DICAP_MIRROR")
    assert mirror_url(url) == url


def test_verify_placed_message_is_the_instructions(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        verify_placed(tmp_path / "ILSVRC2012_devkit_t12.tar.gz", "0" * 32, "md5", "put it there")
    assert str(err.value) == "put it there"
