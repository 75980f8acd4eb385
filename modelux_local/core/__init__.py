"""Plain types shared by every room. No I/O, no framework imports."""
from .usage import Usage, usage_from_openai
from .tags import Tags, TagError, parse_tags, tags_match

__all__ = ["Usage", "usage_from_openai", "Tags", "TagError", "parse_tags", "tags_match"]
