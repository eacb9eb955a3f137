"""Benchmark: the overhead governance adds to an agent turn, per governed call.

The same scripted-model turn (one response proposing 3 built-in tool calls, then a final
text: 2 model requests + 3 tool calls = 5 governed calls) run

- ``ungoverned``: the raw pydantic-ai agent (the scripted ``FunctionModel`` and the
  connector toolset executing the same built-in tools), nothing checked or written;
- ``governed, PII off``: ``run_agent_turn(pii=False)``: the turn row, run cap, decisions
  with counters, budget reservation/settle, cost ledger, breaker outcomes, audit events;
- ``governed, PII on``: the same with every prompt, argument and result scanned (Presidio).

Overhead per governed call = (governed turn - ungoverned p50) / 5, reported as p50 and
p99 over the iterations (``overhead_p50_ms``, ``overhead_p99_ms`` per configuration).

Also reported: the durable commits one governed turn makes (``commits_per_turn``) and its
round trips to the database (``round_trips_per_turn``: statements, BEGIN and COMMIT), the
latency of the cheapest durable write on the database (``durable_write``, see
``bench.common.durable_write_latency_ms``), and what the commits alone cost per call, as
built and at the design's minimum (``MIN_COMMITS_PER_TURN``): the floor under the
overhead whatever the code around them does.
The issue's target: p50 <= 3 ms and p99 <= 15 ms with PII off on PostgreSQL. Run with
``DATABASE_URL=postgres://.../bench_governed`` for PostgreSQL (a scratch database).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    commits_in,
    durable_write_latency_ms,
    governed_write_floor_ms,
    percentile,
    print_table,
    setup_django,
)

SCRIPT = {
    "responses": [
        {
            "tool_calls": [
                {"name": "echo", "arguments": {"text": "first"}},
                {"name": "echo", "arguments": {"text": "second"}},
                {"name": "echo", "arguments": {"text": "third"}},
            ]
        },
        {"text": "Three echoes done."},
    ]
}
GOVERNED_CALLS = 5
# Durable commits the design cannot do without in this turn: each model call's budget
# reservation (before the request) and settlement (after), each tool call's decision
# (before the tool runs); the tool outcomes and the turn's end can ride along with them.
MIN_COMMITS_PER_TURN = 2 * 2 + 3


def build():
    from agents.services import agent_create, model_endpoint_create, tool_create
    from controlplane.services import project_create
    from tests.factories import UserFactory

    user = UserFactory(username="bench")
    project = project_create(slug="bench", name="Bench", creator=user)
    model_endpoint_create(
        project=project,
        name="scripted",
        kind="scripted",
        default_model="scripted-1",
        price_overrides={"scripted-1": {"input_per_mtok": "1", "output_per_mtok": "2"}},
        script=SCRIPT,
    )
    tool_create(
        project=project,
        name="echo",
        kind="builtin",
        builtin_name="echo",
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
    )
    agent = agent_create(
        project=project,
        slug="bench",
        config={
            "model_endpoint": "scripted",
            "model_name": "scripted-1",
            "instructions": "Echo three times.",
            "grants": [
                {"tool": "echo", "rate_limit_calls": 10**9, "rate_limit_window_seconds": 60}
            ],
        },
        actor=user,
    )
    return agent.active_version


def ungoverned_runner(version):
    from asgiref.sync import async_to_sync
    from pydantic_ai import Agent

    from agents.config import parse_script
    from agents.runtime.scripted import scripted_model
    from agents.runtime.toolset import ConnectorToolset
    from agents.runtime.turn import granted_tools

    agent = Agent(
        scripted_model(script=parse_script(SCRIPT), model_name="scripted-1"),
        instructions=version.instructions,
        toolsets=[ConnectorToolset(tools=granted_tools(version))],
    )

    def run():
        result = async_to_sync(agent.run)("go")
        assert result.output == "Three echoes done."

    return run


def governed_runner(version, *, pii: bool):
    from agents.runtime import run_agent_turn

    def run():
        result = run_agent_turn(agent_version=version, input="go", pii=pii)
        assert result.status == "completed", result.reason

    return run


def turn_statements(version) -> tuple[int, int]:
    """Durable commits and round trips (statements incl. BEGIN / COMMIT / SAVEPOINT) of
    one governed turn (PII off), counted from the queries."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    run = governed_runner(version, pii=False)
    run()
    with CaptureQueriesContext(connection) as captured:
        run()
    return commits_in(captured.captured_queries), len(captured.captured_queries)


