"""What counts as a number, a missing value and a prompt, wherever the kit reads them: config values, env.py's
batches, dataset rows, reward and environment returns."""

import math
import numbers


def is_finite_number(value) -> bool:
    """A real number (numpy's included), not a bool, not NaN or infinite."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_missing(value) -> bool:
    """None or NaN: how pandas and JSON leave an empty field."""
    return value is None or isinstance(value, float) and math.isnan(value)


def is_prompt(prompt) -> bool:
    """A non-empty string, or a non-empty list of {'role': str, 'content': str} chat messages."""
    if isinstance(prompt, str):
        return bool(prompt)
    return isinstance(prompt, list) and bool(prompt) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt)


def is_unicode(prompt) -> bool:
    """False for text holding lone surrogates (bytes read with errors='surrogateescape', a JSON '\\udcff'),
    which tokenizers cannot encode."""
    try:
        (prompt if isinstance(prompt, str) else "".join(m["content"] for m in prompt)).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
