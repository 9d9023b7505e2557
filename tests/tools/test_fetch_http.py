"""appliance.fetch against real HTTP servers on 127.0.0.1 that misbehave on purpose."""

from __future__ import annotations

import hashlib
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from appliance import fetch as fetch_mod
from appliance.errors import ChecksumError, FetchError
from appliance.fetch import Download, Fetcher

pytestmark = [pytest.mark.tools, pytest.mark.timeout(60)]

PAYLOAD = bytes(range(256)) * 2048  # 512 KiB: several chunks, so a drop lands mid-body


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler parked in a "slow" wait must not hold up teardown

    def __init__(self, routes):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes = routes
        self.seen: list[tuple[str, str | None]] = []  # (path, Range header)
        self.stop = threading.Event()
        self.pause = 0.0  # between pieces of a trickle() route

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # the client gave up: expected
            super().handle_error(request, client_address)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_port}{path}"

    def ranges(self) -> list[str]:
        return [r for _, r in self.seen if r]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        self.server.seen.append((self.path, self.headers.get("Range")))
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
        else:
            route(self)


def serve(data: bytes, *, drop_first=False, honour_range=True, stall=0.0, stall_body=False,
          fail_first: int = 0):
    """A route serving `data`, with the failure modes the fetcher must survive."""
    calls = [0]

    def route(h: _Handler):
        calls[0] += 1
        if calls[0] <= fail_first:
            h.send_error(503)
            return
        if stall and not stall_body:
            h.server.stop.wait(stall)  # longer than the client's read timeout
        start, rng = 0, h.headers.get("Range")
        if rng and honour_range:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        body = data[start:]
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if (drop_first and calls[0] == 1) or stall_body:
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            if stall_body:
                h.server.stop.wait(stall)
            h.close_connection = True  # Content-Length promised more: the client sees a break
            return
        h.wfile.write(body)

    return route


@pytest.fixture
def server():
    """Factory: server(routes) -> a running _Server; all are stopped at teardown."""
    started: list[_Server] = []

    def start(routes=None) -> _Server:
        srv = _Server(routes or {})
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def fetcher(tmp_path):
    def make(**kw) -> Fetcher:
        kw = {"connect_timeout": 2, "read_timeout": 2, "retries": 2, "backoff": 0.01,
              "progress": False} | kw
        return Fetcher(tmp_path / "downloads", **kw)

    return make


def cache_entries(cache: Path) -> dict[str, bytes]:
    """Everything in the cache except the .partial work area."""
    return {str(p.relative_to(cache)): p.read_bytes() for p in cache.rglob("*")
            if p.is_file() and ".partial" not in p.parts}


def test_404_on_first_mirror_falls_back_to_the_second(server, fetcher, tmp_path):
    empty, good = server(), server({"/f.bin": serve(PAYLOAD)})
    d = Download("f.bin", (empty.url("/f.bin"), good.url("/f.bin")), sha(PAYLOAD))
    path = fetcher().fetch(d)
    assert path == tmp_path / "downloads" / sha(PAYLOAD) / "f.bin"
    assert path.read_bytes() == PAYLOAD
    assert empty.seen == [("/f.bin", None)]  # a 404 is an answer: not retried


def test_connection_refused_falls_back_to_the_next_mirror(server, fetcher):
    with socket.socket() as closed:  # bound, never listening: connection refused
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/f.bin"
        good = server({"/f.bin": serve(PAYLOAD)})
        path = fetcher(retries=1).fetch(Download("f.bin", (dead, good.url("/f.bin")), sha(PAYLOAD)))
    assert path.read_bytes() == PAYLOAD


def test_all_mirrors_failing_lists_each_url_with_its_reason(server, fetcher):
    srv = server({"/err": serve(PAYLOAD, fail_first=99)})
    d = Download("f.bin", (srv.url("/missing"), srv.url("/err")), sha(PAYLOAD))
    with pytest.raises(FetchError) as exc:
        fetcher(retries=1).fetch(d)
    assert f"{srv.url('/missing')}: HTTP 404" in str(exc.value)
    assert f"{srv.url('/err')}: HTTP 503" in str(exc.value)
    assert not isinstance(exc.value, ChecksumError)


def test_5xx_is_retried_on_the_same_mirror(server, fetcher):
    srv = server({"/f.bin": serve(PAYLOAD, fail_first=2)})
    path = fetcher(retries=2).fetch(Download("f.bin", (srv.url("/f.bin"),), sha(PAYLOAD)))
    assert path.read_bytes() == PAYLOAD
    assert len(srv.seen) == 3


