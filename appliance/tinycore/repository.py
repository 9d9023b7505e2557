"""Tiny Core repository client: which extensions, in which order, with which checksums.

Resolution follows tce-load (Core-scripts usr/bin/tce-load, tc11): each extension's direct
dependencies are the lines of `NAME.tcz.dep` on the mirror, blanks stripped, `-KERNEL.tcz`
replaced by `-<uname -r>.tcz`; a missing `.dep` means no dependencies; dependencies load
before dependents, each once. Whether an extension exists is decided by its `.md5.txt`,
which tce-load also needs before it accepts a download. Mirrors are base URLs, as in
`/opt/tcemirror`; packages live under `<base>/11.x/x86_64/tcz/` (http(s):// or file://).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import DependencyError
from appliance.fetch import Download, Fetcher, parse_checksum_file

# Names travel into URLs and file paths: a `.dep` line that is not a plain file name (an
# HTML error page served with 200, "../x.tcz") must fail here, not become a request.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\.tcz$")

# Metadata files are tiny; a few parallel requests hide mirror latency without hammering it.
_LOOKUP_WORKERS = 8


@dataclass(frozen=True)
class Extension:
    name: str  # "iptables.tcz" (KERNEL already substituted)
    deps: tuple[str, ...]  # direct deps, substituted, in .dep order
    md5: str | None = None


def _normalise(raw: str, kernel: str, source: str) -> str:
    # tce-load: `gsub(/[\t ]+/, "", name)`, `${X%.tcz}.tcz`, `sub(/-KERNEL\.tcz/, ...)`.
    name = re.sub(r"\s+", "", raw)
    name = name.removesuffix(".tcz") + ".tcz"
    name = name.replace("-KERNEL.tcz", f"-{kernel}.tcz")
    if not _NAME_RE.match(name):
        raise DependencyError(
            f"invalid extension name {raw.strip()!r} in {source}",
            hint="an extension name is a plain file name such as 'iptables.tcz' "
            "or 'net-bridging-KERNEL.tcz'",
        )
    return name


def parse_dep(text: str, kernel: str, *, source: str = "a .dep file") -> tuple[str, ...]:
    """Direct dependencies from the text of a `.dep` file, in file order, each once."""
    names = (_normalise(line, kernel, source) for line in text.splitlines() if line.strip())
    return tuple(dict.fromkeys(names))


def order(graph: Mapping[str, Sequence[str]], roots: Sequence[str]) -> list[str]:
    """Load order: dependencies first (DFS post-order over .dep order), each name once.

    Roots keep their order where dependencies allow. A name absent from `graph` is a leaf.
    tce-load's awk prints the reverse of its pre-order instead (d, c, b, a for the diamond
    a -> b, c -> d); both put every dependency first, and post-order also keeps the
    siblings in .dep order, which is what a reader of the .dep file expects.
    tce-load only warns about a loop and loads in whatever order it reached; we refuse,
    because a cycle in the repository or in our overlays is a bug someone should see.
    """
    done: set[str] = set()
    path: list[str] = []  # the chain being visited, for the cycle message
    result: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in path:
            chain = " -> ".join([*path[path.index(name) :], name])
            raise DependencyError(
                f"dependency cycle: {chain}",
                hint="a .dep file names an extension that (indirectly) depends on it; "
                "remove one edge of the cycle",
            )
        path.append(name)
        for dep in graph.get(name, ()):
            visit(dep)
        path.pop()
        done.add(name)
        result.append(name)

    for root in roots:
        visit(root)
    return result


class TinyCoreRepo:
    """One Tiny Core release/arch on a list of mirrors; .dep and .md5.txt lookups cached."""

    def __init__(
        self,
        mirrors: Sequence[str],
        fetcher: Fetcher,
        *,
        release: str = "11.x",
        arch: str = "x86_64",
        kernel: str = "5.4.3-tinycore64",
    ):
        if not mirrors:
            raise ValueError("TinyCoreRepo needs at least one mirror")
        self.mirrors = tuple(mirrors)
        self.fetcher = fetcher
        self.release = release
        self.arch = arch
        self.kernel = kernel
        self._deps: dict[str, tuple[str, ...]] = {}
        self._md5: dict[str, str | None] = {}  # None: no .md5.txt on any mirror
        self.md5_sources: dict[str, str] = {}  # name -> the .md5.txt URL that answered

    def tcz_base_urls(self) -> list[str]:
        # tce-load: MIRROR="${MIRROR%/}/$(getMajorVer).x/$BUILD/tcz"
        return [f"{m.rstrip('/')}/{self.release}/{self.arch}/tcz/" for m in self.mirrors]

    def urls(self, filename: str) -> tuple[str, ...]:
        """The same file on every mirror, in mirror order (the fetcher falls back along it)."""
        return tuple(base + filename for base in self.tcz_base_urls())

    def expand(self, name: str) -> str:
        """A recipe or command-line name as tce-load reads it: `.tcz` added, KERNEL replaced."""
        return _normalise(name, self.kernel, "the extension list")

    def direct_deps(self, name: str) -> tuple[str, ...]:
        name = self.expand(name)
        if name not in self._deps:
            got = self.fetcher.get_text(self.urls(f"{name}.dep"), missing_ok=True)
            # No .dep anywhere is normal (a leaf), exactly as tce-load's failed wget.
            self._deps[name] = () if got is None else parse_dep(got[1], self.kernel, source=got[0])
        return self._deps[name]

    def md5(self, name: str) -> str:
        """The upstream md5 of NAME.tcz; an error if no mirror has the extension."""
        name = self.expand(name)
        digest = self._lookup_md5(name)
        if digest is None:
            raise self._not_found([(name, [name])])
        return digest

    def resolve(self, names: Sequence[str]) -> list[Extension]:
        """Every extension `names` need, in load order, with direct deps and upstream md5."""
        roots = list(dict.fromkeys(self.expand(n) for n in names))
        graph, parent = self._discover(roots)
        load_order = order(graph, roots)
        with ThreadPoolExecutor(_LOOKUP_WORKERS) as pool:
            digests = list(pool.map(self._lookup_md5, load_order))
        # Report every missing extension at once, each with the chain that wanted it.
        missing = [
            (n, _chain(n, parent)) for n, d in zip(load_order, digests, strict=True) if d is None
        ]
        if missing:
            raise self._not_found(missing)
        return [Extension(n, graph[n], d) for n, d in zip(load_order, digests, strict=True)]

    def downloads(
        self, exts: Sequence[Extension], pins: Mapping[str, str] | None = None
    ) -> list[Download]:
        """What the fetcher needs: mirror URLs, upstream md5, and the lock's sha256 if pinned."""
        pins = pins or {}
        return [
            Download(
                name=e.name,
                urls=self.urls(e.name),
                sha256=pins.get(e.name),
                md5=e.md5 if e.md5 is not None else self.md5(e.name),
            )
            for e in exts
        ]

    def fetch(self, exts: Sequence[Extension], pins: Mapping[str, str] | None = None) -> list[Path]:
        return self.fetcher.fetch_many(self.downloads(exts, pins))

    # -- internals --

    def _discover(self, roots: list[str]) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
        """The dependency graph reachable from roots, read level by level in parallel.

        parent[x] is the extension whose .dep first (shortest chain) named x, for messages.
        """
        graph: dict[str, tuple[str, ...]] = {}
        parent: dict[str, str] = {}
        level = roots
        with ThreadPoolExecutor(_LOOKUP_WORKERS) as pool:
            while level:
                for name, deps in zip(level, pool.map(self.direct_deps, level), strict=True):
                    graph[name] = deps
                    for dep in deps:
                        if dep not in graph and dep not in parent and dep not in roots:
                            parent[dep] = name
                seen = set(graph)
                level = list(dict.fromkeys(d for n in level for d in graph[n] if d not in seen))
        return graph, parent

    def _lookup_md5(self, name: str) -> str | None:
        if name not in self._md5:
            filename = f"{name}.md5.txt"
            got = self.fetcher.get_text(self.urls(filename), missing_ok=True)
            self._md5[name] = None if got is None else parse_checksum_file(got[1], name)
            if got is not None:
                self.md5_sources[name] = got[0]
        return self._md5[name]

    def _not_found(self, missing: list[tuple[str, list[str]]]) -> DependencyError:
        lines = []
        for name, chain in missing:
            why = f"wanted by: {' -> '.join(chain)}" if len(chain) > 1 else "requested directly"
            lines.append(f"extension '{name}' not found on any mirror ({why})")
        where = ", ".join(self.tcz_base_urls())
        return DependencyError(
            "\n".join(lines),
            hint=f"no {missing[0][0]}.md5.txt under {where}; check the name against the "
            f"Tiny Core {self.release} {self.arch} repository (KERNEL names become "
            f"-{self.kernel}), or add a mirror that carries it",
        )


def _chain(name: str, parent: Mapping[str, str]) -> list[str]:
    chain = [name]
    while chain[-1] in parent:
        chain.append(parent[chain[-1]])
    return chain[::-1]
