"""Benchmark: a policy replay over recorded turns (``agents.replay``).

Records ``--turns`` governed turns of the seeded agent (``tests.seed``: each turn makes 7
tool decisions and 5 model calls, with PII scanning), then replays the range under a
stricter policy draft (tool calls and model calls, Presidio on both sides) and a grant
set (tool calls only), timing each. Reports calls replayed per second
(``policy_calls_per_s``, ``grants_calls_per_s``) and the wall time. Run with
``DATABASE_URL=postgres://.../bench_replay`` for PostgreSQL (a scratch database).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, setup_django  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    backend = setup_django()

    from django.utils import timezone

    from agents.replay import replay, replay_draft_validate
    from agents.runtime import run_agent_turn
    from controlplane.services import project_create
    from tests.factories import UserFactory
    from tests.seed import GRANTS, seed_registry

    user = UserFactory(username="bench")
    project = project_create(slug="bench", name="Bench", creator=user)
    agent = seed_registry(project, user)
    agent.refresh_from_db()
    started = timezone.now() - timedelta(seconds=1)
    for index in range(args.turns):
        run_agent_turn(
            agent_version=agent.active_version, input="Do the things", run_id=f"run-{index}"
        )
    ends = timezone.now() + timedelta(seconds=1)

    results = {"backend": backend, "turns": args.turns}
    drafts = {
        "policy": ("default", {"document": "caps:\n  max_tool_calls_per_run: 1\n"}),
        "grants": ("helper", {"grants": [g for g in GRANTS if g["tool"] != "ping"]}),
    }
    rows = [("turns recorded", str(args.turns))]
    for kind, (target, draft) in drafts.items():
        parsed = replay_draft_validate(project=project, kind=kind, target=target, draft=draft)
        t0 = time.perf_counter()
        report = replay(project=project, draft=parsed, starts_at=started, ends_at=ends)
        seconds = time.perf_counter() - t0
        calls = report.tool_calls + report.model_calls
        results[f"{kind}_calls"] = calls
        results[f"{kind}_s"] = round(seconds, 3)
        results[f"{kind}_calls_per_s"] = round(calls / seconds, 1)
        rows += [
            (f"{kind}: calls replayed", str(calls)),
            (f"{kind}: changed calls", str(report.changed_calls)),
            (f"{kind}: seconds", f"{seconds:.2f}"),
            (f"{kind}: calls per second", f"{calls / seconds:.1f}"),
        ]
    if args.json:
        print(json.dumps(results))
    else:
        print_table(f"Policy replay ({backend})", rows)


if __name__ == "__main__":
    main()
