"""appliance.fetch without a network: checksum files, cache layout, verification (file://)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from appliance.errors import ChecksumError, FetchError
from appliance.fetch import Download, Fetcher, md5_file, parse_checksum_file, sha256_file

DATA = b"tiny core " * 5000
SHA = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()


class _NoNetwork:
    def get(self, *args, **kwargs):
        raise AssertionError("a unit test touched the network")


@pytest.fixture
def source(tmp_path) -> Path:
    src = tmp_path / "mirror" / "CorePure64-11.1.iso"
    src.parent.mkdir()
    src.write_bytes(DATA)
    return src


@pytest.fixture
def fetcher(tmp_path):
    def make(**kw) -> Fetcher:
        return Fetcher(tmp_path / "downloads", progress=False, session=_NoNetwork(), **kw)

    return make


def entries(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if p.is_file() and ".partial" not in p.parts)


# -- parse_checksum_file ------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    f"{MD5}  CorePure64-11.1.iso\n",                       # md5sum text mode (Tiny Core)
    f"{MD5} *CorePure64-11.1.iso\n",                       # md5sum binary mode
    f"{MD5}\n",                                            # bare digest, single line
    f"{MD5.upper()}  CorePure64-11.1.iso\r\n",             # upper case, CRLF
    f"# comment\n\n{'0' * 32}  other.iso\n{MD5}  ./CorePure64-11.1.iso\n",
    f"{MD5}  release/CorePure64-11.1.iso",                 # path in a release SHA256SUMS
])
def test_parse_checksum_file_variants(text):
    assert parse_checksum_file(text, "CorePure64-11.1.iso") == MD5


def test_parse_checksum_file_sha256_list():
    text = f"{'1' * 64}  containerd.tar.gz\n{SHA}  runc.amd64\n"
    assert parse_checksum_file(text, "runc.amd64") == SHA


@pytest.mark.parametrize("text, problem", [
    (f"{MD5}  other.iso\n", "no digest"),
    ("404 Not Found\n", "no digest"),
    ("", "no digest"),
    (f"{MD5}\n{SHA}\n", "no digest"),                     # bare digests: which one?
    (f"{'deadbeef' * 4}  x.iso\n{MD5}  x.iso\n", "several different digests"),
])
def test_parse_checksum_file_errors_name_the_file(text, problem):
    name = "x.iso" if "x.iso" in text else "CorePure64-11.1.iso"
    with pytest.raises(FetchError) as exc:
        parse_checksum_file(text, name)
    assert name in str(exc.value) and problem in str(exc.value)


def test_digest_helpers(source):
    assert sha256_file(source) == SHA
    assert md5_file(source) == MD5


# -- Download -----------------------------------------------------------------------------

def test_download_normalises_and_validates():
    d = Download("a.tcz", ["http://m/a.tcz"], SHA.upper(), MD5.upper())
    assert d.urls == ("http://m/a.tcz",) and d.sha256 == SHA and d.md5 == MD5
    assert Download("a.tcz", "http://m/a.tcz").urls == ("http://m/a.tcz",)
    assert hash(d) == hash(Download("a.tcz", ("http://m/a.tcz",), SHA, MD5))


@pytest.mark.parametrize("kwargs", [
    {"name": "../a.tcz", "urls": ("http://m/a",)},
    {"name": "", "urls": ("http://m/a",)},
    {"name": "a.tcz", "urls": ()},
    {"name": "a.tcz", "urls": ("http://m/a",), "sha256": "abc"},
    {"name": "a.tcz", "urls": ("http://m/a",), "md5": SHA},
])
def test_download_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        Download(**kwargs)


# -- cache layout and verification --------------------------------------------------------

def test_cache_layout_is_sha256_slash_name(fetcher, source, tmp_path):
    cache = tmp_path / "downloads"
    path = fetcher().fetch(Download(source.name, (source.as_uri(),), SHA, MD5))
    assert path == cache / SHA / "CorePure64-11.1.iso"
    assert path.read_bytes() == DATA
    assert not list((cache / ".partial").glob("*.part"))
    assert fetcher().cached_path(Download(source.name, ("http://elsewhere/x",), SHA)) == path


def test_default_cache_dir_follows_appliance_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("APPLIANCE_CACHE", str(tmp_path / "c"))
    assert Fetcher(progress=False).cache_dir == tmp_path / "c" / "downloads"


def test_unpinned_download_is_stored_under_its_digest(fetcher, source, tmp_path):
    path = fetcher().fetch(Download(source.name, (source.as_uri(),)))
    assert path == tmp_path / "downloads" / SHA / source.name


def test_cache_hit_does_not_read_the_source_again(fetcher, source):
    d = Download(source.name, (source.as_uri(),), SHA)
    first = fetcher().fetch(d)
    source.unlink()
    assert fetcher().fetch(d) == first


def test_corrupt_cache_entry_is_removed_and_downloaded_again(fetcher, source):
    d = Download(source.name, (source.as_uri(),), SHA)
    path = fetcher().fetch(d)
    path.write_bytes(b"bit rot")
    assert fetcher().fetch(d) == path
    assert path.read_bytes() == DATA


def test_corrupt_cache_entry_offline_is_an_error(fetcher, source):
    d = Download(source.name, (source.as_uri(),), SHA)
    fetcher().fetch(d).write_bytes(b"bit rot")
    assert fetcher().cached_path(d) is None
    with pytest.raises(FetchError, match="not in the download cache"):
        fetcher(offline=True).fetch(d)


def test_offline_unpinned_cannot_be_fetched(fetcher, source):
    with pytest.raises(FetchError, match="cannot be fetched offline") as exc:
        fetcher(offline=True).fetch(Download(source.name, (source.as_uri(),)))
    assert "without --offline" in str(exc.value)


def test_sha256_mismatch_keeps_bytes_out_of_the_cache(fetcher, source, tmp_path):
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as exc:
        fetcher().fetch(Download(source.name, (source.as_uri(),), wrong))
    assert wrong in str(exc.value) and SHA in str(exc.value) and source.as_uri() in str(exc.value)
    assert entries(tmp_path / "downloads") == []
    assert not list((tmp_path / "downloads" / ".partial").glob("*.part"))


def test_md5_mismatch_is_a_checksum_error(fetcher, source, tmp_path):
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        fetcher().fetch(Download(source.name, (source.as_uri(),), None, "0" * 32))
    assert entries(tmp_path / "downloads") == []


def test_mismatch_on_one_mirror_falls_back_to_a_good_one(fetcher, source, tmp_path):
    bad = tmp_path / "bad" / source.name
    bad.parent.mkdir()
    bad.write_bytes(b"stale mirror")
    path = fetcher().fetch(Download(source.name, (bad.as_uri(), source.as_uri()), SHA))
    assert path.read_bytes() == DATA


def test_missing_file_url_falls_back_and_lists_every_url(fetcher, source, tmp_path):
    missing = (tmp_path / "nope" / source.name).as_uri()
    assert fetcher().fetch(Download(source.name, (missing, source.as_uri()), SHA)).is_file()
    with pytest.raises(FetchError) as exc:
        fetcher().fetch(Download("x.tcz", (missing, "ftp://m/x.tcz"), "1" * 64))
    assert f"{missing}: no such file" in str(exc.value)
    assert "ftp://m/x.tcz: unsupported URL scheme" in str(exc.value)


def test_fetch_many_keeps_input_order(fetcher, tmp_path):
    ds = []
    for i in range(5):
        f = tmp_path / f"f{i}.bin"
        f.write_bytes(bytes([i]) * (100 + i))
        ds.append(Download(f.name, (f.as_uri(),), sha256_file(f)))
    assert [p.name for p in fetcher(jobs=3).fetch_many(ds)] == [d.name for d in ds]
    assert fetcher().fetch_many([]) == []


def test_fetch_many_with_the_same_download_twice(fetcher, source):
    d = Download(source.name, (source.as_uri(),), SHA)
    first, second = fetcher(jobs=2).fetch_many([d, d])
    assert first == second and first.read_bytes() == DATA


# -- get_text -----------------------------------------------------------------------------

def test_get_text_file_urls(fetcher, tmp_path):
    md5txt = tmp_path / "a.tcz.md5.txt"
    md5txt.write_text(f"{MD5}  a.tcz\n")
    missing = (tmp_path / "b.tcz.md5.txt").as_uri()
    assert fetcher().get_text([missing, md5txt.as_uri()]) == (md5txt.as_uri(), f"{MD5}  a.tcz\n")
    assert fetcher().get_text([missing], missing_ok=True) is None
    with pytest.raises(FetchError, match="b.tcz.md5.txt"):
        fetcher().get_text([missing])


def test_get_text_offline_is_an_error(fetcher, tmp_path):
    with pytest.raises(FetchError, match="--offline"):
        fetcher(offline=True).get_text([(tmp_path / "x.dep").as_uri()])


def test_no_progress_bars_under_quiet(monkeypatch):
    from appliance import fetch, log

    monkeypatch.setattr(fetch.sys.stderr, "isatty", lambda: True, raising=False)
    assert fetch._auto_progress()
    log.set_quiet(True)
    try:
        assert not fetch._auto_progress()
    finally:
        log.set_quiet(False)
