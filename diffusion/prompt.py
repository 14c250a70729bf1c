"""ComfyUI's prompt syntax: `(text:1.2)` weights, escapes, `embedding:name`, and 77-token chunks."""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from diffusion.tokenizer import BOS, EOS, MAX_LENGTH, ClipTokenizer

Token = int | Tensor  # a token id, or one textual-inversion vector [D]
Weighted = tuple[Token, float]
EmbedFn = Callable[[str], "Tensor | None"]  # name → vectors [n, D], None when not found

_LARGE_GROUP = 8  # groups this long may be split across chunks (§6.1)


def _split_top_level(text: str) -> list[str]:
    """Split into top-level items: parenthesised groups and the text between them (§3.1 rule 2)."""
    items, current, depth = [], "", 0
    for ch in text:
        if ch == "(":
            if depth == 0:
                if current:
                    items.append(current)
                current = "("
            else:
                current += ch
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                items.append(current + ")")
                current = ""
            else:
                current += ch
        else:
            current += ch
    if current:
        items.append(current)
    return items


def _parse(text: str, weight: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for item in _split_top_level(text):
        if len(item) >= 2 and item[0] == "(" and item[-1] == ")":
            inner, w = item[1:-1], weight * 1.1
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    w = float(inner[colon + 1:])
                    inner = inner[:colon]
                except ValueError:
                    pass
            out += _parse(inner, w)
        else:
            out.append((item, weight))
    return out


def parse_weights(text: str) -> list[tuple[str, float]]:
    """Prompt text → [(segment, weight)]: `(x)` ×1.1 per level, `(x:w)` sets w, `\\(` `\\)` literal."""
    # Escaped parentheses become two private-use characters that the text does not contain.
    free = (chr(c) for c in range(0xE000, 0x110000) if chr(c) not in text)
    opening, closing = next(free), next(free)
    escaped = text.replace("\\(", opening).replace("\\)", closing)
    return [(seg.replace(opening, "(").replace(closing, ")"), w) for seg, w in _parse(escaped, 1.0)]


def token_groups(text: str, tokenizer: ClipTokenizer, embed: EmbedFn | None = None,
                 warn: Callable[[str], None] | None = None) -> list[list[Weighted]]:
    """Weighted segments → token groups (one per text piece or embedding), §4.

    `embed` is None when no embeddings directory is configured: `embedding:x` is then plain text.
    """
    groups: list[list[Weighted]] = []
    for segment, weight in parse_weights(text):
        for piece in _split_embeddings(segment):
            if embed is not None and piece.startswith("embedding:"):
                vectors, piece = _embedding(piece[len("embedding:"):].strip("\n"), embed, warn)
                if vectors is not None:
                    groups.append([(v, weight) for v in vectors.reshape(-1, vectors.shape[-1])])
                if not piece:
                    continue
            groups.append([(t, weight) for t in tokenizer.encode(piece)])
    return groups


def _embedding(rest: str, embed: EmbedFn, warn: Callable[[str], None] | None) -> tuple[Tensor | None, str]:
    """Look up the first word of `rest` as an embedding; returns (vectors or None, leftover text)."""
    words = rest.split()
    if not words:
        return None, ""
    name, leftover = words[0], " ".join(words[1:])
    vectors = embed(name)
    stripped = name.strip(",")
    if vectors is None and stripped and stripped != name:  # `embedding:foo, bar`
        vectors = embed(stripped)
        trailing = name[len(name.rstrip(",")):]
        leftover = f"{trailing} {leftover}" if leftover else trailing
    if vectors is None and warn:
        warn(f"embedding {name!r} not found, ignoring it")
    return vectors, leftover


def _split_embeddings(segment: str) -> list[str]:
    """Split before every `" embedding:"` / `"\\nembedding:"` (separator consumed), drop empties."""
    pieces = [segment]
    for sep in (" embedding:", "\nembedding:"):
        pieces = [q for piece in pieces for q in _split_keep(piece, sep)]
    return [p for p in pieces if p]


def _split_keep(piece: str, sep: str) -> list[str]:
    parts = piece.split(sep)
    return parts[:1] + ["embedding:" + p for p in parts[1:]]


def chunk(groups: list[list[Weighted]], pad_id: int) -> list[list[Weighted]]:
    """Pack token groups into 77-token windows `[BOS, ≤75 tokens, EOS, pads]` (§6.1)."""
    chunks: list[list[Weighted]] = []
    current: list[Weighted] = [(BOS, 1.0)]
    limit = MAX_LENGTH - 1
    for group in groups:
        large = len(group) >= _LARGE_GROUP
        rest = group
        while rest:
            if len(current) + len(rest) <= limit:
                current += rest
                break
            free = limit - len(current)
            if large:
                current += rest[:free]
                rest = rest[free:]
                current.append((EOS, 1.0))
            else:
                current.append((EOS, 1.0))
                current += [(pad_id, 1.0)] * free
            chunks.append(current)
            current = [(BOS, 1.0)]
    current.append((EOS, 1.0))
    current += [(pad_id, 1.0)] * (MAX_LENGTH - len(current))
    chunks.append(current)
    return chunks
