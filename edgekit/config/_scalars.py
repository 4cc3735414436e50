"""Which strings another YAML parser would read as something else, if written plain.

ruamel.yaml writes by YAML 1.2 rules: it quotes ``'5000'`` or ``'true'``, but writes
``5000:30``, ``1:20:30.5``, ``yes`` or ``off`` plain, which a YAML 1.1 parser (PyYAML,
go-yaml v2, many device-side tools) reads as the number 300030, 4830.5, true or false. The
dumper quotes every string that matches one of the implicit types below, of either version,
so that what it writes reads back as the same string under both.
"""

from __future__ import annotations

import re

__all__ = ["read_as_non_string"]

# YAML 1.1's implicit types (yaml.org/type: bool, int, float, null, timestamp, merge, value),
# spelled as PyYAML's resolver spells them; bool also with y/Y/n/N, which the 1.1 type
# repository lists and go-yaml v2 follows (PyYAML does not).
_YAML_1_1 = (
    r"y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF",
    r"[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
    r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+",
    r"[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
    r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
    r"~|null|Null|NULL|",
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}"
    r"(?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9]{1,2}(?::[0-9]{2})?))?",
    r"<<",
    r"=",
)
# YAML 1.2's core schema (null, bool, int, float).
_YAML_1_2 = (
    r"~|null|Null|NULL|",
    r"true|True|TRUE|false|False|FALSE",
    r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+",
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
)
_NON_STRING = re.compile("|".join(f"(?:{p})" for p in (*_YAML_1_1, *_YAML_1_2)))


def read_as_non_string(text: str) -> bool:
    """Whether a YAML 1.1 or 1.2 parser reads ``text``, written plain, as no string."""
    return _NON_STRING.fullmatch(text) is not None
