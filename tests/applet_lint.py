"""The applet lint: the product's guest scripts may call only what Tiny Core 11 provides.

Tiny Core's busybox lacks many applets that Debian's has (sha256sum, stat, acpid,
mountpoint, ip...), and ash finds commands only through PATH, so a script that works on a
desktop fails on tc11 with `not found`. This reads each shell script that runs inside Tiny
Core, finds the words in command position with a small tokenizer of POSIX sh, and reports
every command that neither tc11's base (busybox applets and other base programs, from
tests/standin/tc11_userland.toml) nor an extension the recipe loads provides.

    python -m tests.applet_lint [-c RECIPE] [FILE...]   (default: the product's scripts)
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
USERLAND = REPO / "tests" / "standin" / "tc11_userland.toml"

# ash's builtins (busybox 1.3x with ASH_ECHO, ASH_PRINTF, ASH_TEST, ASH_GETOPTS, ASH_CMDCMD,
# all set in Tiny Core's config) and the shell's reserved words.
BUILTINS = frozenset(
    ". : [ [[ alias bg break cd chdir command continue echo eval exec exit export false fg "
    "getopts hash help jobs kill let local printf pwd read readonly return set shift source "
    "test times trap true type ulimit umask unalias unset wait".split()
)
KEEP_COMMAND = frozenset("if then else elif do while until ! { } ( time".split())
ENDS_COMMAND = frozenset("fi done esac }".split())
# Commands whose (first non-option) argument is itself a command run in the same system.
WRAPPERS = frozenset("exec sudo nohup setsid env nice xargs timeout busybox command".split())
# Options of a wrapper that take a value (the value is not the command).
OPTION_ARGS = {"timeout": {"-s", "-k"}, "xargs": {"-n", "-s", "-I", "-P", "-d", "-E"},
               "nice": {"-n"}, "sudo": {"-u", "-g"}}
BIN_DIRS = ("/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/usr/local/bin/", "/usr/local/sbin/")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
FUNCTION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(\s*\)", re.MULTILINE)
NAME = re.compile(r"^[A-Za-z0-9_.+\[-][A-Za-z0-9_.+\[\]-]*$")


@dataclass(frozen=True)
class Call:
    name: str
    line: int


def provided(recipe_extensions: list[str], data: dict | None = None) -> set[str]:
    """Every command tc11's base and the given extensions put on PATH."""
    data = data or tomllib.loads(USERLAND.read_text(encoding="utf-8"))
    names = set(data["busybox"]["applets"]) | set(data["base"]["tools"])
    for ext in recipe_extensions:
        names |= set(data["extensions"].get(ext.removesuffix(".tcz"), []))
    return names


