"""The stand-in kernel's own config logic; the shared parsers live in appliance.stages.kernel.kconfig."""

from __future__ import annotations

from appliance.stages.kernel.kconfig import (  # noqa: F401  (re-exported for the stand-in's modules)
    ConfigFormatError,
    Option,
    OptionList,
    Retired,
    kconfig_symbols,
    parse_config,
    parse_options,
    scripts_config_argv,
    value_of,
    verify_settings,
)


def symbol_6_1(option: Option) -> str:
    """The symbol that carries this option in Linux 6.1 (the stand-in's source)."""
    return option.name_6_1 or option.name


def tc11_value_6_1(option: Option) -> str:
    """The 6.1 value equal in effect to the tc11 value."""
    return option.value_6_1 or option.tc11


def tc11_mismatches(options: OptionList, tc11_config: dict[str, str]) -> list[str]:
    """Options whose recorded tc11 value differs from the tc11 config (should be none)."""
    out = []
    for o in options.options:
        actual = value_of(tc11_config, o.name)
        if actual != o.tc11:
            out.append(f"{o.name}: options.toml says {o.tc11}, the tc11 config has {actual}")
    out += [
        f"{r.name}: listed as retired but present in the tc11 config"
        for r in options.retired
        if r.name in tc11_config
    ]
    return out


def standin_settings(options: OptionList, extra: dict[str, str]) -> dict[str, str]:
    """Every symbol the stand-in sets, by its 6.1 name: the extra fragment, then options.toml.

    The two must not name the same symbol: one value per symbol, owned by one file.
    """
    wanted = {symbol_6_1(o): tc11_value_6_1(o) for o in options.options}
    overlap = sorted(set(wanted) & set(extra))
    if overlap:
        raise ConfigFormatError(
            "kernel-extra.config and options.toml both set: " + ", ".join(overlap)
        )
    return {**extra, **wanted}
