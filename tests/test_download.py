"""`launch.py download`'s plain-URL fetch against a local HTTP server on 127.0.0.1: resume,
retry, size and MD5 checks. (The Hub part is huggingface_hub's, faked in test_checkpoint.)"""

from __future__ import annotations

import base64
import hashlib
import http.server
import threading
import time

import pytest

from model.commands.download import DownloadError, fetch_url

DATA = bytes(range(256)) * 12_000  # ~3 MB, every byte position recognisable


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` with range requests; ``server.cut[path]`` bytes then a dropped
    connection on the next request of ``path``; ``server.stall[path]`` seconds of silence first."""

    def do_GET(self):  # noqa: N802 - the http.server name
        server = self.server
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        wanted = self.headers.get("Range")
        start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted else 0
        server.log.append((self.path, start))
        time.sleep(server.stall.pop(self.path, 0))
        if start >= len(data):
            self.send_error(416)
            return
        body = data[start:]
        self.send_response(206 if wanted else 200)
        self.send_header("Content-Length", str(len(body)))
        if wanted:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        md5 = server.md5.get(self.path, base64.b64encode(hashlib.md5(data).digest()).decode())
        self.send_header("x-goog-hash", f"crc32c=AAAAAA==,md5={md5}")
        self.end_headers()
        cut = server.cut.pop(self.path, None)
        self.wfile.write(body[:cut] if cut is not None else body)
        self.close_connection = cut is not None

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a client that timed out leaves a broken pipe behind: expected here


@pytest.fixture
def server():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.log, httpd.cut, httpd.stall, httpd.md5 = {"/f.pth": DATA}, [], {}, {}, {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_dropped_connection_is_resumed_where_it_stopped(server, tmp_path):
    httpd, base = server
    httpd.cut["/f.pth"] = 1_000_000
    dest = fetch_url(f"{base}/f.pth", tmp_path / "f.pth", backoff=0)
    assert dest.read_bytes() == DATA and not (tmp_path / "f.pth.part").exists()
    assert httpd.log == [("/f.pth", 0), ("/f.pth", 1_000_000)]  # the second request asked for the rest only


def test_a_part_left_by_an_earlier_run_is_continued(server, tmp_path):
    httpd, base = server
    (tmp_path / "f.pth.part").write_bytes(DATA[:123_456])
    assert fetch_url(f"{base}/f.pth", tmp_path / "f.pth", backoff=0).read_bytes() == DATA
    assert httpd.log == [("/f.pth", 123_456)]
    assert fetch_url(f"{base}/f.pth", tmp_path / "f.pth") == tmp_path / "f.pth" and len(httpd.log) == 1  # done


def test_a_stalled_server_times_out_and_the_retry_succeeds(server, tmp_path):
    httpd, base = server
    httpd.stall["/f.pth"] = 1.0
    assert fetch_url(f"{base}/f.pth", tmp_path / "f.pth", timeout=0.3, backoff=0).read_bytes() == DATA
    assert len(httpd.log) == 2


def test_wrong_md5_missing_file_and_giving_up_are_clear(server, tmp_path):
    httpd, base = server
    httpd.md5["/f.pth"] = base64.b64encode(b"0" * 16).decode()
    with pytest.raises(DownloadError, match="MD5 does not match"):
        fetch_url(f"{base}/f.pth", tmp_path / "f.pth", backoff=0)
    assert not (tmp_path / "f.pth").exists() and not (tmp_path / "f.pth.part").exists()
    httpd.log.clear()
    with pytest.raises(DownloadError, match="answered 404"):
        fetch_url(f"{base}/none.pth", tmp_path / "none.pth", backoff=0)
    assert httpd.log == []  # not retried (the 404 is sent before logging)
    httpd.md5.clear()
    httpd.stall["/f.pth"] = 1.0
    with pytest.raises(DownloadError, match="after 1 attempts; run the command again to resume"):
        fetch_url(f"{base}/f.pth", tmp_path / "f.pth", retries=0, timeout=0.3)