class Scanner:
    """Walks sh source once, collecting the words that stand in command position."""

    def __init__(self, text: str):
        self.text = text
        self.i = 0
        self.line = 1
        self.calls: list[Call] = []
        self.heredocs: list[tuple[str, bool]] = []

    # -- words ---------------------------------------------------------------------------
    def scan(self, stop: str = "") -> None:
        """Commands until `stop` (")" of a $( or "`") or the end of the text."""
        at_command, wrapper, case_depth, skip_next = True, "", [], False
        word, word_line, raw = [], self.line, False
        while True:
            c = self.peek()
            if c == "" or (c == stop and not word):
                if c:
                    self.i += 1
                return
            if c in " \t" or c == "\n" or c in ";&|()<>" or (c == stop):
                if word or raw:
                    at_command, wrapper, skip_next = self.take(
                        "".join(word), word_line, at_command, wrapper, case_depth, skip_next)
                    word, raw = [], False
                if c == stop:
                    self.i += 1
                    return
                self.i += 1
                if c == "\n":
                    self.line += 1
                    self.read_heredocs()
                    if not (case_depth and case_depth[-1] == "pattern"):
                        at_command, wrapper = True, ""
                elif c in ";&|(":
                    if c == ";" and self.peek() == ";" and case_depth:
                        self.i += 1
                        case_depth[-1] = "pattern"
                        at_command = False
                        continue
                    if c == "(" and case_depth and case_depth[-1] == "pattern":
                        continue
                    at_command, wrapper = True, ""
                elif c == ")":
                    if case_depth and case_depth[-1] == "pattern":
                        case_depth[-1] = "body"
                    at_command, wrapper = True, ""
                elif c in "<>":
                    skip_next = self.redirect(c)
                continue
            if c == "#" and not word:
                while self.peek() not in ("", "\n"):
                    self.i += 1
                continue
            if not word:
                word_line = self.line
            word.append(self.read_piece())
            raw = True

    def read_piece(self) -> str:
        """One piece of a word: a quoted string, $(...), `...`, ${...} or one character."""
        c = self.peek()
        if c == "\\":
            self.i += 2
            if self.text[self.i - 1 : self.i] == "\n":
                self.line += 1
                return ""
            return self.text[self.i - 1 : self.i]
        if c == "'":
            end = self.text.find("'", self.i + 1)
            end = len(self.text) if end < 0 else end
            piece = self.text[self.i + 1 : end]
            self.line += piece.count("\n")
            self.i = end + 1
            return piece
        if c == '"':
            return self.double_quoted()
        if c == "`":
            self.i += 1
            self.scan(stop="`")
            return "$"
        if c == "$":
            return self.dollar()
        self.i += 1
        return c

    def double_quoted(self) -> str:
        self.i += 1
        out = []
        while self.peek() not in ("", '"'):
            c = self.peek()
            if c in "$`\\":
                out.append(self.read_piece())
            else:
                if c == "\n":
                    self.line += 1
                out.append(c)
                self.i += 1
        self.i += 1
        return "".join(out)

    def dollar(self) -> str:
        nxt = self.text[self.i + 1 : self.i + 3]
        if nxt.startswith("(("):
            self.skip_balanced("(", ")", self.i + 1)
        elif nxt.startswith("("):
            self.i += 2
            self.scan(stop=")")
        elif nxt.startswith("{"):
            self.skip_balanced("{", "}", self.i + 1)
        else:
            self.i += 1
        return "$"

    def skip_balanced(self, open_: str, close: str, start: int) -> None:
        depth, j = 0, start
        while j < len(self.text):
            ch = self.text[j]
            depth += ch == open_
            depth -= ch == close
            self.line += ch == "\n"
            j += 1
            if depth == 0:
                break
        self.i = j

    def redirect(self, c: str) -> bool:
        """After < or >: a here-document's delimiter is read; else the next word is a file."""
        if c == "<" and self.peek() == "<":
            self.i += 1
            strip = self.peek() == "-"
            self.i += strip
            while self.peek() in " \t":
                self.i += 1
            start = self.i
            while self.peek() not in ("", " ", "\t", "\n", ";", "&", "|", ")"):
                self.i += 1
            self.heredocs.append((self.text[start : self.i].strip("'\"\\"), strip))
            return False
        while self.peek() in "<>&|":
            self.i += 1
        if self.text[self.i - 1] == "&" and self.peek() in "0123456789-":
            while self.peek() in "0123456789-":
                self.i += 1
            return False
        return True

    def read_heredocs(self) -> None:
        """Skips the bodies of the here-documents opened on the line just ended."""
        for delimiter, strip in self.heredocs:
            while self.i < len(self.text):
                end = self.text.find("\n", self.i)
                end = len(self.text) if end < 0 else end
                body_line = self.text[self.i : end]
                self.i = end + 1
                self.line += 1
                if (body_line.lstrip("\t") if strip else body_line) == delimiter:
                    break
        self.heredocs = []

    def peek(self) -> str:
        return self.text[self.i : self.i + 1]

    # -- command positions ---------------------------------------------------------------
    def take(self, word, line, at_command, wrapper, case_depth, skip_next):
        """Records `word` if it is a command; returns the new (at_command, wrapper, skip)."""
        if skip_next:
            return at_command, wrapper, False
        if case_depth and case_depth[-1] == "header":
            if word == "in":
                case_depth[-1] = "pattern"
            return False, "", False
        if case_depth and case_depth[-1] == "pattern":
            if word == "esac":
                case_depth.pop()
                return False, "", False
            return False, "", False
        if word.isdigit() and self.peek() in "<>":
            return at_command, wrapper, False  # a file descriptor: 2>/dev/null
        if wrapper:
            return self.after_wrapper(word, line, at_command, wrapper)
        if not at_command:
            return False, "", False
        if word == "case":
            case_depth.append("header")
            return False, "", False
        if word == "esac" and case_depth:
            case_depth.pop()
            return False, "", False
        if word in KEEP_COMMAND or ASSIGNMENT.match(word):
            return True, "", False
        if word in ENDS_COMMAND or word == "for":
            return False, "", False
        if word in WRAPPERS:
            self.record(word, line)
            return True, word, False
        self.record(word, line)
        return False, "", False

    def after_wrapper(self, word, line, at_command, wrapper):
        if word.startswith("-"):
            if wrapper == "command" and word in ("-v", "-V"):
                return False, "", False  # command -v NAME only asks
            return True, wrapper, word in OPTION_ARGS.get(wrapper, ())
        if wrapper == "env" and ASSIGNMENT.match(word):
            return True, wrapper, False
        if wrapper == "timeout" and re.fullmatch(r"[0-9.]+[smhd]?", word):
            return True, "timeout-done", False
        if wrapper == "busybox":
            self.record(word, line)  # busybox APPLET: the applet must be compiled in
            return False, "", False
        return self.take(word, line, True, "", [], False)

    def record(self, word: str, line: int) -> None:
        if "$" in word or word in BUILTINS:
            return
        if "/" in word:
            if not word.startswith(BIN_DIRS):
                return  # a script or program of our own, by path
            word = word.rsplit("/", 1)[1]
        if NAME.match(word):
            self.calls.append(Call(word, line))


