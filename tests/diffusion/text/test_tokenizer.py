"""The CLIP tokenizer against the BPE rules applied by hand to the bundled merges file."""

import gzip
import json
import re
from pathlib import Path

import pytest

from diffusion.tokenizer import BOS, EOS, VOCAB_SIZE, ClipTokenizer, byte_alphabet, clip_bpe

VOCAB_FILE = Path(__file__).resolve().parents[3] / "diffusion" / "data" / "bpe_simple_vocab_16e6.txt.gz"


def merges_from_file() -> list[tuple[str, str]]:
    lines = gzip.open(VOCAB_FILE).read().decode("utf-8").split("\n")
    assert lines[0].startswith("\"bpe_simple_vocab_16e6.txt#version")
    return [tuple(line.split()) for line in lines[1:48895]]


MERGES = merges_from_file()
RANKS = {pair: i for i, pair in enumerate(MERGES)}
# Ids by CLIP's layout: 256 byte symbols, the same with </w>, one per merge (in file order).
IDS = {t: i for i, t in enumerate(byte_alphabet() + [c + "</w>" for c in byte_alphabet()]
                                   + [a + b for a, b in MERGES])}


def reference_bpe(text: str) -> list[str]:
    """Textbook BPE for ASCII text: lowercase, CLIP's split, then merge the lowest-ranked pair until none."""
    text = re.sub(r"\s+", " ", text).strip().lower()
    out = []
    for word in re.findall(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+", text):
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = [(RANKS.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        out += parts
    return out


PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "Masterpiece, best quality, 1girl, looking_at_viewer, (detailed:1.2)",
    "it's what they'd've done: 3.14159 x 42!!! <lora:foo:0.8> [cat] {dog} BREAK",
    "unbelievably photorealistic hyperdetailed octane-render, #trending @artstation",
    "zzzqqqxj supercalifragilisticexpialidocious",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_tokens_equal_textbook_bpe_over_the_merges_file(prompt):
    tok = ClipTokenizer()
    expected = reference_bpe(prompt)
    assert tok.tokens(prompt) == expected
    assert tok.encode(prompt) == [IDS[t] for t in expected]


def test_vocabulary_has_49408_entries_with_bos_and_eos_at_the_end():
    vocab = clip_bpe().get_vocab()
    assert len(vocab) == VOCAB_SIZE
    assert vocab["<|startoftext|>"] == BOS == 49406
    assert vocab["<|endoftext|>"] == EOS == 49407
    assert vocab["!"] == 0 and vocab["!</w>"] == 256  # id 0 (the SD2/SDXL-g pad) is the token "!"


def test_known_clip_ids_for_common_words():
    tok = ClipTokenizer()
    assert tok.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
    assert tok.encode("hello world") == [3306, 1002]


def test_case_and_whitespace_runs_do_not_change_tokens():
    tok = ClipTokenizer()
    assert tok.tokens("Hello   World\n\nX") == ["hello</w>", "world</w>", "x</w>"]
    assert tok.encode("HELLO\tworld") == tok.encode("hello world")


def test_html_entities_are_not_unescaped():
    assert ClipTokenizer().tokens("tom &amp; jerry") == ["tom</w>", "&</w>", "amp</w>", ";</w>", "jerry</w>"]


def test_digits_are_split_one_per_token():
    assert ClipTokenizer().tokens("2048") == ["2</w>", "0</w>", "4</w>", "8</w>"]


def test_a_literal_end_of_text_marker_becomes_the_eos_id():
    tok = ClipTokenizer()
    assert tok.encode("cat <|endoftext|> dog") == [tok.encode("cat")[0], EOS, tok.encode("dog")[0]]


def test_a1111_syntax_is_ordinary_text():
    tok = ClipTokenizer()
    assert tok.tokens("[cat]") == ["[</w>", "cat</w>", "]</w>"]
    assert tok.tokens("BREAK") == ["break</w>"]


def test_non_ascii_text_is_byte_encoded_and_decodes_back():
    tok = ClipTokenizer()
    ids = tok.encode("Café crème")
    assert tok.decode(ids) == "café crème"


def test_same_tokens_as_transformers_clip_tokenizer_built_from_the_same_files(tmp_path):
    from transformers import CLIPTokenizer

    vocab = clip_bpe().get_vocab()
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in MERGES) + "\n")
    hf = CLIPTokenizer(vocab=str(tmp_path / "vocab.json"), merges=str(tmp_path / "merges.txt"))
    tok = ClipTokenizer()
    for prompt in PROMPTS + ["Café crème, 東京 ｆｕｌｌ width", "a <|endoftext|> b"]:
        assert [BOS, *tok.encode(prompt), EOS] == hf(prompt)["input_ids"], prompt
