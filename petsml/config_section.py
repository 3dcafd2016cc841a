"""The base of every params.yaml section: frozen, strict, and able to say which of its keys a
stage read (:mod:`petsml.params_reads`). A strategy plug-in types its own section with it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

from petsml import params_reads


class Section(BaseModel):
    """A params.yaml section; each knows its dotted key so reads can be recorded
    (:mod:`petsml.params_reads`, only when ``PETS_PARAMS_LOG`` is set)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _key: str = PrivateAttr(default="")

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if params_reads.READS is not None and not name.startswith("_"):
            fields = type(self).model_fields
            if name in fields and not isinstance(value, Section):
                params_reads.record(_dotted(self, fields[name].alias or name))
        return value

    def model_dump(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if params_reads.READS is not None:  # the whole section is read
            for key in _leaves(self):
                params_reads.record(key)
        return super().model_dump(*args, **kwargs)

    def _with_keys(self, key: str = "") -> None:
        """Name this section ``key`` and every section inside it (after parsing)."""
        self._key = key
        for name, field in type(self).model_fields.items():
            value = super().__getattribute__(name)
            if isinstance(value, Section):
                alias = field.alias or name
                value._with_keys(f"{key}.{alias}" if key else alias)


def _dotted(section: Section, name: str) -> str:
    key = section.__pydantic_private__.get("_key", "") if section.__pydantic_private__ else ""
    return f"{key}.{name}" if key else name


def _leaves(section: Section) -> list[str]:
    out = []
    for name, field in type(section).model_fields.items():
        value = BaseModel.__getattribute__(section, name)
        if isinstance(value, Section):
            out += _leaves(value)
        else:
            out.append(_dotted(section, field.alias or name))
    return out