def commands(text: str) -> list[Call]:
    """The commands `text` (POSIX sh) calls, minus its own functions and ash's builtins."""
    scanner = Scanner(text)
    scanner.scan()
    own = set(FUNCTION.findall(text))
    return [c for c in scanner.calls if c.name not in own]


def problems(path: Path, available: set[str], shown: str | None = None) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [f"{shown or path}:{c.line}: '{c.name}' is not provided by Tiny Core 11 (no busybox "
            "applet, base program or loaded extension has it)"
            for c in commands(text) if c.name not in available]


def is_shell(path: Path) -> bool:
    try:
        first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    except (UnicodeDecodeError, OSError):
        return False
    return bool(re.match(r"^#!\s*/bin/(sh|ash|busybox ash)\b", first))


def guest_scripts(repo: Path = REPO) -> list[Path]:
    """The product's shell that runs inside Tiny Core."""
    found = [*sorted(repo.glob("iso-remaster/*.sh")), *sorted(repo.glob("packer/scripts/*.sh"))]
    found += sorted(p for p in repo.glob("overlays/*/root/**/*") if p.is_file() and is_shell(p))
    return found


def recipe_extensions(recipe_path: Path) -> list[str]:
    """The extensions the recipe's appliance loads: Tiny Core's and the overlays."""
    data = tomllib.loads(recipe_path.read_text(encoding="utf-8"))
    names = list(data.get("tinycore", {}).get("extensions", []))
    names += data.get("live", {}).get("onboot", [])
    overlays = data.get("overlays")
    if overlays is None:
        overlays = [p.name for p in (REPO / "overlays").iterdir() if p.is_dir()]
    return names + list(overlays)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="applet_lint", description=__doc__.split("\n")[0])
    parser.add_argument("-c", dest="recipe", type=Path, default=REPO / "appliance.toml")
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args(argv)
    try:
        available = provided(recipe_extensions(args.recipe))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        print(f"error: {args.recipe}: {exc}", file=sys.stderr)
        return 2
    found = []
    for path in args.files or guest_scripts():
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        found += problems(path, available, str(shown))
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
