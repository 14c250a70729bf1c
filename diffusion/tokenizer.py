"""The CLIP byte-level BPE tokenizer, built offline from the bundled OpenAI merges file."""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE

BOS = 49406  # <|startoftext|>
EOS = 49407  # <|endoftext|>
VOCAB_SIZE = 49408
MAX_LENGTH = 77  # BOS + 75 content tokens + EOS

_MERGES_USED = 49152 - 256 - 2  # CLIP uses the first 48894 merges of the file
# CLIP's pre-tokenisation: contractions, letter runs, single digits, punctuation runs.
_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE, in CLIP's vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in printable] + [chars[b] for b in range(256) if b not in printable]


def read_merges() -> list[tuple[str, str]]:
    """The merge rules CLIP uses, from the bundled `bpe_simple_vocab_16e6.txt.gz`."""
    data = resources.files("diffusion.data").joinpath("bpe_simple_vocab_16e6.txt.gz").read_bytes()
    lines = gzip.decompress(data).decode("utf-8").split("\n")[1:_MERGES_USED + 1]  # line 0 is a version header
    return [tuple(line.split()) for line in lines]  # type: ignore[misc]


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token → id: 256 bytes, the same with `</w>`, one entry per merge, then BOS and EOS."""
    alphabet = byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


@lru_cache(maxsize=1)
def clip_bpe() -> Tokenizer:
    """The `tokenizers` pipeline equivalent to Hugging Face's CLIPTokenizer (no ftfy, no hub)."""
    merges = read_merges()
    tok = Tokenizer(BPE(vocab=build_vocab(merges), merges=merges, continuing_subword_prefix="",
                        end_of_word_suffix="</w>", fuse_unk=False, unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<|startoftext|>", special=True),
                            AddedToken("<|endoftext|>", special=True)])
    return tok


class ClipTokenizer:
    """Text → CLIP token ids without BOS/EOS (the same vocabulary for every CLIP encoder)."""

    def __init__(self):
        self._bpe = clip_bpe()

    def encode(self, text: str) -> list[int]:
        """Content token ids of `text` (lower-cased, whitespace collapsed, `</w>` word ends)."""
        return self._bpe.encode(text, add_special_tokens=False).ids

    def tokens(self, text: str) -> list[str]:
        """The BPE token strings of `text`, e.g. `['hello</w>', 'world</w>']`."""
        return self._bpe.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: list[int]) -> str:
        """Ids back to text (word ends become spaces)."""
        return self._bpe.decode(ids, skip_special_tokens=False).replace("</w>", " ").strip()
