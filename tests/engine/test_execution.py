"""Executor behaviour: events, caching across edits, lazy inputs, lists, expansion, interrupt, errors."""
from __future__ import annotations

from typing import Annotated

from enginetest_nodes import Runner, chain
from engine.graph import GraphBuilder
from engine.schema import NodeOutput, Output, Socket, node


def test_normal_run_emits_events_in_the_documented_order(runner, calls):
    result = runner.run(chain())
    assert result.status == "success"
    assert result.outputs == {"4": {"text": ["11"]}}
    names = runner.names()
    assert names[:2] == ["execution_start", "execution_cached"]
    assert names[-1] == "execution_success"
    # each node: progress_state(running), executing, [executed], progress_state(finished)
    assert names[2:6] == ["progress_state", "executing", "progress_state", "progress_state"]
    assert runner.executing()[-1] == "4"
    assert names[-3:-1] == ["executed", "progress_state"]
    assert [m[0] for m in result.messages] == ["execution_start", "execution_cached", "execution_success"]
    assert result.meta["4"] == {"node_id": "4", "display_node": "4", "parent_node": None, "real_node_id": "4"}


def test_rerunning_an_identical_prompt_executes_zero_nodes(runner, calls):
    runner.run(chain())
    calls.clear()
    result = runner.run(chain())
    assert calls == []
    cached = next(d for e, d in runner.events if e == "execution_cached")
    assert cached["nodes"] == ["1", "2", "3", "4"]
    assert runner.executing() == []
    executed = [d for e, d in runner.events if e == "executed"]
    assert executed == [{"node": "4", "display_node": "4", "output": {"text": ["11"]}, "prompt_id": "p"}]
    assert result.outputs == {"4": {"text": ["11"]}}


def test_changing_one_constant_reruns_only_that_node_and_its_dependents(runner, calls):
    runner.run(chain(1))
    calls.clear()
    result = runner.run(chain(5))
    assert sorted(runner.executing()) == ["1", "3", "4"]
    assert result.outputs["4"] == {"text": ["15"]}


def test_node_ids_do_not_matter_for_the_cache(runner, calls):
    runner.run(chain())
    calls.clear()
    renamed = {"a" + k: {"class_type": v["class_type"], "inputs": {n: (["a" + x[0], x[1]] if isinstance(x, list) else x)
                                                                  for n, x in v["inputs"].items()}}
               for k, v in chain().items()}
    runner.run(renamed)
    assert calls == []


def test_classic_cache_forgets_the_previous_prompt_but_lru_keeps_it(registry, calls):
    for policy, expected in (("classic", ["TestConst", "TestAdd", "TestShow"]), (("lru", 10), [])):
        r = Runner(registry, policy)
        r.run(chain(1))
        r.run(chain(2))
        calls.clear()
        r.run(chain(1))
        assert calls == expected, policy


def test_cache_none_reruns_everything(registry, calls):
    r = Runner(registry, "none")
    r.run(chain())
    calls.clear()
    r.run(chain())
    assert len(calls) == 4


def test_not_idempotent_nodes_never_share_results_across_ids(runner, calls):
    prompt = {"1": {"class_type": "TestConst", "inputs": {"value": 1}},
              "2": {"class_type": "TestIdentity", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "TestIdentity", "inputs": {"value": ["1", 0]}},
              "4": {"class_type": "TestShow", "inputs": {"value": ["2", 0]}},
              "5": {"class_type": "TestShow", "inputs": {"value": ["3", 0]}}}
    runner.run(prompt)
    assert calls.count("TestIdentity") == 2


def test_unconnected_nodes_never_run(runner, calls):
    prompt = dict(chain(), **{"9": {"class_type": "TestConst", "inputs": {"value": 99}}})
    runner.run(prompt)
    assert "9" not in runner.executing()


def test_lazy_input_not_requested_is_never_evaluated(runner, calls):
    prompt = {"1": {"class_type": "TestConst", "inputs": {"value": 1}},
              "2": {"class_type": "TestFail", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "TestLazySwitch", "inputs": {"use_a": True, "a": ["1", 0], "b": ["2", 0]}},
              "4": {"class_type": "TestShow", "inputs": {"value": ["3", 0]}}}
    result = runner.run(prompt)
    assert result.status == "success"
    assert "TestFail" not in calls
    assert result.outputs["4"] == {"text": ["1"]}
    assert runner.executing().count("3") == 2   # once before the lazy request, once when it runs


