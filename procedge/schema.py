"""The base of every typed config and file format: unknown keys are errors, and a validation error reads as one line."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """A pydantic model that refuses keys it does not declare (a misspelt option is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid")


def first_error(exc: ValidationError) -> str:
    """`field.path: message` of the first thing wrong, for a one-line error."""
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
