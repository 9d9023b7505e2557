"""isolinux.cfg: parsed into global directives and label blocks, rewritten from a template.

Real Tiny Core configs differ (corebook part1/ch10; GNS3/gns3-registry's Packer template types `corepure64` at it): Core's plain `boot:` prompt with
lowercase `label corepure64` / `label mc`, TinyCorePure64's `UI menu.c32` with uppercase
directives and four labels, `TEXT HELP` blocks, F-key help files. Syslinux reads keywords
case-insensitively and treats every keyword that is not label-scoped as global wherever it
appears (Core's stock config puts `implicit`, `prompt` and `timeout` after its labels), so
the parser works the same way instead of looking for fixed strings.

The rewrite (iso-remaster/isolinux.cfg.j2) puts `SERIAL 0 115200` first (syslinux wants it
as the first directive), keeps the base's global lines except the ones it replaces
(SERIAL, DEFAULT, TIMEOUT, PROMPT, ONTIMEOUT), adds the appliance label as the default and
keeps every original label (or `MENU BEGIN` submenu) as written, minus `MENU DEFAULT`, so
they stay selectable from the prompt or the menu. `INCLUDE`d files are kept as they are;
the DEFAULT written after them wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import jinja2

from appliance.config import BOOT_TOKEN

# Keywords that belong to the LABEL above them (syslinux doc/syslinux.txt, doc/menu.txt).
LABEL_SCOPED = {
    "kernel", "linux", "boot", "bss", "pxe", "fdimage", "comboot", "com32", "config",
    "append", "initrd", "ipappend", "sysappend", "localboot", "text help",
    "menu label", "menu default", "menu hide", "menu passwd", "menu indent",
    "menu disable", "menu goto", "menu exit", "menu quit",
}  # fmt: skip
# Global directives the appliance config sets itself.
REPLACED = {"serial", "default", "timeout", "prompt", "ontimeout"}
CONSOLES = "console=tty0 console=ttyS0,115200"  # the last console= is /dev/console
MAX_CMDLINE = 2047  # x86 COMMAND_LINE_SIZE is 2048 with the terminating NUL


class IsolinuxError(ValueError):
    """The config cannot be parsed or rewritten safely."""


@dataclass(frozen=True)
class Line:
    keyword: str  # lowercased ("label", "menu label"); "" for blank lines and comments
    value: str
    text: str  # the line as written (without line ending)


@dataclass
class Block:
    """A LABEL with its lines, or a MENU BEGIN ... MENU END submenu (name empty)."""

    name: str
    lines: list[Line] = field(default_factory=list)

    def render(self) -> str:
        kept = [ln.text for ln in self.lines if ln.keyword != "menu default"]
        while kept and not kept[-1].strip():
            kept.pop()
        return "\n".join(kept)


@dataclass
class Config:
    globals: list[Line]
    blocks: list[Block]

    def value(self, keyword: str) -> str | None:
        """The last global value of `keyword` (syslinux: the last one wins)."""
        found = [ln.value for ln in self.globals if ln.keyword == keyword]
        return found[-1] if found else None

    def label_names(self) -> list[str]:
        names = [b.name for b in self.blocks if b.name]
        for block in self.blocks:
            if not block.name:  # labels inside a submenu
                names += [ln.value for ln in block.lines if ln.keyword == "label"]
        return names

    def label(self, name: str) -> Block | None:
        return next((b for b in self.blocks if b.name.lower() == name.lower()), None)


def split_keyword(line: str) -> tuple[str, str]:
    """('menu label', 'Boot Core') from 'MENU LABEL Boot Core'; comments and blanks -> ''."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return "", stripped
    words = stripped.split(None, 1)
    keyword, rest = words[0].lower(), words[1] if len(words) > 1 else ""
    if keyword in ("menu", "text") and rest:
        sub = rest.split(None, 1)
        keyword = f"{keyword} {sub[0].lower()}"
        rest = sub[1] if len(sub) > 1 else ""
    return keyword, rest.strip()


