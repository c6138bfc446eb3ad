"""download and fetch against a local HTTP server: checksums, resume, failures, fetch specs."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pag.data.base import FetchSpec, RemoteFile
from pag.data.download import download, extracted_marker, fetch, verify_file
from pag.errors import ChecksumError, DataError, DownloadError

PAYLOAD = bytes(range(256)) * 1000  # 256 000 bytes
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


# --------------------------------------------------------------------------------------------
# A tiny HTTP server with Range support and failure modes


@dataclass
class Served:
    data: bytes
    mode: str = "normal"  # normal | ignore-range | 404 | 500 | drop | slow


@dataclass
class Request:
    path: str
    range: str | None
    status: int = 0
    body_bytes: int = 0


@dataclass
class Server:
    base: str
    files: dict[str, Served] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path

    def serve(self, path: str, data: bytes, mode: str = "normal") -> str:
        self.files[path] = Served(data, mode)
        return self.url(path)

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: no lingering keep-alive threads
    state: Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def do_GET(self) -> None:
        record = Request(self.path, self.headers.get("Range"))
        self.state.requests.append(record)
        served = self.state.files.get(self.path)
        if served is None or served.mode in ("404", "500"):
            record.status = 500 if served is not None and served.mode == "500" else 404
            body = b"nope"
            self._head(record.status, {"Content-Length": str(len(body))})
            self.wfile.write(body)
            return
        if served.mode == "slow":
            time.sleep(0.6)
        data = served.data
        match = re.fullmatch(r"bytes=(\d+)-", record.range or "")
        if match and served.mode != "ignore-range":
            start = int(match.group(1))
            if start >= len(data):
                record.status = 416
                self._head(416, {"Content-Range": f"bytes */{len(data)}", "Content-Length": "0"})
                return
            body = data[start:]
            record.status = 206
            headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        else:
            body = data
            record.status = 200
            headers = {}
        headers["Content-Length"] = str(len(body))
        try:
            self._head(record.status, headers)
            if served.mode == "drop":  # promise everything, send half, hang up
                body = body[: len(body) // 2]
            record.body_bytes = len(body)  # before writing: the client may finish first
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(base="")
    handler = type("BoundHandler", (Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = False  # server_close() then waits for every handler thread
    host, port = httpd.server_address[:2]
    state.base = f"http://{host}:{port}"
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Echo:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str) -> None:
        self.lines.append(text)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def no_part_files(directory: Path) -> bool:
    return not list(directory.glob("*.part"))


# --------------------------------------------------------------------------------------------
# download: verification


@pytest.mark.parametrize("progress", [True, False])
def test_download_with_correct_checksums(server: Server, tmp_path: Path, progress: bool) -> None:
    url = server.serve("/data.bin", PAYLOAD)
    echo = Echo()
    dest = tmp_path / "sub" / "data.bin"
    out = download(
        url, dest, size=len(PAYLOAD), md5=MD5, sha256=SHA256, progress=progress, echo=echo
    )
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert no_part_files(dest.parent)
    assert echo.lines == []  # checksums were known: nothing to record
    assert [(r.range, r.status) for r in server.requests] == [(None, 200)]


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_single_known_digest_is_enough(server: Server, tmp_path: Path, algorithm: str) -> None:
    url = server.serve("/data.bin", PAYLOAD)
    digest = {"md5": MD5, "sha256": SHA256}[algorithm]
    download(url, tmp_path / "data.bin", progress=False, **{algorithm: digest.upper()})
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_unknown_checksum_is_reported_for_recording(server: Server, tmp_path: Path) -> None:
    url = server.serve("/data.bin", PAYLOAD)
    echo = Echo()
    download(url, tmp_path / "data.bin", progress=False, echo=echo)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert len(echo.lines) == 1
    assert "data.bin" in echo.text
    assert f"sha256={SHA256}" in echo.text
    assert f"size={len(PAYLOAD)}" in echo.text


@pytest.mark.parametrize(
    ("checks", "what", "expected", "actual"),
    [
        ({"md5": "0" * 32}, "md5", "0" * 32, MD5),
        ({"sha256": "f" * 64}, "sha256", "f" * 64, SHA256),
        ({"md5": MD5, "sha256": "f" * 64}, "sha256", "f" * 64, SHA256),
        ({"size": len(PAYLOAD) + 1}, "size", f"{len(PAYLOAD) + 1} bytes", f"{len(PAYLOAD)} bytes"),
        ({"size": 1000, "sha256": SHA256}, "size", "1000 bytes", None),  # server sends too much
    ],
)
def test_checksum_mismatch_leaves_nothing(
    server: Server, tmp_path: Path, checks: dict, what: str, expected: str, actual: str | None
) -> None:
    url = server.serve("/data.bin", PAYLOAD)
    dest = tmp_path / "data.bin"
    with pytest.raises(ChecksumError) as info:
        download(url, dest, progress=False, **checks)
    message = str(info.value)
    assert str(dest) in message
    assert f"{what} mismatch" in message
    assert f"expected {expected}" in message
    if actual is not None:
        assert f"got {actual}" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []  # no dest, no .part


def test_verify_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    verify_file(path, size=len(PAYLOAD), md5=MD5, sha256=SHA256)
    with pytest.raises(
        ChecksumError, match=rf"f\.bin: md5 mismatch: expected {'1' * 32}, got {MD5}"
    ):
        verify_file(path, md5="1" * 32)
    with pytest.raises(DataError, match="not found"):
        verify_file(tmp_path / "missing.bin")


# --------------------------------------------------------------------------------------------
# download: resume


def test_resume_sends_range_and_yields_exact_bytes(server: Server, tmp_path: Path) -> None:
    url = server.serve("/data.bin", PAYLOAD)
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:100_000])
    download(url, dest, sha256=SHA256, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert no_part_files(tmp_path)
    [request] = server.requests
    assert request.range == "bytes=100000-"
    assert (request.status, request.body_bytes) == (206, len(PAYLOAD) - 100_000)


def test_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    url = server.serve("/data.bin", PAYLOAD, mode="ignore-range")
    dest = tmp_path / "data.bin"
    # stale bytes in the .part: appending the full body to them would corrupt the file
    (tmp_path / "data.bin.part").write_bytes(b"\xff" * 5000)
    echo = Echo()
    download(url, dest, progress=False, echo=echo)  # no checksum: only a clean restart works
    assert dest.read_bytes() == PAYLOAD
    [request] = server.requests
    assert (request.range, request.status) == ("bytes=5000-", 200)
    assert f"sha256={SHA256}" in echo.text


def test_complete_part_is_finished_after_416(server: Server, tmp_path: Path) -> None:
    url = server.serve("/data.bin", PAYLOAD)
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    download(url, dest, md5=MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [(r.range, r.status) for r in server.requests] == [(f"bytes={len(PAYLOAD)}-", 416)]


def test_oversized_part_restarts_after_416(server: Server, tmp_path: Path) -> None:
    url = server.serve("/data.bin", PAYLOAD)
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD + b"junk")
    download(url, dest, progress=False)  # size unknown: only the server's 416 tells
    assert dest.read_bytes() == PAYLOAD
    assert [(r.range, r.status) for r in server.requests] == [
        (f"bytes={len(PAYLOAD) + 4}-", 416),
        (None, 200),
    ]


def test_interrupted_download_keeps_part_and_resumes(server: Server, tmp_path: Path) -> None:
    url = server.serve("/data.bin", PAYLOAD, mode="drop")
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError) as info:
        download(url, dest, sha256=SHA256, progress=False)
    message = str(info.value)
    assert url in message and "resume" in message and "\n" not in message
    assert not dest.exists()
    part = tmp_path / "data.bin.part"
    kept = part.read_bytes()
    # what arrived before the hang-up is kept (up to the last complete read)
    assert 0 < len(kept) <= len(PAYLOAD) // 2
    assert kept == PAYLOAD[: len(kept)]
    assert f"{len(kept)} bytes kept" in message

    server.files["/data.bin"].mode = "normal"
    download(url, dest, sha256=SHA256, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not part.exists()
    assert server.requests[-1].range == f"bytes={len(kept)}-"


# --------------------------------------------------------------------------------------------
# download: failures


@pytest.mark.parametrize(("mode", "status"), [("404", "HTTP 404"), ("500", "HTTP 500")])
def test_http_error_is_a_download_error(
    server: Server, tmp_path: Path, mode: str, status: str
) -> None:
    url = server.serve("/missing.zip", b"", mode=mode)
    dest = tmp_path / "missing.zip"
    with pytest.raises(DownloadError) as info:
        download(url, dest, progress=False)
    message = str(info.value)
    assert url in message
    assert status in message
    assert f"place it at {dest}" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_is_a_download_error(tmp_path: Path, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/data.bin"
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "data.bin", progress=False, timeout=5)
    message = str(info.value)
    assert url in message
    assert "connection refused" in message
    assert "by hand" in message
    assert "\n" not in message


def test_dns_failure_is_a_download_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # deterministic, and no real lookup
    url = "http://data.example.invalid/set.zip"
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "set.zip", progress=False)
    message = str(info.value)
    assert url in message
    assert "cannot resolve the host name" in message
    assert f"place it at {tmp_path / 'set.zip'}" in message


def test_timeout_is_a_download_error(server: Server, tmp_path: Path) -> None:
    url = server.serve("/slow.bin", PAYLOAD, mode="slow")
    with pytest.raises(DownloadError, match=r"timed out after 0\.1 s") as info:
        download(url, tmp_path / "slow.bin", progress=False, timeout=0.1)
    assert url in str(info.value)


def test_invalid_url_is_a_download_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="not-a-url"):
        download("not-a-url", tmp_path / "x.bin", progress=False)


# --------------------------------------------------------------------------------------------
# download: existing files


def test_verified_file_is_not_downloaded_again(server: Server, tmp_path: Path) -> None:
    url = server.serve("/data.bin", PAYLOAD)
    dest = tmp_path / "data.bin"
    download(url, dest, sha256=SHA256, progress=False)
    download(url, dest, sha256=SHA256, progress=False)
    download(url, dest, md5=MD5, size=len(PAYLOAD), progress=False)
    assert server.count("/data.bin") == 1


def test_existing_file_without_checksum_is_kept(server: Server, tmp_path: Path) -> None:
    url = server.serve("/data.bin", PAYLOAD)
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"placed by hand")
    echo = Echo()
    download(url, dest, progress=False, echo=echo)
    assert dest.read_bytes() == b"placed by hand"
    assert server.count("/data.bin") == 0
    assert echo.lines == []  # nothing recorded for a file we did not download


def test_corrupt_existing_file_is_replaced(server: Server, tmp_path: Path) -> None:
    url = server.serve("/data.bin", PAYLOAD)
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"corrupt")
    echo = Echo()
    download(url, dest, sha256=SHA256, progress=False, echo=echo)
    assert dest.read_bytes() == PAYLOAD
    assert server.count("/data.bin") == 1
    assert "does not match" in echo.text


# --------------------------------------------------------------------------------------------
# fetch


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


ARCHIVE = _tar_gz({"images/0001.png": b"png-1", "images/0002.png": b"png-2", "list.txt": b"1\n2"})


def test_fetch_end_to_end(server: Server, tmp_path: Path) -> None:
    spec = FetchSpec(
        files=(
            RemoteFile(
                server.serve("/archive.tar.gz", ARCHIVE),
                "archive.tar.gz",
                size=len(ARCHIVE),
                sha256=hashlib.sha256(ARCHIVE).hexdigest(),
                extract=True,
            ),
            RemoteFile(server.serve("/readme.txt", b"hello"), "readme.txt"),
        ),
        manual="Log in at https://example.org and save labels.mat to {dataset_dir}/labels.mat",
    )
    dataset = tmp_path / "toy"
    echo = Echo()
    assert fetch(spec, dataset, progress=False, echo=echo) is None
    assert (dataset / "images" / "0001.png").read_bytes() == b"png-1"
    assert (dataset / "images" / "0002.png").read_bytes() == b"png-2"
    assert (dataset / "list.txt").read_bytes() == b"1\n2"
    assert (dataset / "readme.txt").read_bytes() == b"hello"
    assert (dataset / "archive.tar.gz").read_bytes() == ARCHIVE
    marker = dataset / ".archive.tar.gz.extracted"
    assert extracted_marker(dataset, "archive.tar.gz") == marker
    assert marker.is_file()
    assert sorted(p.name for p in dataset.iterdir()) == sorted(
        ["images", "list.txt", "readme.txt", "archive.tar.gz", ".archive.tar.gz.extracted"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]  # no temporary leftovers
    assert f"save labels.mat to {dataset}/labels.mat" in echo.text
    assert "readme.txt: no checksum recorded; sha256=" in echo.text

    # second run: nothing downloaded again and, thanks to the marker, nothing re-extracted
    (dataset / "list.txt").unlink()
    fetch(spec, dataset, progress=False, echo=Echo())
    assert server.count("/archive.tar.gz") == 1
    assert server.count("/readme.txt") == 1
    assert not (dataset / "list.txt").exists()

    # without the marker the archive is extracted again, over the files already there
    marker.unlink()
    fetch(spec, dataset, progress=False, echo=Echo())
    assert (dataset / "list.txt").read_bytes() == b"1\n2"
    assert marker.is_file()

    # an archive downloaded again (new file, same name) no longer matches the marker
    (dataset / "list.txt").unlink()
    archive = dataset / "archive.tar.gz"
    archive.unlink()
    fetch(spec, dataset, progress=False, echo=Echo())
    assert server.count("/archive.tar.gz") == 2
    assert (dataset / "list.txt").read_bytes() == b"1\n2"


def test_fetch_manual_only(tmp_path: Path) -> None:
    echo = Echo()
    fetch(FetchSpec(manual="Download X.zip by hand into {dataset_dir}"), tmp_path / "m", echo=echo)
    assert f"Download X.zip by hand into {tmp_path / 'm'}" in echo.text
    assert not (tmp_path / "m").exists()


def test_fetch_continues_after_failures_and_lists_them(server: Server, tmp_path: Path) -> None:
    spec = FetchSpec(
        files=(
            RemoteFile(server.serve("/gone.zip", b"", mode="404"), "gone.zip"),
            RemoteFile(server.serve("/bad.bin", b"abc"), "bad.bin", md5="0" * 32),
            RemoteFile(
                server.serve("/evil.tar.gz", _tar_gz({"../x": b"x"})), "evil.tar.gz", extract=True
            ),
            RemoteFile(server.serve("/good.txt", b"good"), "good.txt"),
            RemoteFile(server.serve("/up.txt", b"up"), "../up.txt"),
        ),
        manual="also get Y by hand",
    )
    dataset = tmp_path / "ds"
    echo = Echo()
    with pytest.raises(DownloadError) as info:
        fetch(spec, dataset, progress=False, echo=echo)
    message = str(info.value)
    assert message.startswith(f"4 of 5 file(s) for {dataset} failed")
    assert "/gone.zip" in message and "HTTP 404" in message
    assert "bad.bin: md5 mismatch" in message
    assert "evil.tar.gz" in message and "'../x'" in message
    assert "'../up.txt'" in message
    assert "\n" not in message
    assert (dataset / "good.txt").read_bytes() == b"good"  # the rest still went ahead
    assert not (dataset / "bad.bin").exists()
    assert not (tmp_path / "up.txt").exists() and not (tmp_path / "x").exists()
    assert not (dataset / ".evil.tar.gz.extracted").exists()
    assert "also get Y by hand" in echo.text
