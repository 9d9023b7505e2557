"""HCL literals for the Packer templates: the `hcl` filter of packer/*.j2.

A recipe value reaches HCL only through here. Inside an HCL quoted string `${` and `%{` start
template sequences, so a host name or path containing them would be evaluated by Packer;
they are escaped as `$${` and `%%{`, as are quotes, backslashes and line breaks; other
control characters are refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from appliance.errors import StageError

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(text: str) -> str:
    """An HCL quoted string whose value is exactly `text`."""
    out = []
    for i, char in enumerate(text):
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char in "$%" and nxt == "{":
            out.append(char * 2)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            # no recipe value needs one, and readers disagree on \u escapes
            raise StageError(f"a control character (0x{ord(char):02x}) in {text!r} cannot "
                              "be passed to Packer", "remove it from the recipe value")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def literal(value: object) -> str:
    """str, int, bool, lists and string-keyed maps of them as HCL; anything else is a bug."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, Mapping):
        items = ", ".join(f"{quote(str(k))} = {literal(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    raise StageError(f"cannot write {type(value).__name__} {value!r} as an HCL value")


def hcl_type(value: object) -> str:
    """The Packer variable type of a value made by `literal`."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Sequence) and value and not isinstance(value[0], str):
        return f"list({hcl_type(value[0])})"
    if isinstance(value, Sequence):
        return "list(string)"
    raise StageError(f"no HCL type for {type(value).__name__}")
