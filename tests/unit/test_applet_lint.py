"""The applet lint (tests/applet_lint.py): guest scripts call only what tc11 provides."""

from pathlib import Path

from tests import applet_lint

SAMPLE = """#!/bin/sh
# sha256sum in a comment is fine
PATH=/usr/local/bin:$PATH
digest() { sha256sum "$1" | cut -d' ' -f1; }
size=$(stat -c %s /etc/motd)
if [ -n "$size" ] && grep -q x /etc/motd; then acpid -c /etc/acpi; fi
case "$1" in
    start|stop) echo "$1" ;;
    mountpoint) : ;;
esac
cat <<END >/tmp/x
nsenter -t 1 in a here-document is data
END
$CMD --flag
/opt/appliance-stop.sh
timeout 5 base64 /dev/null 2>/dev/null
for x in a b; do busybox blkdiscard /dev/sda; done
digest /etc/motd
"""


def names(text: str) -> list[str]:
    return [c.name for c in applet_lint.commands(text)]


def test_commands_in_command_position_only():
    assert names(SAMPLE) == ["sha256sum", "cut", "stat", "grep", "acpid", "cat", "timeout",
                             "base64", "busybox", "blkdiscard"]


def test_lint_reports_what_tc11_lacks_with_file_and_line(tmp_path):
    script = tmp_path / "guest.sh"
    script.write_text(SAMPLE)
    found = applet_lint.problems(script, applet_lint.provided([]), "guest.sh")
    assert [f.split(":")[1] + " " + f.split("'")[1] for f in found] == [
        "4 sha256sum", "5 stat", "6 acpid", "16 base64", "17 blkdiscard"]
    assert found[0] == ("guest.sh:4: 'sha256sum' is not provided by Tiny Core 11 (no busybox "
                        "applet, base program or loaded extension has it)")


def test_a_loaded_extension_provides_its_tools(tmp_path):
    script = tmp_path / "guest.sh"
    script.write_text("#!/bin/sh\nacpid -d\nmkfs.ext4 -q /dev/sda1\n")
    assert len(applet_lint.problems(script, applet_lint.provided([]))) == 2
    assert applet_lint.problems(script, applet_lint.provided(["acpid", "e2fsprogs.tcz"])) == []


def test_the_products_guest_scripts_pass(capsys):
    scripts = applet_lint.guest_scripts()
    assert {p.relative_to(applet_lint.REPO).parts[0] for p in scripts} == {
        "iso-remaster", "packer", "overlays"}
    assert applet_lint.main([]) == 0, capsys.readouterr().out


def test_busybox_list_is_tc11s_not_debians():
    applets = set(applet_lint.provided([]))
    assert {"sh", "ash", "timeout", "setsid", "cpio", "losetup", "md5sum", "su"} <= applets
    assert not {"sha256sum", "stat", "acpid", "ip", "mdev", "mountpoint", "base64",
                "unshare", "nsenter", "fstrim", "blkdiscard", "findfs"} & applets
    assert "blkid" in applets  # util-linux's, in the base


def test_bad_recipe_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "r.toml"
    bad.write_text("not = [toml")
    assert applet_lint.main(["-c", str(bad), str(Path(__file__))]) == 2
    assert capsys.readouterr().err.startswith(f"error: {bad}: ")
