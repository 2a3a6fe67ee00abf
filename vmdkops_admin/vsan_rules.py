"""The original's storage policy text, a list of vSAN capabilities such as
``(("hostFailuresToTolerate" i1) ("forceProvisioning" i1))``: checked when
a policy is made or changed, on every backend."""

import re

from .errors import InvalidArgument

_RULE = re.compile(r'\(\s*"([^"()]+)"\s+([a-zA-Z])([^()\s]*)\s*\)')


def parse_vsan(content):
    """[(capability, value)] of a vSAN policy text; ``i`` and ``l`` values are integers."""
    text = content.strip()
    if not (text.startswith("(") and text.endswith(")")):
        raise InvalidArgument("Error: Invalid policy string")
    inner = text[1:-1]
    rules = _RULE.findall(inner)
    if not rules or _RULE.sub("", inner).strip():
        raise InvalidArgument("Error: Invalid policy string")
    parsed = []
    for key, kind, value in rules:
        if kind in "il":
            try:
                parsed.append((key, int(value)))
            except ValueError:
                raise InvalidArgument(f"Error: Invalid policy string: {key} needs an integer") from None
        else:
            parsed.append((key, value))
    return parsed


def vsan_text(rules):
    """The vSAN policy text of [(capability, value)]."""
    return "(" + " ".join(f'("{key}" i{value})' if isinstance(value, int) and not isinstance(value, bool)
                          else f'("{key}" {value})' for key, value in rules) + ")"
