"""Tiny Core repository client against file:// mirror trees built in tmp_path (no network)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from appliance.errors import ChecksumError, DependencyError
from appliance.fetch import Fetcher
from appliance.tinycore.repository import Extension, TinyCoreRepo, order, parse_dep

KERNEL = "5.4.3-tinycore64"


def write_ext(
    base: Path,
    name: str,
    deps: list[str] | None = None,
    *,
    dep_text: str | None = None,
    data: bytes | None = None,
) -> bytes:
    """One extension the way a Tiny Core mirror serves it: .tcz, .tcz.md5.txt, .tcz.dep."""
    tcz = base / "11.x" / "x86_64" / "tcz"
    tcz.mkdir(parents=True, exist_ok=True)
    data = data if data is not None else f"squashfs stand-in for {name}\n".encode()
    (tcz / name).write_bytes(data)
    (tcz / f"{name}.md5.txt").write_text(f"{hashlib.md5(data).hexdigest()}  {name}\n")
    if dep_text is None and deps:
        dep_text = "".join(f"{d}\n" for d in deps)
    if dep_text is not None:
        (tcz / f"{name}.dep").write_text(dep_text)
    return data


def make_tree(base: Path, exts: dict[str, list[str]]) -> Path:
    for name, deps in exts.items():
        write_ext(base, name, deps)
    return base


class CountingFetcher:
    """The real fetcher, counting metadata requests (to prove per-instance caching)."""

    def __init__(self, inner: Fetcher):
        self.inner = inner
        self.requests: list[str] = []

    def get_text(self, urls, *, missing_ok=False):
        self.requests.append(Path(urls[0]).name)
        return self.inner.get_text(urls, missing_ok=missing_ok)

    def fetch_many(self, ds):
        return self.inner.fetch_many(ds)


@pytest.fixture
def fetcher(tmp_path: Path) -> Fetcher:
    return Fetcher(tmp_path / "cache", progress=False)


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    return tmp_path / "mirror"


def repo_for(fetcher, *mirrors: Path) -> TinyCoreRepo:
    return TinyCoreRepo([m.as_uri() for m in mirrors], fetcher, kernel=KERNEL)


def names(exts: list[Extension]) -> list[str]:
    return [e.name for e in exts]


# -- order(): pure ------------------------------------------------------------------------


def test_order_diamond_deps_first_each_once():
    graph = {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}
    assert order(graph, ["a"]) == ["d", "b", "c", "a"]


def test_order_keeps_roots_order_where_deps_allow():
    graph = {"x": [], "a": ["b"], "b": []}
    assert order(graph, ["x", "a"]) == ["x", "b", "a"]
    assert order(graph, ["a", "x"]) == ["b", "a", "x"]
    # A later root that an earlier one needs moves up, once.
    assert order(graph, ["a", "b"]) == ["b", "a"]


def test_order_collapses_duplicates_and_treats_unknown_as_leaf():
    assert order({"a": ["z", "z"]}, ["a", "a", "z"]) == ["z", "a"]


def test_order_cycle_names_the_chain_only():
    graph = {"r.tcz": ["a.tcz"], "a.tcz": ["b.tcz"], "b.tcz": ["a.tcz"]}
    with pytest.raises(DependencyError) as e:
        order(graph, ["r.tcz"])
    assert e.value.message == "dependency cycle: a.tcz -> b.tcz -> a.tcz"
    assert e.value.hint


def test_order_self_dependency_is_a_cycle():
    with pytest.raises(DependencyError, match=r"a -> a"):
        order({"a": ["a"]}, ["a"])


# -- names and .dep parsing ---------------------------------------------------------------


def test_parse_dep_whitespace_blank_lines_kernel_and_suffix():
    text = "\n  b.tcz  \r\n\n\tipv6-netfilter-KERNEL.tcz\nc\n b.tcz\n \n"
    assert parse_dep(text, KERNEL) == ("b.tcz", f"ipv6-netfilter-{KERNEL}.tcz", "c.tcz")


def test_parse_dep_strips_blanks_inside_a_line_as_tce_load():
    # tce-load: gsub(/[\t ]+/, "", name)
    assert parse_dep("glib2 .tcz\n", KERNEL) == ("glib2.tcz",)


@pytest.mark.parametrize("line", ["<html><body>404</body></html>", "../etc/passwd.tcz", "a/b.tcz"])
def test_parse_dep_rejects_what_is_not_an_extension_name(line):
    with pytest.raises(DependencyError, match="invalid extension name"):
        parse_dep(f"ok.tcz\n{line}\n", KERNEL, source="http://m/x.tcz.dep")


def test_expand_adds_suffix_and_substitutes_kernel(fetcher, mirror):
    repo = repo_for(fetcher, mirror)
    assert repo.expand("ipv6-netfilter-KERNEL") == f"ipv6-netfilter-{KERNEL}.tcz"
    assert repo.expand("net-bridging-KERNEL.tcz") == f"net-bridging-{KERNEL}.tcz"
    assert repo.expand("iptables") == "iptables.tcz"
    assert repo.expand("iptables.tcz") == "iptables.tcz"


def test_base_urls_handle_trailing_slashes(fetcher):
    repo = TinyCoreRepo(
        ["http://repo.tinycorelinux.net/", "https://mirror.example/tc", "file:///srv/tc//"],
        fetcher,
    )
    assert repo.tcz_base_urls() == [
        "http://repo.tinycorelinux.net/11.x/x86_64/tcz/",
        "https://mirror.example/tc/11.x/x86_64/tcz/",
        "file:///srv/tc/11.x/x86_64/tcz/",
    ]
    assert (
        repo.urls("nano.tcz.dep")[0] == "http://repo.tinycorelinux.net/11.x/x86_64/tcz/nano.tcz.dep"
    )


# -- resolve() against a mirror tree ------------------------------------------------------


def test_resolve_diamond(fetcher, mirror):
    make_tree(
        mirror, {"a.tcz": ["b.tcz", "c.tcz"], "b.tcz": ["d.tcz"], "c.tcz": ["d.tcz"], "d.tcz": []}
    )
    exts = repo_for(fetcher, mirror).resolve(["a"])
    assert names(exts) == ["d.tcz", "b.tcz", "c.tcz", "a.tcz"]
    assert exts[-1].deps == ("b.tcz", "c.tcz")
    assert exts[0].deps == ()
    md5_d = hashlib.md5((mirror / "11.x/x86_64/tcz/d.tcz").read_bytes()).hexdigest()
    assert exts[0].md5 == md5_d


def test_resolve_kernel_names_in_dep_and_request(fetcher, mirror):
    make_tree(
        mirror,
        {
            "iptables.tcz": ["ipv6-netfilter-KERNEL.tcz"],
            f"ipv6-netfilter-{KERNEL}.tcz": [],
            f"net-bridging-{KERNEL}.tcz": [],
        },
    )
    exts = repo_for(fetcher, mirror).resolve(["iptables.tcz", "net-bridging-KERNEL"])
    assert names(exts) == [
        f"ipv6-netfilter-{KERNEL}.tcz",
        "iptables.tcz",
        f"net-bridging-{KERNEL}.tcz",
    ]
    assert exts[1].deps == (f"ipv6-netfilter-{KERNEL}.tcz",)


def test_resolve_dep_file_with_blanks_and_blank_lines(fetcher, mirror):
    write_ext(mirror, "a.tcz", dep_text="\n  b.tcz \n\n\tc.tcz\t\n\n")
    make_tree(mirror, {"b.tcz": [], "c.tcz": []})
    assert names(repo_for(fetcher, mirror).resolve(["a.tcz"])) == ["b.tcz", "c.tcz", "a.tcz"]


def test_resolve_roots_keep_order_and_duplicates_collapse(fetcher, mirror):
    make_tree(mirror, {"x.tcz": [], "a.tcz": ["b.tcz"], "b.tcz": []})
    exts = repo_for(fetcher, mirror).resolve(["x", "a.tcz", "x.tcz", "b", "a"])
    assert names(exts) == ["x.tcz", "b.tcz", "a.tcz"]


def test_resolve_cycle_names_the_chain(fetcher, mirror):
    make_tree(mirror, {"a.tcz": ["b.tcz"], "b.tcz": ["a.tcz"]})
    with pytest.raises(DependencyError, match=r"a\.tcz -> b\.tcz -> a\.tcz"):
        repo_for(fetcher, mirror).resolve(["a.tcz"])


def test_resolve_missing_dep_names_the_wanting_chain(fetcher, mirror):
    make_tree(mirror, {"a.tcz": ["b.tcz"], "b.tcz": ["x.tcz"]})
    with pytest.raises(DependencyError) as e:
        repo_for(fetcher, mirror).resolve(["a.tcz"])
    assert e.value.message == (
        "extension 'x.tcz' not found on any mirror (wanted by: a.tcz -> b.tcz -> x.tcz)"
    )
    assert "11.x/x86_64/tcz/" in e.value.hint


def test_resolve_reports_every_missing_extension(fetcher, mirror):
    make_tree(mirror, {"a.tcz": ["y.tcz"]})
    with pytest.raises(DependencyError) as e:
        repo_for(fetcher, mirror).resolve(["nope", "a"])
    assert e.value.message.splitlines() == [
        "extension 'nope.tcz' not found on any mirror (requested directly)",
        "extension 'y.tcz' not found on any mirror (wanted by: a.tcz -> y.tcz)",
    ]


def test_md5_of_unknown_extension_is_an_error(fetcher, mirror):
    make_tree(mirror, {"a.tcz": []})
    repo = repo_for(fetcher, mirror)
    assert repo.md5("a") == hashlib.md5((mirror / "11.x/x86_64/tcz/a.tcz").read_bytes()).hexdigest()
    with pytest.raises(DependencyError, match="'zz.tcz' not found on any mirror"):
        repo.md5("zz.tcz")


def test_missing_dep_file_means_no_deps(fetcher, mirror):
    make_tree(mirror, {"leaf.tcz": []})
    assert not (mirror / "11.x/x86_64/tcz/leaf.tcz.dep").exists()
    repo = repo_for(fetcher, mirror)
    assert repo.direct_deps("leaf") == ()
    assert repo.resolve(["leaf"]) == [Extension("leaf.tcz", (), repo.md5("leaf.tcz"))]


def test_metadata_fetched_once_per_instance(fetcher, mirror):
    make_tree(
        mirror, {"a.tcz": ["b.tcz", "c.tcz"], "b.tcz": ["d.tcz"], "c.tcz": ["d.tcz"], "d.tcz": []}
    )
    counting = CountingFetcher(fetcher)
    repo = repo_for(counting, mirror)
    repo.resolve(["a"])
    repo.resolve(["c", "a"])
    repo.direct_deps("d")
    repo.md5("b")
    assert sorted(counting.requests) == sorted(
        f"{n}.tcz{suffix}" for n in "abcd" for suffix in (".dep", ".md5.txt")
    )


# -- mirrors and fetching -----------------------------------------------------------------


def test_second_mirror_used_when_first_lacks_the_tree(fetcher, tmp_path, mirror):
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    make_tree(mirror, {"a.tcz": ["b.tcz"], "b.tcz": []})
    repo = repo_for(fetcher, empty, mirror)
    exts = repo.resolve(["a"])
    assert names(exts) == ["b.tcz", "a.tcz"]
    paths = repo.fetch(exts)
    assert [p.read_bytes() for p in paths] == [
        (mirror / "11.x/x86_64/tcz" / n).read_bytes() for n in ("b.tcz", "a.tcz")
    ]


def test_downloads_carry_all_mirrors_md5_and_pins(fetcher, tmp_path, mirror):
    data = write_ext(mirror, "a.tcz")
    repo = repo_for(fetcher, tmp_path / "other", mirror)
    (ext,) = repo.resolve(["a"])
    pin = hashlib.sha256(data).hexdigest()
    (d,) = repo.downloads([ext], {"a.tcz": pin})
    assert d.name == "a.tcz"
    assert d.md5 == hashlib.md5(data).hexdigest()
    assert d.sha256 == pin
    assert d.urls == (
        f"{(tmp_path / 'other').as_uri()}/11.x/x86_64/tcz/a.tcz",
        f"{mirror.as_uri()}/11.x/x86_64/tcz/a.tcz",
    )
    # An Extension built by hand (no md5) gets the upstream one looked up.
    assert repo.downloads([Extension("a.tcz", ())])[0].md5 == d.md5
    assert repo.fetch([ext], {"a.tcz": pin})[0].read_bytes() == data


def test_fetch_verifies_upstream_md5(fetcher, mirror):
    write_ext(mirror, "a.tcz")
    repo = repo_for(fetcher, mirror)
    exts = repo.resolve(["a"])
    (mirror / "11.x/x86_64/tcz/a.tcz").write_bytes(b"corrupted on the mirror\n")
    with pytest.raises(ChecksumError):
        repo.fetch(exts)
