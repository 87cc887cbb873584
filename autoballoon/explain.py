"""Render policies as commented TOML: what `check-policy --explain` prints.

The field docstrings of the pydantic models are the comments, so the explanation and the shipped
``policies/default.toml`` can never drift from the code.
"""

from __future__ import annotations

import json
import textwrap

from pydantic import BaseModel


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"cannot render {value!r}")


def render_table(name: str, model: BaseModel, set_from: dict[str, str] | None = None) -> str:
    """One TOML table with every field, its docstring as a comment; None values commented out."""
    lines = [f"[{name}]"]
    for field_name, info in type(model).model_fields.items():
        doc = " ".join((info.description or "").split())
        for chunk in textwrap.wrap(doc, 96):
            lines.append(f"# {chunk}")
        value = getattr(model, field_name)
        origin = f"  # from {set_from[field_name]}" if set_from and field_name in set_from else ""
        if value is None:
            lines.append(f"# {field_name} =   (unset){origin}")
        else:
            lines.append(f"{field_name} = {_toml_value(value)}{origin}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
