"""isolinux.cfg parsing and the appliance rewrite (appliance/tinycore/isolinux.py, iso-remaster/)."""

from __future__ import annotations

import pytest

from appliance.stages.remaster.stage import INITRDS, KERNEL, TEMPLATES, environment
from appliance.tinycore import isolinux

# Tiny Core's stock Core config, with CorePure64's names (corebook part1/ch10; GNS3/gns3-registry's Packer template): lowercase,
# `implicit`, `prompt` and `timeout` after the labels, F-key help files.
STOCK = """\
display boot.msg
default corepure64
label corepure64
\tkernel /boot/vmlinuz64
\tinitrd /boot/corepure64.gz
\tappend loglevel=3

label mc
\tkernel /boot/vmlinuz64
\tappend initrd=/boot/corepure64.gz loglevel=3
implicit 0
prompt 1
timeout 300
F1 boot.msg
F2 f2
F3 f3
F4 f4
"""

# TinyCorePure64's style: menu.c32, uppercase directives, its four labels (webboot's test),
# a MENU DEFAULT of its own, help text whose body looks like directives, a submenu.
MENU = """\
UI menu.c32
PROMPT 0
TIMEOUT 600
ONTIMEOUT tc
MENU TITLE Tiny Core Linux
DEFAULT tc

LABEL tc
MENU LABEL Boot TinyCorePure64
TEXT HELP
Boot TinyCorePure64 with the X desktop.
LABEL not-a-label
ENDTEXT
KERNEL /boot/vmlinuz64
INITRD /boot/corepure64.gz
APPEND loglevel=3 vga=791

LABEL tcw
MENU LABEL Boot TinyCorePure64 (on slow devices, waitusb=5)
MENU DEFAULT
KERNEL /boot/vmlinuz64
INITRD /boot/corepure64.gz
APPEND loglevel=3 vga=791 waitusb=5

LABEL core
MENU LABEL Boot Core (command line only).
KERNEL /boot/vmlinuz64
INITRD /boot/corepure64.gz
APPEND loglevel=3

LABEL corew
MENU LABEL Boot Core (command line only on slow devices, waitusb=5)
KERNEL /boot/vmlinuz64
INITRD /boot/corepure64.gz
APPEND loglevel=3 waitusb=5

MENU BEGIN tools
MENU TITLE Tools
LABEL memtest
MENU DEFAULT
KERNEL /boot/memtest
MENU END
F1 f1
"""

APP = isolinux.Appliance(KERNEL, INITRDS, ("cde", "waitusb=5", "host=box1"), "tc-appliance 0.1.0")


def render(text: str, app: isolinux.Appliance = APP) -> str:
    return isolinux.render(environment(TEMPLATES), text, app)


