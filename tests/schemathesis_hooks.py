"""schemathesis hooks of tests/test_openapi.py, loaded by its CLI through SCHEMATHESIS_HOOKS."""

from __future__ import annotations

import itertools
import re
from typing import Any

import schemathesis

KEY = re.compile(r"[!-~]([ -~]*[!-~])?")
"""A valid Idempotency-Key, as the document's pattern says (at most 255 characters)."""

_requests = itertools.count()


@schemathesis.hook
def before_call(_context: schemathesis.HookContext, case: schemathesis.Case, _kwargs: dict[str, Any]) -> None:
    """Give each valid Idempotency-Key to one request alone, as a client makes one per new request.

    A key sent again with other reports is rightly 422, and the document cannot say "a key not
    used before". Invalid keys are left as generated: they must still get their 400.
    """
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and len(key) <= 255 and KEY.fullmatch(key):
        prefix = f"{next(_requests)}:"
        headers["Idempotency-Key"] = prefix + key[len(prefix) - 255 :]