def parse(text: str) -> Config:
    """Global lines and blocks, in order; TEXT HELP bodies stay inside their label."""
    config = Config([], [])
    current: Block | None = None
    in_text = False
    depth = 0  # MENU BEGIN nesting
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        keyword, value = split_keyword(raw)
        line = Line(keyword, value, raw.rstrip())
        if in_text:
            current.lines.append(line)  # type: ignore[union-attr]
            in_text = keyword != "endtext"
        elif depth:
            current.lines.append(line)  # type: ignore[union-attr]
            depth += {"menu begin": 1, "menu end": -1}.get(keyword, 0)
        elif keyword == "menu begin":
            current, depth = Block(""), 1
            current.lines.append(line)
            config.blocks.append(current)
        elif keyword == "label":
            if not value:
                raise IsolinuxError(f"a LABEL without a name: {raw.strip()!r}")
            current = Block(value.split()[0], [line])
            config.blocks.append(current)
        elif current is not None and (keyword in LABEL_SCOPED or keyword == ""):
            current.lines.append(line)
            in_text = keyword == "text help"
        elif keyword == "menu end":
            raise IsolinuxError("MENU END without MENU BEGIN")
        elif keyword or current is None:
            config.globals.append(line)
    if depth:
        raise IsolinuxError("MENU BEGIN without MENU END")
    return config


def append_line(codes: list[str]) -> str:
    """The kernel arguments of the appliance label; every code checked again (the recipe
    validated them; this is the renderer's own check: defence in depth)."""
    for code in codes:
        if not BOOT_TOKEN.fullmatch(code):
            raise IsolinuxError(f"boot code {code!r} is not a safe token")
        if code == "noembed":
            raise IsolinuxError("noembed does not belong on the live ISO: the pivot_root negative control needs the initramfs root")
    return " ".join(["loglevel=3", *codes, CONSOLES])


def unique_label(config: Config, wanted: str) -> str:
    taken = {n.lower() for n in config.label_names()}
    name, n = wanted, 1
    while name.lower() in taken:
        n += 1
        name = f"{wanted}{n}"
    return name


@dataclass(frozen=True)
class Appliance:
    """What the appliance label boots."""

    kernel: str  # /boot/vmlinuz64
    initrds: tuple[str, ...]  # /boot/corepure64.gz, /boot/appliance.gz, /boot/build.gz
    codes: tuple[str, ...]  # the recipe's boot.live
    title: str  # MENU LABEL text
    label: str = "appliance"


def render(env: jinja2.Environment, base_text: str, app: Appliance) -> str:
    """The new isolinux.cfg: the template filled from the parsed base config."""
    base = parse(base_text)
    if not base.label_names():
        raise IsolinuxError("the base isolinux.cfg has no LABEL (not a Tiny Core boot config)")
    default = base.value("default") or ""
    ui_from_default = default if default.lower().endswith(".c32") else ""
    has_ui = base.value("ui") is not None or bool(ui_from_default)
    append = append_line(list(app.codes))
    if not app.title.isprintable():
        raise IsolinuxError(f"menu title {app.title!r} is not one printable line")
    if len(append) > MAX_CMDLINE:
        raise IsolinuxError(f"the boot line is {len(append)} characters; the kernel takes "
                            f"at most {MAX_CMDLINE}")
    label = unique_label(base, app.label)
    text = env.get_template("isolinux.cfg.j2").render(
        kept_globals=[ln.text for ln in base.globals if ln.keyword not in REPLACED],
        ui_from_default=ui_from_default, prompt=not has_ui, label=label,
        title=app.title, kernel=app.kernel, initrd=",".join(app.initrds), append=append,
        blocks=[b.render() for b in base.blocks],
    )
    check_rendered(text, base, label)
    return text


def check_rendered(text: str, base: Config, label: str) -> None:
    """Parse the result back: our label is the default, every original label survived."""
    new = parse(text)
    if (new.value("default") or "").lower() != label.lower() or new.label(label) is None:
        raise IsolinuxError(f"the rewritten config does not boot {label} by default")
    lost = [n for n in base.label_names() if n not in new.label_names()]
    if lost:
        raise IsolinuxError(f"the rewritten config lost labels: {', '.join(lost)}")
    if not re.match(r"(?i)serial\s+0\s+115200$", next(
            (ln.text.strip() for ln in new.globals if ln.keyword), "")):
        raise IsolinuxError("SERIAL 0 115200 is not the first directive")