def test_dropped_connection_is_resumed_with_range(server, fetcher, tmp_path):
    srv = server({"/f.bin": serve(PAYLOAD, drop_first=True)})
    path = fetcher().fetch(Download("f.bin", (srv.url("/f.bin"),), sha(PAYLOAD)))
    assert path.read_bytes() == PAYLOAD
    assert srv.ranges() == [f"bytes={len(PAYLOAD) // 2}-"]
    assert not list((tmp_path / "downloads" / ".partial").glob("*.part"))


def test_server_ignoring_range_restarts_from_zero(server, fetcher):
    srv = server({"/f.bin": serve(PAYLOAD, drop_first=True, honour_range=False)})
    path = fetcher().fetch(Download("f.bin", (srv.url("/f.bin"),), sha(PAYLOAD)))
    assert path.read_bytes() == PAYLOAD
    assert srv.ranges()  # it asked to resume, got a 200, and started over


def test_unpinned_download_is_stored_under_its_digest(server, fetcher, tmp_path):
    srv = server({"/f.bin": serve(PAYLOAD, drop_first=True)})
    path = fetcher().fetch(Download("f.bin", (srv.url("/f.bin"),)))
    assert path == tmp_path / "downloads" / sha(PAYLOAD) / "f.bin"


def test_wrong_bytes_raise_and_leave_the_cache_alone(server, fetcher, tmp_path):
    cache = tmp_path / "downloads"
    old, new = PAYLOAD, PAYLOAD[::-1]
    srv = server({"/v1/f.bin": serve(old), "/v2/f.bin": serve(b"tampered" + new[8:])})
    good = fetcher().fetch(Download("f.bin", (srv.url("/v1/f.bin"),), sha(old)))
    before = cache_entries(cache)

    url = srv.url("/v2/f.bin")
    with pytest.raises(ChecksumError) as exc:
        fetcher().fetch(Download("f.bin", (url,), sha(new)))
    msg = str(exc.value)
    assert url in msg and sha(new) in msg and sha(b"tampered" + new[8:]) in msg
    assert cache_entries(cache) == before  # nothing new; the good entry byte for byte
    assert good.read_bytes() == old
    assert not list((cache / ".partial").glob("*.part"))


def test_slow_server_times_out_with_the_url(server, fetcher):
    srv = server({"/slow.bin": serve(PAYLOAD, stall=10)})
    url = srv.url("/slow.bin")
    t0 = time.monotonic()
    with pytest.raises(FetchError) as exc:
        fetcher(connect_timeout=0.5, read_timeout=0.5, retries=1, backoff=0).fetch(
            Download("slow.bin", (url,), sha(PAYLOAD)))
    assert time.monotonic() - t0 < 5
    assert url in str(exc.value) and "timed out" in str(exc.value)


def test_body_stalling_mid_transfer_times_out(server, fetcher):
    srv = server({"/slow.bin": serve(PAYLOAD, stall=10, stall_body=True)})
    url = srv.url("/slow.bin")
    with pytest.raises(FetchError) as exc:
        fetcher(connect_timeout=0.5, read_timeout=0.5, retries=1, backoff=0).fetch(
            Download("slow.bin", (url,), sha(PAYLOAD)))
    assert url in str(exc.value) and "timed out" in str(exc.value)


class _NoNetwork:
    def get(self, *args, **kwargs):
        raise AssertionError("offline fetcher touched the network")


def test_offline_returns_the_cached_file_without_a_server(server, fetcher):
    srv = server({"/f.bin": serve(PAYLOAD)})
    d = Download("f.bin", (srv.url("/f.bin"),), sha(PAYLOAD))
    cached = fetcher().fetch(d)
    srv.shutdown()
    srv.server_close()
    assert fetcher(offline=True, session=_NoNetwork()).fetch(d) == cached


def test_offline_without_the_file_names_it(fetcher):
    d = Download("CorePure64-11.1.iso", ("http://127.0.0.1:9/x.iso",), "a" * 64)
    with pytest.raises(FetchError) as exc:
        fetcher(offline=True, session=_NoNetwork()).fetch(d)
    assert "CorePure64-11.1.iso: not in the download cache" in str(exc.value)
    assert "a" * 64 in str(exc.value) and "--offline" in str(exc.value)


