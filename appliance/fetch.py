"""Downloads: mirrors, resume, checksums, the download cache, progress.

Every remote input lands in `cache/downloads/<sha256>/<name>`. Bytes reach that path only
after their digest was checked, by way of a `.part` file under `.partial/` and an atomic
rename, so a killed build never leaves a half file where a later run would trust it. A
cache entry is re-hashed on every use: the cache saves time, it is never trusted blindly.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import requests
import urllib3
from requests.adapters import HTTPAdapter
from rich import progress as rp
from rich.console import Console

from appliance import log as console
from appliance.errors import ChecksumError, FetchError
from appliance.paths import downloads_dir

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
MAX_TEXT = 1024 * 1024  # get_text is for checksum and .dep files; never buffer an ISO
RETRY_STATUS = (500, 502, 503, 504)
MISSING_STATUS = (404, 410)
# An offline machine's user needs to learn that there is an offline path at all.
MIRROR_HINT = ("check the network and the mirrors in the recipe; with no network, `make demo` "
               "builds everything offline against the stand-in mirror")
_CHECKSUM_LINE = re.compile(r"([0-9A-Fa-f]{32}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64}|[0-9A-Fa-f]{128})"
                            r"(?:\s+\*?(.+))?")


@dataclass(frozen=True)
class Download:
    name: str
    urls: tuple[str, ...]
    sha256: str | None = None
    md5: str | None = None

    def __post_init__(self) -> None:
        # The name becomes a path component. Bad values are programming errors (the recipe
        # is validated long before), so they fail loudly rather than as a FetchError.
        urls = (self.urls,) if isinstance(self.urls, str) else tuple(self.urls)
        object.__setattr__(self, "urls", urls)
        if not self.urls or not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"Download needs a plain file name and URLs: {self!r}")
        for attr, length in (("sha256", 64), ("md5", 32)):
            value = getattr(self, attr)
            if value is not None and not re.fullmatch(f"[0-9a-fA-F]{{{length}}}", value):
                raise ValueError(f"Download {self.name!r}: {attr} {value!r} is not a hex digest")
            object.__setattr__(self, attr, value and value.lower())


def _digests(path: Path, *algos: str) -> dict[str, str]:
    """Several digests in one read: a cache hit on the ISO should cost one pass, not two."""
    hashes = {algo: hashlib.new(algo) for algo in algos}
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            for h in hashes.values():
                h.update(chunk)
    return {algo: h.hexdigest() for algo, h in hashes.items()}


def sha256_file(path: Path) -> str:
    return _digests(path, "sha256")["sha256"]


def md5_file(path: Path) -> str:
    return _digests(path, "md5")["md5"]


def parse_checksum_file(text: str, filename: str) -> str:
    """The digest for `filename` in a `<hex>  name` / `<hex> *name` / bare `<hex>` file."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and ln.strip()[0] != "#"]
    found = set()
    for m in filter(None, (_CHECKSUM_LINE.fullmatch(ln) for ln in lines)):
        # Release checksum files sometimes say "./x" or "bin/x"; a bare digest is only
        # unambiguous when it is the whole file.
        name = m.group(2) and m.group(2).strip().removeprefix("./").rsplit("/", 1)[-1]
        if name == filename or (name is None and len(lines) == 1):
            found.add(m.group(1).lower())
    if len(found) == 1:
        return found.pop()
    problem = "several different digests" if found else "no digest"
    raise FetchError(f"checksum file for {filename}: {problem} for {filename} in it",
                     hint=f"expected a line '<hex>  {filename}' or a single bare digest")


class _MirrorError(Exception):
    """This URL cannot deliver; the caller moves on to the next one."""

    def __init__(self, reason: str, missing: bool = False):
        super().__init__(reason)
        self.reason, self.missing = reason, missing


class _Interrupted(Exception):
    """The body broke off mid-transfer: worth resuming from what the .part already holds."""