def test_output_list_maps_downstream_nodes_once_per_element(runner, calls):
    prompt = {"1": {"class_type": "TestRange", "inputs": {"count": 3}},
              "2": {"class_type": "TestConst", "inputs": {"value": 10}},
              "3": {"class_type": "TestAdd", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
              "4": {"class_type": "TestShow", "inputs": {"value": ["3", 0]}},
              "5": {"class_type": "TestSum", "inputs": {"values": ["3", 0]}},
              "6": {"class_type": "TestShow", "inputs": {"value": ["5", 0]}}}
    result = runner.run(prompt)
    assert calls.count("TestAdd") == 3
    assert result.outputs["4"] == {"text": ["10", "11", "12"]}   # UI lists concatenated
    assert result.outputs["6"] == {"text": ["33"]}                  # INPUT_IS_LIST: one call, whole list


def test_node_expansion_runs_the_subgraph_and_returns_its_result(registry, calls):
    @node("TestDouble", category="test", outputs=[Output("INT")])
    def double(value: Annotated[int, Socket("INT")]):
        g = GraphBuilder()
        add = g.node("TestAdd", a=value, b=value)
        return NodeOutput(result=(add.out(0),), expand=g.finalize())

    registry.add(double.spec, core=True)
    r = Runner(registry)
    prompt = {"1": {"class_type": "TestConst", "inputs": {"value": 4}},
              "2": {"class_type": "TestDouble", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "TestShow", "inputs": {"value": ["2", 0]}}}
    result = r.run(prompt)
    assert result.status == "success", result.error
    assert result.outputs["3"] == {"text": ["8"]}
    ephemeral = [d for e, d in r.events if e == "executing" and d["node"].startswith("2.")]
    assert ephemeral and ephemeral[0]["display_node"] == "2"
    assert r.executing().count("2") == 1   # no second `executing` when the expansion completes


def test_interrupt_inside_a_node_stops_the_prompt_at_the_next_progress_report(registry, calls):
    r = Runner(registry)

    def emit(event, data):
        r.events.append((event, data))
        if event == "progress" and data["value"] == 2:
            r.interrupt.set()

    prompt = {"1": {"class_type": "TestConst", "inputs": {"value": 1}},
              "2": {"class_type": "TestSlow", "inputs": {"value": ["1", 0], "steps": 100}},
              "3": {"class_type": "TestShow", "inputs": {"value": ["2", 0]}}}
    result = r.executor.run("p", prompt, emit=emit, interrupt=r.interrupt)
    assert result.status == "interrupted"
    progress = [d["value"] for e, d in r.events if e == "progress"]
    assert progress == [1, 2]
    interrupted = r.events[-1]
    assert interrupted[0] == "execution_interrupted"
    assert interrupted[1]["node_id"] == "2" and interrupted[1]["executed"] == ["1"]
    assert not r.interrupt.is_set()   # cleared when the run ends


def test_a_failing_node_fails_only_its_prompt_and_keeps_finished_outputs_cached(runner, calls):
    prompt = {"1": {"class_type": "TestConst", "inputs": {"value": 7}},
              "2": {"class_type": "TestFail", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "TestShow", "inputs": {"value": ["2", 0]}}}
    result = runner.run(prompt)
    assert result.status == "error"
    err = result.error
    assert err["node_id"] == "2" and err["node_type"] == "TestFail"
    assert err["exception_type"] == "ValueError"
    assert err["exception_message"] == "bad value 7\n"
    assert err["executed"] == ["1"]
    assert err["current_inputs"] == {"value": [7]}
    assert err["traceback"] and all(isinstance(line, str) for line in err["traceback"])
    assert runner.names()[-1] == "execution_error"
    calls.clear()
    ok = runner.run({"1": prompt["1"], "3": {"class_type": "TestShow", "inputs": {"value": ["1", 0]}}})
    assert ok.status == "success"
    assert calls == ["TestShow"]   # the constant computed before the failure stayed cached


def test_partial_outputs_run_only_the_requested_roots(runner, calls):
    prompt = dict(chain(), **{"5": {"class_type": "TestShow", "inputs": {"value": ["2", 0]}}})
    result = runner.run(prompt, outputs=["5"])
    assert list(result.outputs) == ["5"]
    assert "TestAdd" not in calls


def test_free_memory_drops_cached_outputs_so_everything_reruns(runner, calls):
    unloaded = []
    runner.executor.unload_hooks.append(lambda: unloaded.append(True))
    runner.run(chain())
    runner.executor.free(unload_models=True)
    calls.clear()
    runner.run(chain())
    assert calls == [] and unloaded == [True]     # unloading models keeps the output cache
    runner.executor.free(free_memory=True)
    runner.run(chain())
    assert len(calls) == 4


def test_an_interrupt_sent_while_idle_does_not_stop_the_next_prompt(runner, calls):
    runner.interrupt.set()
    assert runner.run(chain()).status == "success"


def test_progress_with_a_preview_emits_a_preview_event_for_the_server(registry):
    @node("TestPreviewer", category="test", outputs=[Output("INT")])
    def previewer(value: Annotated[int, Socket("INT")], ctx=None):
        ctx.progress(1, 2, ("JPEG", "<image>", 256))
        ctx.warn("looks odd")
        return value

    registry.add(previewer.spec, core=True)
    r = Runner(registry)
    result = r.run({"1": {"class_type": "TestConst", "inputs": {"value": 1}},
                    "2": {"class_type": "TestPreviewer", "inputs": {"value": ["1", 0]}},
                    "3": {"class_type": "TestShow", "inputs": {"value": ["2", 0]}}})
    preview = next(d for e, d in r.events if e == "preview")
    assert preview == {"prompt_id": "p", "node_id": "2", "display_node_id": "2", "image": "<image>", "format": "JPEG",
                       "max_size": 256}
    state = [d for e, d in r.events if e == "progress_state"]
    assert any(s["nodes"].get("2", {}).get("max") == 2 and s["nodes"]["2"]["value"] == 1 for s in state)
    assert result.warnings == ["node 2: looks odd"]


def test_a_string_constant_never_shares_a_cache_entry_with_a_list_constant(registry, calls):
    runner = Runner(registry, ("lru", 10))
    as_text = {"1": {"class_type": "TestShow", "inputs": {"value": "[1,2]"}}}
    as_list = {"1": {"class_type": "TestShow", "inputs": {"value": [1, 2]}}}
    runner.run(as_text)
    runner.run(as_list)
    assert calls == ["TestShow", "TestShow"]


def test_nodes_feeding_output_nodes_are_scheduled_first_so_previews_appear_early(runner, calls):
    prompt = {"5": {"class_type": "TestShow", "inputs": {"value": ["4", 0]}},
              "4": {"class_type": "TestAdd", "inputs": {"a": ["3", 0], "b": ["3", 0]}},
              "3": {"class_type": "TestConst", "inputs": {"value": 2}},
              "2": {"class_type": "TestShow", "inputs": {"value": ["1", 0]}},
              "1": {"class_type": "TestConst", "inputs": {"value": 1}}}
    runner.run(prompt)
    assert runner.executing() == ["1", "2", "3", "4", "5"]


def test_expanded_nodes_report_their_parent_in_progress_state(registry):
    @node("TestTwice", category="test", outputs=[Output("INT")])
    def twice(value: Annotated[int, Socket("INT")]):
        g = GraphBuilder()
        return NodeOutput(result=(g.node("TestAdd", a=value, b=value).out(0),), expand=g.finalize())

    registry.add(twice.spec, core=True)
    r = Runner(registry)
    r.run({"1": {"class_type": "TestConst", "inputs": {"value": 1}},
           "2": {"class_type": "TestTwice", "inputs": {"value": ["1", 0]}},
           "3": {"class_type": "TestShow", "inputs": {"value": ["2", 0]}}})
    last = [d for e, d in r.events if e == "progress_state"][-1]["nodes"]
    inner = last["2.0.0.1"]
    assert (inner["parent_node_id"], inner["real_node_id"], inner["display_node_id"]) == ("2", "2", "2")


def test_an_out_of_memory_error_explains_itself_and_unloads_models_but_keeps_the_cache(registry, calls):
    class OutOfMemoryError(RuntimeError):
        """Stands in for torch.cuda.OutOfMemoryError."""

    @node("TestGreedy", category="test", outputs=[Output("INT")])
    def greedy(value: Annotated[int, Socket("INT")]):
        raise OutOfMemoryError("CUDA out of memory")

    registry.add(greedy.spec, core=True)
    r = Runner(registry)
    unloaded = []
    r.executor.unload_hooks.append(lambda: unloaded.append(True))
    result = r.run({"1": {"class_type": "TestConst", "inputs": {"value": 1}},
                    "2": {"class_type": "TestGreedy", "inputs": {"value": ["1", 0]}},
                    "3": {"class_type": "TestShow", "inputs": {"value": ["2", 0]}}})
    assert result.error["exception_message"].startswith("CUDA out of memory\nThis error means you ran out of memory")
    assert unloaded == [True]
    calls.clear()
    r.run({"1": {"class_type": "TestConst", "inputs": {"value": 1}},
           "3": {"class_type": "TestShow", "inputs": {"value": ["1", 0]}}})
    assert calls == ["TestShow"]
