"""Where the kernel option data lives, loaded through the pure parsers of kernelconfig."""

from __future__ import annotations

from pathlib import Path

from appliance.paths import data_dir
from tests.standin.kernelconfig import OptionList, parse_config, parse_options

HERE = Path(__file__).resolve().parent
OPTIONS_FILE = data_dir("kernel") / "options.toml"
TC11_CONFIG_FILE = data_dir("kernel") / "tc11-config-5.4.3-tinycore64"
EXTRA_CONFIG_FILE = HERE / "kernel-extra.config"


def load_options(path: Path = OPTIONS_FILE) -> OptionList:
    return parse_options(path.read_text(encoding="utf-8"), str(path))


def load_tc11_config(path: Path = TC11_CONFIG_FILE) -> dict[str, str]:
    return parse_config(path.read_text(encoding="utf-8"), str(path))


def load_extra_config(path: Path = EXTRA_CONFIG_FILE) -> dict[str, str]:
    return parse_config(path.read_text(encoding="utf-8"), str(path))