class _Job:
    """What the downloads of one fetch/fetch_many call share: progress bars, cancellation."""

    def __init__(self, bars: bool):
        self.bars = bars
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self._progress: rp.Progress | None = None

    def add(self, name: str) -> rp.TaskID | None:
        if not self.bars:
            return None
        with self._lock:  # started lazily: a run of pure cache hits prints nothing
            if self._progress is None:
                self._progress = rp.Progress(
                    rp.TextColumn("{task.description}"), rp.BarColumn(), rp.DownloadColumn(),
                    rp.TransferSpeedColumn(), rp.TimeRemainingColumn(),
                    console=Console(stderr=True))
                self._progress.start()
        return self._progress.add_task(name, total=None)

    def update(self, task: rp.TaskID | None, **kwargs) -> None:
        if task is not None and self._progress is not None:
            self._progress.update(task, **kwargs)

    def tick(self, task: rp.TaskID | None, nbytes: int) -> None:
        # Worker threads never see KeyboardInterrupt themselves: the main thread sets
        # `cancel` and each worker stops at its next chunk, leaving a resumable .part.
        if self.cancel.is_set():
            raise KeyboardInterrupt
        self.update(task, advance=nbytes)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _auto_progress() -> bool:
    if console.is_quiet():  # -q: warnings and errors only, no progress bars
        return False
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """exc and everything wrapped inside it (requests -> MaxRetryError -> socket error)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) not in seen:
            seen.add(id(e))
            yield e
            inner = [*e.args, getattr(e, "reason", None), e.__cause__, e.__context__]
            todo += [x for x in inner if isinstance(x, BaseException)]


def _open_local(url: str):
    """A file:// URL opened for reading; a missing file counts like an HTTP 404."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise _MirrorError("file:// URL names a remote host")
    try:
        return open(url2pathname(parts.path), "rb")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise _MirrorError("no such file", missing=True) from None
    except OSError as e:
        raise _MirrorError(e.strerror or str(e)) from None


def _scheme(url: str) -> str:
    try:  # urlsplit raises on a malformed host ("http://[::1")
        return urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise _MirrorError(f"not a valid URL: {exc}") from None


def _raise_for_status(resp: requests.Response) -> None:
    code = resp.status_code
    if code not in (200, 206):
        reason = f"HTTP {code} {resp.reason or ''}".rstrip()
        raise _MirrorError(reason + (", after retries" if code in RETRY_STATUS else ""),
                           missing=code in MISSING_STATUS)


def _content_total(resp: requests.Response, offset: int) -> int | None:
    """Full file size from Content-Range ("bytes a-b/T") or offset + Content-Length."""
    total = resp.headers.get("Content-Range", "").rpartition("/")[2]
    length = resp.headers.get("Content-Length", "")
    return int(total) if total.isdigit() else offset + int(length) if length.isdigit() else None


def _failed(label: str, failures: list[tuple[str, str]], kind=FetchError, hint=MIRROR_HINT):
    lines = [f"{label}: failed on every mirror:"] + [f"  {u}: {r}" for u, r in failures]
    return kind("\n".join(lines), hint=hint)


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    # Two builds sharing APPLIANCE_CACHE must not append to the same .part at once. The
    # lock files stay behind: deleting a lock file that others may wait on is racy.
    with open(lock_path, "ab") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


