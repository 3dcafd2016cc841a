"""params.yaml owns every default value: no typed section (nor a strategy's settings model)
carries a default of its own that could drift from the file. Only a strategy's whole section
may be absent (None): a strategy without settings has no section."""

from __future__ import annotations

import pydantic

from petsml.catalog import strategies
from petsml.catalog.refs import resolve
from petsml.config import Params


def _models(model: type[pydantic.BaseModel], seen: set) -> None:
    if model in seen:
        return
    seen.add(model)
    for field in model.model_fields.values():
        for kind in getattr(field.annotation, "__args__", (field.annotation,)):
            if isinstance(kind, type) and issubclass(kind, pydantic.BaseModel):
                _models(kind, seen)


def test_no_section_field_has_a_default_of_its_own():
    seen: set = set()
    _models(Params, seen)
    for row in strategies.rows().values():
        if row.settings:
            _models(resolve(row.settings), seen)
    optional_sections = set(strategies.names())
    defaults = [
        f"{model.__name__}.{name} = {field.default!r}"
        for model in seen
        for name, field in model.model_fields.items()
        if not field.is_required()
        and not (model is Params and name in optional_sections and field.default is None)
    ]
    assert len(seen) > 10 and defaults == [], "defaults belong in params.yaml: " + ", ".join(
        defaults
    )
