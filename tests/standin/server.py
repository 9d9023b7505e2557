"""The stand-in's HTTP server: the mirror tree on 127.0.0.1, with byte ranges.

A ThreadingHTTPServer over the mirror folder. Single byte ranges get 206 (the fetcher
resumes interrupted downloads with Range; busybox wget -c does too), an unsatisfiable range
416, anything else the whole file. No request log: the console stays readable during a
build; errors still show. `serve_forever()` also runs the stand-in registry and stops both
on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import os
import re
import shutil
import signal
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from appliance.errors import PipelineError
from appliance.paths import REPO
from appliance.run import Runner
from tests.standin import cache, extensions, mirror, registry, releases

RECIPE = Path(__file__).resolve().parent / "recipe.toml"

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
COPY_CHUNK = 1 << 16


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """(first, last) byte of a single satisfiable range; None to send the whole file;
    "unsatisfiable" for a range past the end (pure)."""
    m = _RANGE.match((header or "").strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None  # absent, multiple ranges or malformed: RFC 9110 lets us send it all
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        length = int(last)
        if length == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, end


class MirrorHandler(http.server.SimpleHTTPRequestHandler):
    """Files and folder listings of the mirror; Range on files."""

    _remaining: int | None = None  # bytes of the current file still to send

    def log_message(self, fmt: str, *args) -> None:
        pass

    def log_error(self, fmt: str, *args) -> None:
        if args and args[0] == 404:
            return  # expected: a leaf extension has no .dep, as on Tiny Core's mirrors
        sys.stderr.write(f"stand-in server: {fmt % args}\n")

    def end_headers(self) -> None:
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def send_head(self):
        self._remaining = None
        path = Path(self.translate_path(self.path))
        if not path.is_file() or self.path.endswith("/"):
            return super().send_head()  # folders (listings, redirects) and 404s
        try:
            fh = open(path, "rb")
        except OSError:
            self.send_error(404, "File not found")
            return None
        size = os.fstat(fh.fileno()).st_size
        wanted = parse_range(self.headers.get("Range"), size)
        if wanted == "unsatisfiable":
            fh.close()
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        first, last = wanted if isinstance(wanted, tuple) else (0, size - 1)
        self.send_response(206 if isinstance(wanted, tuple) else 200)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Length", str(last - first + 1))
        if isinstance(wanted, tuple):
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        fh.seek(first)
        self._remaining = last - first + 1
        return fh

    def copyfile(self, source, outputfile) -> None:
        remaining = self._remaining
        if remaining is None:
            shutil.copyfileobj(source, outputfile)
            return
        while remaining > 0:
            chunk = source.read(min(COPY_CHUNK, remaining))
            if not chunk:
                break
            outputfile.write(chunk)
            remaining -= len(chunk)


class MirrorServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(root: Path, port: int, handler: type = MirrorHandler) -> MirrorServer:
    try:
        return MirrorServer((mirror.HOST, port), functools.partial(handler, directory=str(root)))
    except OSError as exc:
        raise PipelineError(f"the stand-in server cannot listen on {mirror.HOST}:{port}: "
                            f"{exc.strerror}",
                            "another stand-in server or demo may hold the port: stop it, or "
                            "pick another port (--port, STANDIN_PORT)") from None


@contextlib.contextmanager
def running(root: Path, port: int = 0, handler: type = MirrorHandler) -> Iterator[str]:
    """Serve root in a background thread for the block; yields the base URL (with /)."""
    server = make_server(root, port, handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{mirror.HOST}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def serve_forever(root: Path, port: int, registry_port: int | None) -> None:
    """Serve until SIGINT/SIGTERM, with the registry if registry_port is given."""
    server = make_server(root, port)
    stopping = threading.Event()

    def stop(_signum, _frame) -> None:
        if not stopping.is_set():
            stopping.set()
            # shutdown() waits for serve_forever to return: not from its own thread
            threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    reg = None
    try:
        if registry_port is not None:
            reg = registry.Registry(registry_port, cache.component_dir("registry")).start()
            print(f"registry: http://{reg.address}/ ({registry.REPOSITORY})", flush=True)
        print(f"serving {root} at http://{mirror.HOST}:{port}/ "
              f"(guests: http://{mirror.GUEST_HOST}:{port}/); Ctrl-C stops", flush=True)
        server.serve_forever()
    finally:
        server.server_close()
        if reg is not None:
            reg.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("stand-in server stopped", flush=True)


# -- `python -m tests.standin build|serve|lock` (registered by tests/standin/__main__.py) --


def _took(path: Path | None) -> str:
    """How long the cold build of a cached component took (its info.json)."""
    try:
        return f"cold build took {cache.info(path)['seconds']:.1f} s"
    except (OSError, KeyError, TypeError, ValueError):
        return "cold build time unknown"


def cmd_build(_args: argparse.Namespace) -> mirror.Built:
    """Build (or reuse) every piece of the stand-in; print what each took and where it is."""
    built = mirror.build_all()
    dirs = {"kernel": None, "iso": built.iso.parent, "extensions": built.extensions,
            "releases": built.releases, "image": built.image, "mirror": built.mirror}
    for name, seconds in built.timings.items():
        took = (f"cold build took {built.kernel.info['build_seconds']:.0f} s"
                if name == "kernel" else _took(dirs[name]))
        print(f"{name:<11} {seconds:7.1f} s  ({took})")
    print(f"kernel release: {built.kernel.release}")
    print(f"extensions: {extensions.summary(built.extensions)}")
    print(f"mirror: {built.mirror}")
    print(f"recipe overlay: {mirror.standin_build_dir() / 'standin.toml'}")
    return built


def cmd_serve(args: argparse.Namespace) -> None:
    built = mirror.build_all(port=args.port)
    serve_forever(built.mirror, args.port, None if args.no_registry else registry.default_port())


def _answers(base_url: str) -> bool:
    """Does a stand-in already serve there? (its openssh.tcz.md5.txt is the probe)"""
    probe = f"{base_url}{mirror.RELEASE_DIR}/tcz/openssh.tcz.md5.txt"
    try:
        with urllib.request.urlopen(probe, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def lock_argv(overlay: Path, lock: Path) -> list[str]:
    """Every stand-in pin is first use (checksum files over plain http, a registry without
    TLS), and accepted explicitly: the server on 127.0.0.1 serves what this machine built."""
    return [sys.executable, str(REPO / "pipeline.py"), "lock", "-c", str(RECIPE),
            "-c", str(overlay), "--lock", str(lock), "--accept-first-use"]


def cmd_lock(args: argparse.Namespace) -> None:
    """`pipeline.py lock` of the stand-in recipe against the stand-in's own server (and
    registry: the recipe's images are pinned from it)."""
    port = args.port
    built = mirror.build_all(port=port)
    overlay = mirror.standin_build_dir() / "standin.toml"
    lock = mirror.standin_build_dir() / "standin.lock"
    runner = Runner(echo=lambda line: print(line, flush=True))
    if registry.ensure_running() != registry.DEFAULT_PORT:  # the overlay names its port
        overlay = mirror.recipe_overlay(built.kernel.release, releases.versions(runner), port)
    argv = lock_argv(overlay, lock)
    if _answers(f"http://{mirror.HOST}:{port}/"):
        runner.run(argv, stream=True)
        return
    print(f"no stand-in server on port {port}: serving {built.mirror} while locking")
    with running(built.mirror, port):
        runner.run(argv, stream=True)


def register_commands(sub) -> None:
    """Add build, serve and lock to `python -m tests.standin`'s subcommands."""
    sub.add_parser("build", help="build (or reuse) kernel, ISO, extensions, releases, image "
                                 "and mirror; print each one's time").set_defaults(func=cmd_build)
    port_help = f"the server's port (default {mirror.DEFAULT_PORT}, or $STANDIN_PORT)"
    serve = sub.add_parser("serve", help="serve the stand-in mirror (and registry) on "
                                         "127.0.0.1 until Ctrl-C")
    serve.add_argument("--port", type=int, default=mirror.default_port(), help=port_help)
    serve.add_argument("--no-registry", action="store_true",
                       help="do not run docker-registry (default port "
                            f"{registry.DEFAULT_PORT}, or $STANDIN_REGISTRY_PORT)")
    serve.set_defaults(func=cmd_serve)
    lock = sub.add_parser("lock", help="run `pipeline.py lock` for tests/standin/recipe.toml "
                                       "against the stand-in server (started if none answers) "
                                       "-> build/standin/standin.lock")
    lock.add_argument("--port", type=int, default=mirror.default_port(), help=port_help)
    lock.set_defaults(func=cmd_lock)
