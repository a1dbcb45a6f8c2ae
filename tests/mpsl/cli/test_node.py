"""`mpsl node`: what it needs before it starts, as one-line errors."""

from __future__ import annotations

from tests.mpsl.cli.conftest import write


def test_auto_plan_needs_the_shared_plan_file(cli, tmp_path):
    path = write(tmp_path, plan="auto")
    line = cli.error("node", "--role", "compute", "--topology", path, "--name", "server")
    assert line == (f"error: {path}: plan is auto: run `mpsl plan {path} --out plan.json` once "
                    f"and give every node --plan plan.json")


def test_a_plan_file_of_another_topology_is_refused(cli, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text('{"num_layers": 4, "cuts": [1, 2], "placement": ["owner", "a", "b"], '
                    '"micro_batches": [2, 2]}')
    line = cli.error("node", "--role", "compute", "--topology", write(tmp_path), "--name",
                     "server", "--plan", plan)
    assert line.startswith(f"error: {plan}: the plan places its parts on ['owner', 'a', 'b']")
