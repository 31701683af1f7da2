"""Names of locally fine-tuned models, in OpenAI's ``ft:`` format."""

from __future__ import annotations

import re

# ':' separates the fields, so it can never appear inside one; whitespace would make the
# name awkward in URLs and shells.
_UNSAFE = re.compile(r"[:\s]+")


def _clean(part: str) -> str:
    return _UNSAFE.sub("-", part.strip())


def fine_tuned_model_name(base: str, team: str, suffix: str | None, job_id: str) -> str:
    """``ft:<base>:<team>:<suffix>:<job id>``; the suffix field is empty when there is none."""
    fields = (base, team, suffix or "", job_id)
    return "ft:" + ":".join(_clean(f) for f in fields)