def test_ctrl_c_leaves_only_a_resumable_part(server, fetcher, tmp_path, monkeypatch):
    cache = tmp_path / "downloads"
    srv = server({"/f.bin": serve(PAYLOAD)})
    d = Download("f.bin", (srv.url("/f.bin"),), sha(PAYLOAD))
    real_tick = fetch_mod._Job.tick

    def interrupt_after_first_chunk(self, task, nbytes):
        monkeypatch.setattr(fetch_mod._Job, "tick", real_tick)
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch_mod._Job, "tick", interrupt_after_first_chunk)
    with pytest.raises(KeyboardInterrupt):
        fetcher().fetch(d)
    assert cache_entries(cache) == {}
    (part,) = (cache / ".partial").glob("*.part")
    kept = part.stat().st_size
    assert 0 < kept < len(PAYLOAD)

    assert fetcher().fetch(d).read_bytes() == PAYLOAD
    assert srv.ranges() == [f"bytes={kept}-"]  # the next run resumed where Ctrl-C hit


def trickle(data: bytes, piece: int = 16 * 1024):
    """A route that sends `data` in pieces, `server.pause` apart: a Ctrl-C lands mid-body."""

    def route(h: _Handler):
        start = int((h.headers.get("Range") or "bytes=0-").removeprefix("bytes=").rstrip("-"))
        h.send_response(206 if start else 200)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(data) - start))
        h.end_headers()
        for i in range(start, len(data), piece):
            h.wfile.write(data[i:i + piece])
            if h.server.stop.wait(h.server.pause):
                return

    return route


def test_ctrl_c_in_fetch_many_stops_the_workers(server, fetcher, tmp_path, monkeypatch):
    cache = tmp_path / "downloads"
    files = {f"/f{i}.bin": bytes([i]) * len(PAYLOAD) for i in range(3)}
    srv = server({p: trickle(data) for p, data in files.items()})
    srv.pause = 0.02
    ds = [Download(p[1:], (srv.url(p),), sha(data)) for p, data in files.items()]

    def ctrl_c(fs):
        time.sleep(0.2)
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch_mod, "wait", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        fetcher(jobs=3).fetch_many(ds)
    time.sleep(0.5)  # workers notice the cancel at their next chunk
    parts = {p: p.stat().st_size for p in (cache / ".partial").glob("*.part")}
    time.sleep(0.5)
    assert parts == {p: p.stat().st_size for p in (cache / ".partial").glob("*.part")}
    assert parts and all(size < len(PAYLOAD) for size in parts.values())
    assert cache_entries(cache) == {}

    monkeypatch.undo()
    srv.pause = 0
    assert [p.read_bytes() for p in fetcher().fetch_many(ds)] == list(files.values())
    assert len(srv.ranges()) == len(parts)  # every interrupted file resumed


def test_get_text_falls_back_and_reports_missing(server, fetcher):
    empty = server()
    srv = server({"/x.md5.txt": serve(b"0123  x\n")})
    f = fetcher(retries=1)
    assert f.get_text([empty.url("/x.md5.txt"), srv.url("/x.md5.txt")]) == (
        srv.url("/x.md5.txt"), "0123  x\n")
    assert f.get_text([empty.url("/y"), srv.url("/y")], missing_ok=True) is None
    with pytest.raises(FetchError) as exc:
        f.get_text([empty.url("/y"), srv.url("/y")])
    assert empty.url("/y") in str(exc.value) and srv.url("/y") in str(exc.value)


def test_get_text_server_error_is_not_missing(server, fetcher):
    srv = server({"/y": serve(b"", fail_first=99)})
    with pytest.raises(FetchError, match="HTTP 503"):
        fetcher(retries=1).get_text([srv.url("/y")], missing_ok=True)


def test_fetch_many_returns_paths_in_input_order(server, fetcher):
    files = {f"/f{i}.bin": bytes([i]) * (1000 + 70_000 * (5 - i)) for i in range(6)}
    srv = server({p: serve(data, drop_first=(i % 2 == 0)) for i, (p, data) in
                  enumerate(files.items())})
    ds = [Download(p[1:], (srv.url(p),), sha(data)) for p, data in files.items()]
    paths = fetcher(jobs=3, progress=True).fetch_many(ds)  # progress on a non-TTY: no crash
    assert [p.name for p in paths] == [d.name for d in ds]
    assert [p.read_bytes() for p in paths] == list(files.values())


def test_fetch_many_reports_every_failure_after_finishing_the_rest(server, fetcher, tmp_path):
    srv = server({"/ok.bin": serve(PAYLOAD)})
    ds = [Download("a.bin", (srv.url("/a.bin"),), "a" * 64),
          Download("ok.bin", (srv.url("/ok.bin"),), sha(PAYLOAD)),
          Download("b.bin", (srv.url("/b.bin"),), "b" * 64)]
    with pytest.raises(FetchError) as exc:
        fetcher().fetch_many(ds)
    assert "a.bin" in str(exc.value) and "b.bin" in str(exc.value)
    assert (tmp_path / "downloads" / sha(PAYLOAD) / "ok.bin").read_bytes() == PAYLOAD