def directives(text: str) -> list[str]:
    """The non-comment, non-blank lines, stripped."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def test_stock_config_parses_globals_after_labels_as_globals():
    config = isolinux.parse(STOCK)
    assert config.label_names() == ["corepure64", "mc"]
    assert config.value("default") == "corepure64"
    assert config.value("timeout") == "300"  # written after the labels, still global
    assert [ln.text.strip() for ln in config.label("mc").lines if ln.keyword] == [
        "label mc", "kernel /boot/vmlinuz64", "append initrd=/boot/corepure64.gz loglevel=3"]


def test_menu_config_keywords_are_case_insensitive_and_help_text_is_not_parsed():
    config = isolinux.parse(MENU)
    assert config.value("ui") == "menu.c32"
    assert config.label_names() == ["tc", "tcw", "core", "corew", "memtest"]
    assert "not-a-label" not in config.label_names()
    assert isolinux.split_keyword("  MENU   Label  Boot Core") == ("menu label", "Boot Core")


def test_stock_rewrite_boots_the_appliance_label_unattended_with_serial():
    out = render(STOCK)
    lines = directives(out)
    assert lines[0] == "SERIAL 0 115200"  # syslinux wants it first
    config = isolinux.parse(out)
    assert config.value("default") == "appliance"
    assert config.value("timeout") == "50"  # 5 s, then the default boots by itself
    assert config.value("prompt") == "1"  # the boot: prompt still takes another label
    app = {ln.keyword: ln.value for ln in config.label("appliance").lines}
    assert app["kernel"] == "/boot/vmlinuz64"
    assert app["initrd"] == "/boot/corepure64.gz,/boot/appliance.gz,/boot/build.gz"
    assert app["append"] == ("loglevel=3 cde waitusb=5 host=box1 "
                             "console=tty0 console=ttyS0,115200")
    assert app["append"].endswith("console=tty0 console=ttyS0,115200")
    # the original labels are kept as written, and the global lines the rewrite does not own
    assert "label mc\n\tkernel /boot/vmlinuz64\n\tappend initrd=/boot/corepure64.gz loglevel=3" in out
    assert config.label_names() == ["appliance", "corepure64", "mc"]
    for kept in ("display boot.msg", "implicit 0", "F1 boot.msg", "F4 f4"):
        assert kept in lines
    assert "timeout 300" not in lines and "default corepure64" not in lines


def test_menu_rewrite_keeps_the_menu_and_every_label_and_makes_ours_the_default():
    out = render(MENU)
    config = isolinux.parse(out)
    lines = directives(out)
    assert lines[0] == "SERIAL 0 115200"
    assert config.value("ui") == "menu.c32" and "PROMPT 1" not in lines
    assert config.value("default") == "appliance"
    assert config.value("ontimeout") is None  # it would boot tc after the timeout
    assert config.label_names() == ["appliance", "tc", "tcw", "core", "corew", "memtest"]
    # only our label is the menu default (theirs lost MENU DEFAULT, the submenu's too)
    assert [ln for ln in lines if ln.upper() == "MENU DEFAULT"] == ["MENU DEFAULT"]
    assert "MENU DEFAULT" in [ln.text.strip() for ln in config.label("appliance").lines]
    assert "TEXT HELP\nBoot TinyCorePure64 with the X desktop.\nLABEL not-a-label\nENDTEXT" in out
    assert "MENU BEGIN tools" in lines and "MENU END" in lines
    assert "MENU TITLE Tiny Core Linux" in lines and "F1 f1" in lines


def test_old_style_default_menu_module_becomes_ui():
    out = render("DEFAULT vesamenu.c32\nLABEL a\nKERNEL /boot/vmlinuz64\n")
    config = isolinux.parse(out)
    assert config.value("ui") == "vesamenu.c32" and config.value("default") == "appliance"


def test_label_name_taken_by_the_base_gets_a_number():
    out = render("default appliance\nlabel appliance\nkernel /boot/vmlinuz64\n")
    config = isolinux.parse(out)
    assert config.value("default") == "appliance2"
    assert config.label_names() == ["appliance2", "appliance"]


@pytest.mark.parametrize("code", ["a b", "x;reboot", "", "-x", "cde\n", "a\nAPPEND evil", "noembed"])
def test_unsafe_or_forbidden_boot_codes_are_refused_by_the_renderer(code):
    app = isolinux.Appliance(KERNEL, INITRDS, ("cde", code), "t")
    with pytest.raises(isolinux.IsolinuxError):
        render(STOCK, app)


@pytest.mark.parametrize("text, message", [
    ("display boot.msg\n", "no LABEL"),
    ("MENU BEGIN x\nLABEL a\n", "MENU BEGIN without MENU END"),
    ("LABEL a\nMENU END\n", "MENU END without MENU BEGIN"),
    ("LABEL\n", "LABEL without a name"),
])
def test_configs_that_cannot_be_rewritten_safely_are_errors(text, message):
    with pytest.raises(isolinux.IsolinuxError, match=message):
        render(text)


def test_too_long_boot_line_is_refused():
    app = isolinux.Appliance(KERNEL, INITRDS, tuple(f"x{i}={'a' * 60}" for i in range(40)), "t")
    with pytest.raises(isolinux.IsolinuxError, match="at most 2047"):
        render(STOCK, app)


def test_crlf_config_is_read():
    out = render(STOCK.replace("\n", "\r\n"))
    assert isolinux.parse(out).label_names() == ["appliance", "corepure64", "mc"]


def test_a_title_that_would_add_a_directive_is_refused():
    app = isolinux.Appliance(KERNEL, INITRDS, ("cde",), "x\nAPPEND init=/bin/sh")
    with pytest.raises(isolinux.IsolinuxError, match="one printable line"):
        render(STOCK, app)
