"""The web editor in a real browser against a stand-in API (see conftest.FakeServer)."""

def test_page_loads_the_default_workflow_without_console_errors(editor):
    assert sorted(editor.node_ids()) == [3, 4, 5, 6, 7, 8, 9]
    assert editor.js("() => app.graph.links.size") == 9
    editor.screenshot("editor-default-workflow.png")
    assert editor.console_errors == []
