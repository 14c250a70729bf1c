"""Prompt weights, escapes, nesting, `embedding:` pieces and 77-token chunking (text-encoding.md §3–§6.1)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from diffusion.prompt import chunk, parse_weights, token_groups
from diffusion.tokenizer import BOS, EOS, ClipTokenizer

TOK = ClipTokenizer()
CAT, DOG = TOK.encode("cat")[0], TOK.encode("dog")[0]


@pytest.mark.parametrize("prompt,segments", [
    ("a (cat:1.2) dog", [("a ", 1.0), ("cat", 1.2), (" dog", 1.0)]),
    ("((a))", [("a", 1.1 * 1.1)]),
    ("((a:1.5))", [("a", 1.5)]),
    ("((a) b:1.3)", [("a", 1.3 * 1.1), (" b", 1.3)]),
    ("(a (b:0.5) c)", [("a ", 1.1), ("b", 0.5), (" c", 1.1)]),
    ("(a:b)", [("a:b", 1.1)]),
    ("(:1.2)", [(":1.2", 1.1)]),
    ("(a:1.2:1.3)", [("a:1.2", 1.3)]),
    ("( a : 0.5 )", [(" a ", 0.5)]),
    ("a [b] c", [("a [b] c", 1.0)]),
    (r"\(x\) y", [("(x) y", 1.0)]),
    ("ab(c)d", [("ab", 1.0), ("c", 1.1), ("d", 1.0)]),
    ("(a", [("(a", 1.0)]),
    ("a)", [("a)", 1.0)]),
    ("a) (b", [("a) (b", 1.0)]),
    (r"(a \(b\):0.8)", [("a (b)", 0.8)]),
    (r"\[a\] \\", [(r"\[a\] \\", 1.0)]),
    ("(a:-1)", [("a", -1.0)]),
    ("((a)", [("(a", 1.1)]),
    (r"(a\)", [("(a)", 1.0)]),
    ("\0\1x\0\2", [("\0\1x\0\2", 1.0)]),
    ("", []),
])
def test_weight_syntax_matches_the_spec_examples(prompt, segments):
    assert parse_weights(prompt) == segments


def test_double_parentheses_weigh_exactly_1_1_squared_in_float64():
    assert parse_weights("((a))")[0][1] == 1.2100000000000002


def test_each_weighted_segment_is_tokenised_on_its_own():
    groups = token_groups("ab(c)d", TOK)
    assert [[t for t, _ in g] for g in groups] == [TOK.encode("ab"), TOK.encode("c"), TOK.encode("d")]
    assert [g[0][1] for g in groups] == [1.0, 1.1, 1.0]


def embed_table(**named):
    return lambda name: named.get(name)


def test_embedding_names_become_one_group_of_vectors_with_the_segment_weight():
    vecs = torch.arange(12.0).reshape(3, 4)
    groups = token_groups("a photo of embedding:style, (embedding:style:1.2)", TOK, embed_table(style=vecs))
    kinds = [[isinstance(t, int) for t, _ in g] for g in groups]
    assert kinds == [[True] * 3, [False] * 3, [True], [False] * 3]
    assert torch.equal(torch.stack([t for t, _ in groups[1]]), vecs)
    assert [w for _, w in groups[3]] == [1.2] * 3
    assert [t for t, _ in groups[2]] == TOK.encode(",")  # the comma is re-tokenised after the retry


def test_a_trailing_comma_is_retried_without_it_and_kept_as_text():
    groups = token_groups("embedding:foo, bar", TOK, embed_table(foo=torch.ones(1, 4)))
    assert len(groups) == 2 and not isinstance(groups[0][0][0], int)
    assert [t for t, _ in groups[1]] == TOK.encode(", bar")


def test_a_missing_embedding_warns_and_its_name_is_dropped():
    warnings = []
    groups = token_groups("cat embedding:nothere dog", TOK, embed_table(), warnings.append)
    assert [t for g in groups for t, _ in g] == [CAT, DOG]
    assert len(warnings) == 1 and "nothere" in warnings[0]


def test_embedding_prefix_is_case_sensitive_and_needs_a_space_or_newline_before_it():
    found = embed_table(x=torch.ones(1, 4))
    for text in ("Embedding:x", "cat,embedding:x"):
        assert all(isinstance(t, int) for g in token_groups(text, TOK, found) for t, _ in g)
    assert not isinstance(token_groups("cat\nembedding:x", TOK, found)[1][0][0], int)


def test_without_an_embeddings_directory_embedding_text_is_plain_text():
    ids = [t for g in token_groups("embedding:foo", TOK, None) for t, _ in g]
    assert ids == TOK.encode("embedding:foo")


def ids(c):
    return [t for t, _ in c]


def test_an_empty_prompt_is_one_window_of_bos_eos_and_pads():
    [c] = chunk([], pad_id=EOS)
    assert ids(c) == [BOS, EOS] + [EOS] * 75
    [c] = chunk([], pad_id=0)
    assert ids(c) == [BOS, EOS] + [0] * 75


def test_eighty_tokens_split_exactly_at_the_75_token_boundary():
    c1, c2 = chunk(token_groups("cat " * 80, TOK), pad_id=EOS)
    assert ids(c1) == [BOS] + [CAT] * 75 + [EOS]
    assert ids(c2) == [BOS] + [CAT] * 5 + [EOS] + [EOS] * 70


def test_a_small_weighted_group_that_does_not_fit_moves_whole_to_the_next_window():
    c1, c2 = chunk(token_groups("cat " * 70 + "(dog " * 1 + "dog " * 6 + ":1.1)", TOK), pad_id=0)
    assert ids(c1) == [BOS] + [CAT] * 70 + [EOS] + [0] * 5
    assert ids(c2) == [BOS] + [DOG] * 7 + [EOS] + [0] * 68
    assert [w for _, w in c2[1:8]] == [1.1] * 7 and c2[8][1] == 1.0


def test_long_prompts_fill_77_token_windows_and_small_groups_pack_behind_a_split_one():
    comma = TOK.encode(",")[0]
    chunks = chunk(token_groups("cat, " * 120 + "(dog:1.3) " * 40, TOK), pad_id=EOS)
    # 240 tokens fill three windows of 75 and 15 of a fourth; the 40 one-token groups still fit there.
    assert len(chunks) == 4 and all(len(c) == 77 and c[0][0] == BOS for c in chunks)
    assert ids(chunks[3]) == [BOS] + [comma, CAT] * 7 + [comma] + [DOG] * 40 + [EOS] + [EOS] * 20
    assert [w for _, w in chunks[3][16:56]] == [1.3] * 40


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=120), max_size=12))
def test_chunking_keeps_every_token_in_order_in_windows_of_77(sizes):
    groups = [[(1000 + g, 1.0 + g)] * n for g, n in enumerate(sizes)]
    chunks = chunk(groups, pad_id=0)
    assert all(len(c) == 77 and c[0] == (BOS, 1.0) for c in chunks)
    content = [t for c in chunks for t in c if t[0] not in (BOS, EOS, 0)]
    assert content == [t for g in groups for t in g]
    for c in chunks:  # EOS right after the content, pads after it
        n = sum(1 for t, _ in c if t not in (BOS, EOS, 0))
        assert c[n + 1] == (EOS, 1.0) and all(t == 0 for t, _ in c[n + 2:])


@given(st.text(alphabet=st.characters(blacklist_characters="()\\"), max_size=40))
def test_text_without_parentheses_is_one_segment_of_weight_one(text):
    assert parse_weights(text) == ([(text, 1.0)] if text else [])
