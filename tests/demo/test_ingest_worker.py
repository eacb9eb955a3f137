"""``demo_ingest --limit 20`` on a real Celery worker process: every message ends in a
finished or parked run; no SSN or card number of the corpus reaches a model, a log line, an
audit row or a stored output; refunds over $50 wait in the inbox; costs by agent add up to
the project total."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest
from django.core.management import call_command

from agents.models import AgentTurn, OutboxEmail, RefundEntry
from approvals.models import ApprovalRequest
from flows.demo import ingest as demo_ingest
from flows.models import Run, StepRun
from governance.models import AuditEvent, CostEntry
from governance.selectors import cost_breakdown, cost_totals
from tests.flows.conftest import Worker

from .conftest import load_demo

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
LIMIT = 20
BLOCKED_TYPES = ("US_SSN", "CREDIT_CARD")


@pytest.fixture
def recorded_worker(tmp_path, settings):
    """A worker whose scripted models record every request they receive."""
    queue = f"demo-{uuid.uuid4().hex[:8]}"
    settings.FLOWS_TASK_QUEUE = queue
    record = tmp_path / "model-requests.jsonl"
    record.touch()
    worker = Worker(queue, tmp_path / "worker.log", SCRIPTED_MODEL_RECORD_FILE=str(record))
    yield worker, record
    worker.stop()


def labelled_values(tickets) -> list[str]:
    corpus = {r["corpus_index"]: r for r in demo_ingest.corpus_messages()}
    return [
        span["entity_value"]
        for ticket in tickets
        if ticket["corpus_index"] is not None
        for span in corpus[ticket["corpus_index"]]["spans"]
        if span["entity_type"] in BLOCKED_TYPES
    ]


def stored_texts() -> dict[str, str]:
    """What the database holds that people, models or exports read (not run and step
    inputs, which keep the customer's message as it arrived)."""

    def dump(rows) -> str:
        return json.dumps(list(rows), default=str, ensure_ascii=False)

    return {
        "audit rows": dump(AuditEvent.objects.values_list("data", "object_repr")),
        "step outputs": dump(StepRun.objects.values_list("output", "error")),
        "run outputs": dump(Run.objects.values_list("output", "error")),
        "agent turns": dump(AgentTurn.objects.values_list("output", "error", "pending")),
        "approval requests": dump(ApprovalRequest.objects.values_list("summary", "payload")),
        "outbox": dump(OutboxEmail.objects.values_list("subject", "body")),
    }


def test_demo_ingest_of_20_messages_on_a_real_worker(demo_var, recorded_worker, caplog):
    worker, record = recorded_worker
    load_demo()
    out = io.StringIO()
    # DEBUG: Presidio's debug lines quote what it scans (controlplane.logging caps them).
    with caplog.at_level(logging.DEBUG):
        call_command("demo_ingest", "--limit", str(LIMIT), "--timeout", "600", stdout=out)
    output = out.getvalue()
    tickets = demo_ingest.demo_tickets(LIMIT)

    # Every message: a finished or parked run (and the document review finished).
    triage = Run.objects.filter(flow__slug="support-triage")
    assert triage.count() == LIMIT
    parked = demo_ingest.parked_run_ids(list(triage.values_list("pk", flat=True)))
    unsettled = [r.pk for r in triage if not r.is_final and r.pk not in parked]
    assert not unsettled, worker.output()
    review = Run.objects.get(flow__slug="document-review")
    assert review.status == "succeeded", review.error
    report = review.output["report"]
    assert report["documents"] == LIMIT
    assert report["by_type"]["US_SSN"]["action"] == "block"
    # Messages holding a blocked value were stopped at intake, before any model.
    for run in triage:
        if any(v in run.input["message"] for v in labelled_values([run.input])):
            assert run.status == "failed" and "pii.model_input" in run.error

    # No SSN or card number of the corpus anywhere a model, a log or a reader sees.
    values = labelled_values(tickets)
    assert len(values) >= 3  # two SSNs and a card number in the first 20
    requests = record.read_text(encoding="utf-8")
    assert requests.count("\n") > LIMIT  # the models were called
    places = {
        "provider requests": requests,
        "worker log": worker.output() + worker.log_path.read_text(),
        "command output": output,
        "test process logs": caplog.text,
        **stored_texts(),
    }
    leaks = {place: [v for v in values if v in text] for place, text in places.items()}
    assert not any(leaks.values()), leaks

    # Refunds: $42.50 issued; $120 and $850 wait for approval; $7200 denied.
    refund_runs = {
        r.input["message"]: r for r in triage if r.input["source"] == "demo refund request"
    }
    assert len(refund_runs) == 4
    amounts = {m.split("$")[1].split()[0].rstrip(".,"): r for m, r in refund_runs.items()}
    assert sorted(amounts) == ["120.00", "42.50", "7200", "850.00"]
    assert [str(e.amount_usd) for e in RefundEntry.objects.all()] == ["42.50"]
    for amount in ("120.00", "850.00"):
        run = amounts[amount]
        step = StepRun.objects.get(run=run, step_id="refunds")
        assert step.status == "waiting_approval"
        [request_id] = step.approval_request_ids
        assert ApprovalRequest.objects.get(pk=request_id).status == "pending"
    assert ApprovalRequest.objects.filter(status="pending").count() == 2
    assert amounts["7200"].status == "succeeded"
    assert "Approvals waiting" in output and "Cost by agent" in output

    # Costs by agent add up to the project total.
    entries = CostEntry.objects.filter(project=review.project)
    by_agent = cost_breakdown(entries, by="agent")
    total = cost_totals(entries).cost_usd
    assert total > 0
    assert sum(row["cost_usd"] for row in by_agent) == total
    assert {row["key"] for row in by_agent} == {
        "intake",
        "researcher",
        "refunds",
        "drafter",
        "reviewer",
    }
    # The small soft budget alerted.
    assert AuditEvent.objects.filter(action="budget.alert").exists()
