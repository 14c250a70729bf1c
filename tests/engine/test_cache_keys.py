"""Structural cache keys: properties over random graphs (ids and input order never matter)."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from engine.cache import KeyInterner, compute_keys


@st.composite
def graphs(draw):
    """Random DAGs of constants and adders (each adder links to earlier nodes)."""
    n = draw(st.integers(min_value=1, max_value=12))
    prompt = {}
    for i in range(n):
        if i < 2 or draw(st.booleans()):
            prompt[f"n{i}"] = {"class_type": "Const", "inputs": {"value": draw(st.integers(0, 3))}}
        else:
            a, b = draw(st.integers(0, i - 1)), draw(st.integers(0, i - 1))
            prompt[f"n{i}"] = {"class_type": "Add", "inputs": {"a": [f"n{a}", 0], "b": [f"n{b}", 0]}}
    return prompt


def keys_of(prompt: dict, interner: KeyInterner) -> dict:
    memo: dict = {}
    compute_keys(prompt.get, list(prompt), class_info=lambda c: (False,), fingerprints={}, memo=memo,
                 interner=interner)
    return memo


def relabel(prompt: dict, names: dict) -> dict:
    out = {}
    for nid in reversed(list(prompt)):   # different key order too
        inputs = prompt[nid]["inputs"]
        new_inputs = {k: ([names[v[0]], v[1]] if isinstance(v, list) else v) for k, v in reversed(list(inputs.items()))}
        out[names[nid]] = {"class_type": prompt[nid]["class_type"], "inputs": new_inputs}
    return out


@settings(max_examples=60, deadline=None)
@given(graphs(), st.randoms(use_true_random=False))
def test_renaming_nodes_and_reordering_inputs_keeps_every_key(prompt, rnd):
    interner = KeyInterner()
    ids = list(prompt)
    shuffled = ids[:]
    rnd.shuffle(shuffled)
    names = {old: f"x{new}" for old, new in zip(ids, shuffled)}
    before = keys_of(prompt, interner)
    after = keys_of(relabel(prompt, names), interner)
    assert all(before[nid] == after[names[nid]] for nid in ids)


@settings(max_examples=60, deadline=None)
@given(graphs())
def test_changing_a_constant_changes_exactly_the_keys_downstream_of_it(prompt):
    interner = KeyInterner()
    before = keys_of(prompt, interner)
    target = next(nid for nid, n in prompt.items() if n["class_type"] == "Const")
    changed = {nid: {"class_type": n["class_type"], "inputs": dict(n["inputs"])} for nid, n in prompt.items()}
    changed[target]["inputs"]["value"] = 99
    after = keys_of(changed, interner)
    downstream = {target}
    for nid, n in prompt.items():   # nodes are in topological order by construction
        if any(isinstance(v, list) and v[0] in downstream for v in n["inputs"].values()):
            downstream.add(nid)
    for nid in prompt:
        assert (before[nid] != after[nid]) == (nid in downstream)