class Fetcher:
    """Downloads into the cache; one instance serves many threads (fetch_many)."""

    def __init__(self, cache_dir: Path | None = None, *, offline: bool = False, jobs: int = 4,
                 connect_timeout: float = 10, read_timeout: float = 60, retries: int = 3,
                 backoff: float = 0.5, progress: bool | None = None, session=None):
        if jobs < 1:
            raise ValueError("jobs must be at least 1")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else downloads_dir()
        self.offline, self.jobs, self.retries, self.backoff = offline, jobs, retries, backoff
        self.timeout = (connect_timeout, read_timeout)
        self.progress = _auto_progress() if progress is None else progress
        self._session = session if session is not None else self._make_session()

    def _make_session(self) -> requests.Session:
        # urllib3 retries what happens before the body (connect errors, timeouts waiting for
        # headers, 5xx) with exponential backoff; a 4xx is an answer, so the next mirror is
        # tried at once. Breaks inside the body are resumed by _http_to_part instead.
        retry = urllib3.Retry(
            total=None, connect=self.retries, read=self.retries, status=self.retries, other=0,
            backoff_factor=self.backoff, status_forcelist=RETRY_STATUS,
            allowed_methods=frozenset({"GET"}), raise_on_status=False)
        session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry, pool_maxsize=max(self.jobs, 10))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = "tc-appliance-fetch"
        return session

    def fetch(self, d: Download) -> Path:
        job = _Job(self.progress)
        try:
            return self._fetch_one(d, job)
        finally:
            job.close()

    def fetch_many(self, ds: Sequence[Download]) -> list[Path]:
        if not ds:
            return []
        job = _Job(self.progress)
        pool = ThreadPoolExecutor(max_workers=min(self.jobs, len(ds)), thread_name_prefix="fetch")
        try:
            futures = [pool.submit(self._fetch_one, d, job) for d in ds]
            wait(futures)
        except BaseException:  # Ctrl-C: workers stop at their next chunk; don't wait for them
            job.cancel.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            job.close()
        pool.shutdown()
        # Let every download finish (what succeeded is cached), then report all failures.
        errors = [e for f in futures if (e := f.exception()) is not None]
        for e in errors:
            if not isinstance(e, FetchError) or len(errors) == 1:
                raise e
        if errors:
            bad = any(isinstance(e, ChecksumError) for e in errors)
            message = "\n".join(e.message for e in errors)
            raise (ChecksumError if bad else FetchError)(message, hint=errors[0].hint)
        return [f.result() for f in futures]

    def get_text(self, urls: Sequence[str], *, missing_ok: bool = False) -> tuple[str, str] | None:
        urls = [urls] if isinstance(urls, str) else list(urls)  # a str is a Sequence[str] too
        if not urls:
            raise ValueError("get_text needs at least one URL")
        label = urls[0].rstrip("/").rsplit("/", 1)[-1]
        if self.offline:
            raise FetchError(f"{label}: cannot read {urls[0]}: --offline was given",
                             hint="run without --offline")
        failures: list[tuple[str, _MirrorError]] = []
        for url in urls:
            try:
                return url, self._read_small(url)
            except _MirrorError as e:
                log.info("%s: %s; trying the next URL", url, e.reason)
                failures.append((url, e))
        if missing_ok and all(e.missing for _, e in failures):
            return None
        raise _failed(label, [(url, e.reason) for url, e in failures])

    def cached_path(self, d: Download) -> Path | None:
        if d.sha256 is None:
            return None  # without a pin there is no telling which entry is meant
        path = self.cache_dir / d.sha256 / d.name
        if not path.is_file():
            return None
        got = _digests(path, "sha256", *(["md5"] if d.md5 else []))
        if got["sha256"] != d.sha256:
            log.warning("%s: cached copy is corrupt (sha256 %s); removing it", path, got["sha256"])
            path.unlink(missing_ok=True)
            return None
        if d.md5 and got["md5"] != d.md5:  # exactly the pinned bytes: the pins disagree
            raise ChecksumError(
                f"{d.name}: sha256 {d.sha256} matches but md5 is {got['md5']}, expected {d.md5}",
                hint="the lock's sha256 and md5 for this file disagree; re-run `pipeline.py lock`")
        return path

    def _fetch_one(self, d: Download, job: _Job) -> Path:
        if self.offline:
            if d.sha256 is None:
                raise FetchError(f"{d.name}: has no sha256 pin, so it cannot be fetched offline",
                                 hint="run without --offline (`pipeline.py lock` pins it)")
            if hit := self.cached_path(d):
                return hit
            raise FetchError(
                f"{d.name}: not in the download cache (sha256 {d.sha256}) and --offline was given",
                hint="run without --offline to download it")
        try:
            return (d.sha256 and self.cached_path(d)) or self._download(d, job)
        except OSError as e:  # local trouble (disk full, permissions), not the network
            raise FetchError(f"{d.name}: cannot write to the download cache: {e}",
                             hint=f"check free space and permissions of {self.cache_dir}") from e

    def _download(self, d: Download, job: _Job) -> Path:
        # The pin is part of the key: a .part left by an older pin (an older upstream file
        # under the same URL) is never resumed into the new one.
        key = hashlib.sha256(f"{d.urls[0]}\n{d.name}\n{d.sha256}".encode()).hexdigest()[:16]
        part = self.cache_dir / ".partial" / f"{key}-{d.name}.part"
        part.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(part.with_suffix(".lock")):
            if d.sha256 and (hit := self.cached_path(d)):
                return hit  # another process finished it while we waited for the lock
            if d.sha256 is None:
                # What we return gets pinned, and nothing could reveal a .part of an older
                # upstream file: resume only within this run.
                part.unlink(missing_ok=True)
            task = job.add(d.name)
            failures: list[tuple[str, str]] = []
            mismatches: list[ChecksumError] = []
            for url in d.urls:
                try:
                    self._transfer(url, part, task, job)
                    return self._commit(d, url, part)
                except _MirrorError as e:
                    log.info("%s: %s; trying the next mirror", url, e.reason)
                    failures.append((url, e.reason))
                except ChecksumError as e:
                    mismatches.append(e)
                    failures.append((url, e.reason))
        if len(failures) == 1 and mismatches:
            raise mismatches[0]
        if mismatches:
            raise _failed(d.name, failures, ChecksumError, mismatches[0].hint)
        raise _failed(d.name, failures)

    def _transfer(self, url: str, part: Path, task, job: _Job) -> None:
        scheme = _scheme(url)
        if scheme == "file":
            with _open_local(url) as src, open(part, "wb") as out:
                job.update(task, total=os.fstat(src.fileno()).st_size, completed=0)
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    job.tick(task, len(chunk))
        elif scheme in ("http", "https"):
            self._http_to_part(url, part, task, job)
        else:
            raise _MirrorError(f"unsupported URL scheme {scheme!r}")

    def _commit(self, d: Download, url: str, part: Path) -> Path:
        got = _digests(part, "sha256", *(["md5"] if d.md5 else []))
        for algo, want in (("sha256", d.sha256), ("md5", d.md5)):
            if want and got[algo] != want:
                part.unlink(missing_ok=True)  # bad bytes never reach the cache
                err = ChecksumError(
                    f"{d.name}: {algo} mismatch: expected {want}, got {got[algo]} (from {url})",
                    hint="the server sent other bytes than the pin; if the file really changed "
                         "upstream, re-run `pipeline.py lock` and review the change")
                err.reason = f"{algo} mismatch: expected {want}, got {got[algo]}"
                raise err
        dest = self.cache_dir / got["sha256"] / d.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        # No fsync: a file torn by a power cut fails its re-hash at the next use and is
        # downloaded again.
        os.replace(part, dest)
        return dest

    def _http_to_part(self, url: str, part: Path, task, job: _Job) -> None:
        failures = 0
        while True:
            start = _size(part)
            try:
                return self._http_attempt(url, part, start, task, job)
            except _Interrupted as e:
                # Attempts that made progress are free: a flaky link on a big ISO gets
                # there; a server that breaks at the same place every time does not loop.
                failures = 0 if _size(part) > start else failures + 1
                if failures > self.retries:
                    raise _MirrorError(f"{e}, {failures} attempts without progress") from None
                log.info("%s: %s; resuming at byte %d", url, e, _size(part))
                if job.cancel.wait(self.backoff * 2 ** (failures - 1) if failures else 0):
                    raise KeyboardInterrupt from None

    def _http_attempt(self, url: str, part: Path, start: int, task, job: _Job) -> None:
        # identity: a server gzipping a .tar.gz on the fly would break digests and ranges.
        headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={start}-"} if start else {})
        try:
            resp = self._session.get(url, headers=headers, stream=True, timeout=self.timeout)
        except requests.RequestException as e:
            raise _MirrorError(f"{self._describe(e)}, {self.retries + 1} attempts") from None
        with resp:
            if resp.status_code == 416 and start:
                if resp.headers.get("Content-Range") == f"bytes */{start}":
                    return  # the .part already holds the whole file
                part.unlink()
                raise _Interrupted("server refused the resume range")
            _raise_for_status(resp)
            offset = start if resp.status_code == 206 else 0
            if offset and not resp.headers.get("Content-Range", "").startswith(f"bytes {start}-"):
                part.unlink()
                raise _Interrupted("server answered with another range")
            if start and not offset:
                log.info("%s: server ignored the Range header; starting from zero", url)
            job.update(task, total=_content_total(resp, offset), completed=offset)
            with open(part, "ab" if offset else "wb") as out:
                try:
                    for chunk in resp.raw.stream(CHUNK, decode_content=False):
                        out.write(chunk)
                        job.tick(task, len(chunk))
                except (urllib3.exceptions.HTTPError, requests.RequestException) as e:
                    raise _Interrupted(self._describe(e)) from None

    def _read_small(self, url: str) -> str:
        scheme = _scheme(url)
        if scheme == "file":
            with _open_local(url) as fh:
                data = fh.read(MAX_TEXT + 1)
        elif scheme in ("http", "https"):
            try:
                with self._session.get(url, stream=True, timeout=self.timeout) as resp:
                    _raise_for_status(resp)
                    data = resp.raw.read(MAX_TEXT + 1, decode_content=True)
            except (urllib3.exceptions.HTTPError, requests.RequestException) as e:
                raise _MirrorError(self._describe(e)) from None
        else:
            raise _MirrorError(f"unsupported URL scheme {scheme!r}")
        if len(data) > MAX_TEXT:
            raise _MirrorError(f"larger than {MAX_TEXT} bytes, not a small text file")
        return data.decode("utf-8", errors="replace")

    def _describe(self, exc: BaseException) -> str:
        """One line for the user instead of requests' nested reprs."""
        causes = list(_causes(exc))
        # urllib3 makes "connection refused" a subclass of ConnectTimeoutError; it is not one.
        kinds = (requests.Timeout, TimeoutError, urllib3.exceptions.TimeoutError)
        refused = urllib3.exceptions.NewConnectionError
        timeouts = [c for c in causes if isinstance(c, kinds) and not isinstance(c, refused)]
        if timeouts:
            connect_kinds = (requests.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError)
            if any(isinstance(c, connect_kinds) for c in timeouts):
                return f"timed out connecting ({self.timeout[0]:g}s timeout)"
            return f"timed out waiting for data ({self.timeout[1]:g}s read timeout)"
        for cause in causes:
            if isinstance(cause, OSError) and cause.strerror:
                return f"connection failed: {cause.strerror}"
        return str(exc) or type(exc).__name__
