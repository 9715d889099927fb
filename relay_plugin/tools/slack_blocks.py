"""Block Kit checks that Slack applies to the blocks of a post."""

from __future__ import annotations

import json
from typing import Any

# Limits from Slack's Block Kit reference. NOTE: Slack also rejects messages whose blocks total
# roughly 13,000 characters with msg_blocks_too_long; that limit is undocumented and not checked.
MAX_BLOCKS = 50
MAX_VIEW_BLOCKS = 100  # a Home tab or modal view
MAX_MARKDOWN_BLOCK_CHARS = 12_000
MAX_SECTION_TEXT_CHARS = 3_000
MAX_HEADER_TEXT_CHARS = 150


def parse_blocks(params: dict[str, Any]) -> list[Any]:
    """Return the ``blocks`` argument as a list; form posts send it as JSON text.

    Raises ValueError when the argument is neither a list nor JSON text of a list.
    """
    blocks = params.get("blocks")
    if not blocks:
        return []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    if not isinstance(blocks, list):
        raise ValueError(f"blocks must be a JSON array, not {type(blocks).__name__}")
    return blocks


def blocks_problem(blocks: list[Any], *, max_blocks: int = MAX_BLOCKS) -> str | None:
    """Return why Slack would reject these blocks with invalid_blocks, or None."""
    if len(blocks) > max_blocks:
        surface = "a message" if max_blocks == MAX_BLOCKS else "a view"
        return f"{len(blocks)} blocks, but {surface} takes at most {max_blocks}"
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f"block {index} is not an object with a 'type'"
        kind = block["type"]
        text = text_of(block.get("text"))
        if kind == "markdown" and len(text) > MAX_MARKDOWN_BLOCK_CHARS:
            return (
                f"block {index}: markdown text has {len(text)} characters, "
                f"at most {MAX_MARKDOWN_BLOCK_CHARS} are allowed"
            )
        if kind == "section" and len(text) > MAX_SECTION_TEXT_CHARS:
            return (
                f"block {index}: section text has {len(text)} characters, "
                f"at most {MAX_SECTION_TEXT_CHARS} are allowed"
            )
        if kind == "header" and len(text) > MAX_HEADER_TEXT_CHARS:
            return (
                f"block {index}: header text has {len(text)} characters, "
                f"at most {MAX_HEADER_TEXT_CHARS} are allowed"
            )
    return None


def text_of(value: Any) -> str:
    """Return the text of a text object (``{"type": "mrkdwn", "text": ...}``) or a string."""
    if isinstance(value, dict):
        return str(value.get("text", ""))
    return value if isinstance(value, str) else ""