def timed(run, iterations: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        run()
    out = []
    for _ in range(iterations):
        started = time.perf_counter()
        run()
        out.append((time.perf_counter() - started) * 1000)
    return sorted(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--pii-iterations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    backend = setup_django()
    version = build()
    baseline = timed(ungoverned_runner(version), args.iterations, args.warmup)
    base_p50 = percentile(baseline, 0.5)
    result = {
        "backend": backend,
        "governed_calls_per_turn": GOVERNED_CALLS,
        "ungoverned": {
            "turn_p50_ms": round(base_p50, 3),
            "turn_p99_ms": round(percentile(baseline, 0.99), 3),
        },
    }
    result["commits_per_turn"], result["round_trips_per_turn"] = turn_statements(version)
    floor = durable_write_latency_ms()
    result["durable_write"] = floor
    # What the turn's commits alone cost per governed call, as built and at the minimum.
    result["commit_floor_per_call_p50_ms"] = round(
        result["commits_per_turn"] * floor["p50_ms"] / GOVERNED_CALLS, 3
    )
    result["min_commit_floor_per_call_p50_ms"] = round(
        MIN_COMMITS_PER_TURN * floor["p50_ms"] / GOVERNED_CALLS, 3
    )
    # The same minimum written by hand in raw SQL (PostgreSQL): a decision-like
    # transaction per required commit, no ORM, no Python logic.
    raw = governed_write_floor_ms()
    if raw:
        result["raw_sql_floor"] = raw
        result["raw_sql_floor_per_call_p50_ms"] = round(
            MIN_COMMITS_PER_TURN * raw["decision_p50_ms"] / GOVERNED_CALLS, 3
        )
    configurations = [("governed_pii_off", False, args.iterations)]
    configurations.append(("governed_pii_on", True, args.pii_iterations))
    for name, pii, iterations in configurations:
        times = timed(governed_runner(version, pii=pii), iterations, args.warmup)
        overhead = [(t - base_p50) / GOVERNED_CALLS for t in times]
        result[name] = {
            "turn_p50_ms": round(percentile(times, 0.5), 3),
            "turn_p99_ms": round(percentile(times, 0.99), 3),
            "overhead_p50_ms": round(percentile(overhead, 0.5), 3),
            "overhead_p99_ms": round(percentile(overhead, 0.99), 3),
            "iterations": iterations,
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    rows = [
        ("ungoverned turn p50 (ms)", f"{result['ungoverned']['turn_p50_ms']:.3f}"),
        ("durable write (commit) p50 (ms)", f"{floor['p50_ms']:.3f}"),
        ("commits per governed turn", str(result["commits_per_turn"])),
        ("round trips per governed turn", str(result["round_trips_per_turn"])),
        ("their cost per call p50 (ms)", f"{result['commit_floor_per_call_p50_ms']:.3f}"),
        (
            f"floor per call at {MIN_COMMITS_PER_TURN} commits (ms)",
            f"{result['min_commit_floor_per_call_p50_ms']:.3f}",
        ),
    ]
    if "raw_sql_floor" in result:
        rows += [
            ("raw-SQL decision txn p50 (ms)", f"{result['raw_sql_floor']['decision_p50_ms']:.3f}"),
            ("round trip p50 (ms)", f"{result['raw_sql_floor']['round_trip_p50_ms']:.3f}"),
            (
                f"raw-SQL floor per call at {MIN_COMMITS_PER_TURN} txns (ms)",
                f"{result['raw_sql_floor_per_call_p50_ms']:.3f}",
            ),
        ]
    for name, _, _ in configurations:
        data = result[name]
        rows += [
            (f"{name} turn p50 (ms)", f"{data['turn_p50_ms']:.3f}"),
            (f"{name} overhead/call p50 (ms)", f"{data['overhead_p50_ms']:.3f}"),
            (f"{name} overhead/call p99 (ms)", f"{data['overhead_p99_ms']:.3f}"),
        ]
    print_table(f"Governed call overhead ({backend}, {GOVERNED_CALLS} calls per turn)", rows)


if __name__ == "__main__":
    main()
