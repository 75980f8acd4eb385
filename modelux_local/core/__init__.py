"""Plain types shared by every room. No I/O, no framework imports."""
from .tags import TagError, Tags, parse_tags, tags_match
from .usage import Usage, usage_from_openai

__all__ = ["Usage", "usage_from_openai", "Tags", "TagError", "parse_tags", "tags_match"]
