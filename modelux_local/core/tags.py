"""Run tags: `mlx:tags` in the body, `x-mlx-tags` (JSON) or `x-mlx-run-id` headers."""
from __future__ import annotations

from typing import Any

import msgspec

MAX_TAGS = 32
MAX_VALUE_CHARS = 256
MAX_KEY_CHARS = 64

Tags = dict[str, str]


class TagError(ValueError):
    """A tag set that breaks the documented limits; the message says which."""


def _check(obj: Any, where: str) -> Tags:
    if not isinstance(obj, dict):
        raise TagError(f"{where} must be a JSON object of string -> string, got {type(obj).__name__}")
    if len(obj) > MAX_TAGS:
        raise TagError(f"{where} has {len(obj)} keys; at most {MAX_TAGS} are allowed")
    for k, v in obj.items():
        if not isinstance(k, str) or not k or len(k) > MAX_KEY_CHARS:
            raise TagError(f"{where}: tag keys must be non-empty strings of at most {MAX_KEY_CHARS} characters")
        if not isinstance(v, str):
            raise TagError(f"{where}: tag {k!r} must be a string, got {type(v).__name__}")
        if len(v) > MAX_VALUE_CHARS:
            raise TagError(f"{where}: tag {k!r} is {len(v)} characters; at most {MAX_VALUE_CHARS} are allowed")
    return obj


def pop_body_tags(body: dict) -> Any:
    """Takes `mlx:tags` out of a request body; a near miss (`mlx_tags`, `mlx-tags`, `mlxTags`)
    is refused rather than forwarded, since the call would otherwise silently go untagged."""
    for key in body:
        if key != "mlx:tags" and isinstance(key, str) and key.lower().replace("_", "").replace("-", "") in (
                "mlxtags", "mlx:tags"):
            raise TagError(f"unknown body field {key!r}: run tags go in 'mlx:tags' (with a colon), "
                           "e.g. extra_body={\"mlx:tags\": {\"run_id\": \"run_1\"}}")
    return body.pop("mlx:tags", None)


def parse_tags(body_tags: Any, header_tags: str | None, header_run_id: str | None) -> Tags:
    """Merges the three sources (body wins over headers); raises TagError on bad input."""
    tags: Tags = {}
    if header_tags:
        try:
            decoded = msgspec.json.decode(header_tags)
        except msgspec.DecodeError as e:
            raise TagError(f"x-mlx-tags header is not valid JSON: {e}") from None
        tags.update(_check(decoded, "x-mlx-tags header"))
    if header_run_id is not None:
        tags["run_id"] = header_run_id
    if body_tags is not None:
        tags.update(_check(body_tags, "mlx:tags"))
    if len(tags) > MAX_TAGS:
        raise TagError(f"tags have {len(tags)} keys in all; at most {MAX_TAGS} are allowed")
    _check(tags, "tags")
    rid = tags.get("run_id")
    if rid is not None and not rid.strip():
        raise TagError("run_id must not be empty")
    return tags


def tags_match(match: dict[str, str], tags: dict[str, str]) -> bool:
    """A `match = {k = v}` table of the config (budgets, routing binds): every pair present in the tags."""
    return all(tags.get(k) == v for k, v in match.items())
