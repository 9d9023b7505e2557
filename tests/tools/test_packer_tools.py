"""`packer validate` (the installed Packer, 1.6.6 on Debian 12) accepts what the stage renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance import config, packer_build, packer_template
from appliance.errors import ToolError
from appliance.paths import REPO
from appliance.run import Runner

pytestmark = pytest.mark.tools


@pytest.fixture
def rendered(tmp_path) -> tuple[Path, dict]:
    recipe = config.load([REPO / "tests" / "standin" / "recipe.toml"]).recipe
    iso = tmp_path / "appliance.iso"
    iso.write_bytes(b"\0" * 2048)
    key = tmp_path / "build_ed25519"
    Runner(echo=lambda line: None).run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                                        str(key)])
    work = tmp_path / "work"
    work.mkdir()
    build = packer_template.Build(iso=iso, iso_sha256="0" * 64, accelerator="tcg",
                                  private_key=key, extensions=("openssh.tcz",), work=work,
                                  serial_log=tmp_path / "serial.log")
    return work, packer_template.values(recipe, build)


def validate(work: Path) -> None:
    Runner(echo=lambda line: None).run(packer_build.validate_argv(work), cwd=work,
                                       env=packer_build.packer_env(work.parent))


def test_packer_validate_accepts_the_rendered_template(rendered):
    work, values = rendered
    packer_template.render(REPO / "packer", work, values, packer_build.packer_version())
    validate(work)


def test_packer_validate_catches_a_bad_value(rendered):
    work, values = rendered
    values["accelerator"] = "warp-drive"
    packer_template.render(REPO / "packer", work, values, packer_build.packer_version())
    with pytest.raises(ToolError, match="accelerator"):
        validate(work)
