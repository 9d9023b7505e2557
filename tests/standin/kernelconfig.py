"""The stand-in kernel's own config logic; the shared parsers live in appliance.kconfig."""

from __future__ import annotations

from appliance.kconfig import (  # noqa: F401  (re-exported for the stand-in's modules)
    ConfigFormatError,
    Option,
    OptionList,
    Retired,
    kconfig_symbols,
    parse_config,
    parse_options,
    scripts_config_argv,
    tc11_mismatches,
    value_of,
    verify_settings,
)


def standin_settings(options: OptionList, extra: dict[str, str]) -> dict[str, str]:
    """Every symbol the stand-in sets, by its 6.1 name: the extra fragment, then options.toml.

    The two must not name the same symbol: one value per symbol, owned by one file.
    """
    wanted = {o.symbol_6_1: o.tc11_value_6_1 for o in options.options}
    overlap = sorted(set(wanted) & set(extra))
    if overlap:
        raise ConfigFormatError(
            "kernel-extra.config and options.toml both set: " + ", ".join(overlap)
        )
    return {**extra, **wanted}
