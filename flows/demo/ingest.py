"""``demo_ingest``: support tickets built from the shipped presidio-research messages (plus
the demo's own refund requests), one support-triage run per ticket and one document-review
run over the batch; the batch's summary (runs by status, PII findings by type and action,
approvals waiting, decisions by effect, cost by agent)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import yaml
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from agents.models import AgentTurn, Customer
from flows.demo.load import DATA
from flows.models import RUN_FINAL, Flow, Run, StepRun, StepStatus, TriggerKind
from flows.services import run_start
from governance.approval_port import approval_outcomes
from governance.models import AuditEvent, CostEntry
from governance.selectors import cost_breakdown, cost_totals

# Every REFUND_EVERY-th ticket (from the REFUND_OFFSET-th) is one of the demo's refund
# requests: a first batch of 20 holds four, one per threshold of the refund grant.
REFUND_EVERY = 5
REFUND_OFFSET = 2


def corpus_messages() -> list[dict[str, Any]]:
    """The shipped presidio-research records: ``[{"corpus_index", "full_text", "spans"}]``
    (``spans``: ``{"entity_type", "entity_value", "start_position", "end_position"}``)."""
    return json.loads((DATA / "messages.json").read_text(encoding="utf-8"))


def refund_requests() -> list[str]:
    return yaml.safe_load((DATA / "refund_requests.yaml").read_text(encoding="utf-8"))


def demo_tickets(limit: int, *, offset: int = 0) -> list[dict[str, Any]]:
    """``limit`` tickets from position ``offset``: ``{"ticket", "customer_id", "message",
    "source", "corpus_index"}``; customers are assigned in turn (C-1001, C-1002, ...).
    Raises ``ValueError`` past the end of the corpus."""
    corpus = corpus_messages()
    refunds = refund_requests()
    customers = [c["ref"] for c in yaml.safe_load((DATA / "customers.yaml").read_text())]
    tickets, next_corpus, next_refund = [], 0, 0
    position = 0
    while len(tickets) < offset + limit:
        if position % REFUND_EVERY == REFUND_OFFSET:
            message = refunds[next_refund % len(refunds)]
            source, corpus_index = "demo refund request", None
            next_refund += 1
        else:
            if next_corpus >= len(corpus):
                raise ValueError(f"the demo has {len(corpus)} corpus messages; ask for fewer")
            record = corpus[next_corpus]
            message, corpus_index = record["full_text"], record["corpus_index"]
            source = "presidio-research synth dev"
            next_corpus += 1
        tickets.append(
            {
                "ticket": position + 1,
                "customer_id": customers[position % len(customers)],
                "message": message,
                "source": source,
                "corpus_index": corpus_index,
            }
        )
        position += 1
    return tickets[offset:]


@dataclass
class Batch:
    """The runs one ``demo_ingest`` started: support-triage run ids and the
    document-review run id (``None`` when not started)."""

    triage_run_ids: list[int] = field(default_factory=list)
    review_run_id: int | None = None

    @property
    def run_ids(self) -> list[int]:
        return self.triage_run_ids + ([self.review_run_id] if self.review_run_id else [])


def ingest(
    *, project, user, tickets: list[dict[str, Any]], review: bool = True, on_start=None
) -> Batch:
    """Start one support-triage run per ticket and, with ``review``, one document-review
    run over the tickets' messages (each run in its own transaction: its first steps are
    queued as it commits). ``on_start(run)`` is called after each. Raises
    ``Flow.DoesNotExist`` when the demo is not loaded."""
    triage = Flow.objects.get(project=project, slug="support-triage")
    batch = Batch()
    for ticket in tickets:
        with transaction.atomic():
            run = run_start(flow=triage, input=ticket, user=user, trigger=TriggerKind.API)
        batch.triage_run_ids.append(run.pk)
        if on_start:
            on_start(run)
    if review and tickets:
        document_review = Flow.objects.get(project=project, slug="document-review")
        with transaction.atomic():
            run = run_start(
                flow=document_review,
                input={"documents": [t["message"] for t in tickets]},
                user=user,
                trigger=TriggerKind.API,
            )
        batch.review_run_id = run.pk
        if on_start:
            on_start(run)
    return batch


def parked_run_ids(run_ids: list[int]) -> set[int]:
    """Those of ``run_ids`` with a step waiting for approval (the run is parked: its other
    steps wait for that one)."""
    return set(
        StepRun.objects.filter(run_id__in=run_ids, status=StepStatus.WAITING_APPROVAL)
        .values_list("run_id", flat=True)
        .distinct()
    )


def settled_count(run_ids: list[int]) -> int:
    """How many of ``run_ids`` are final or parked for approval."""
    final = set(
        Run.objects.filter(pk__in=run_ids, status__in=RUN_FINAL).values_list("pk", flat=True)
    )
    return len(final | parked_run_ids(run_ids))


def pii_findings(project, messages: list[str]) -> dict[tuple[str, str], int]:
    """(entity type, action) -> findings in ``messages``, scanned as the intake agent's
    model call scans them (direction ``model_input``, the project's policy)."""
    from governance.pii import scan
    from governance.selectors import effective_policy

    policy = effective_policy(project_id=project.pk).document.pii_policy
    found: Counter[tuple[str, str]] = Counter()
    for message in messages:
        result = scan(message, "model_input", policy)
        for finding in result.findings:
            found[(finding.entity_type, finding.action)] += 1
    return dict(found)


def summary(project, batch: Batch, messages: list[str]) -> dict[str, list[tuple]]:
    """The batch's tables, each a list of rows (first row: the headers)."""
    ids = batch.run_ids
    parked = parked_run_ids(ids)
    runs = Counter(
        "parked (waiting for approval)" if pk in parked else status
        for pk, status in Run.objects.filter(pk__in=ids).values_list("pk", "status")
    )
    run_keys = [str(pk) for pk in ids]
    turn_ids = list(AgentTurn.objects.filter(run_id__in=run_keys).values_list("pk", flat=True))
    # By effect only: rule names are free text to the audit log's PII scan, which can
    # redact one ("grant.rule.2" read as a person's name by the small spaCy model).
    decisions = Counter(
        event.data.get("effect", "?")
        for event in AuditEvent.objects.filter(
            project=project, action="tool.decision", data__turn_id__in=turn_ids
        ).only("data")
    )
    waiting_ids = [
        request_id
        for ids_ in StepRun.objects.filter(
            run_id__in=ids, status=StepStatus.WAITING_APPROVAL
        ).values_list("approval_request_ids", flat=True)
        for request_id in ids_ or []
    ]
    try:
        outcomes = approval_outcomes(waiting_ids) if waiting_ids else {}
    except ImproperlyConfigured:
        outcomes = {}  # no reader registered: a step still waiting means its request is open
    pending = [i for i in waiting_ids if not (outcomes.get(i) and outcomes[i].final)]
    entries = CostEntry.objects.filter(project=project, run_id__in=run_keys)
    by_agent = cost_breakdown(entries, by="agent")
    total = cost_totals(entries).cost_usd
    findings = pii_findings(project, messages)
    return {
        "Runs by status": [("status", "runs")] + sorted(runs.items()),
        "PII findings by type and action (toward models)": [("entity type", "action", "findings")]
        + [(t, a, n) for (t, a), n in sorted(findings.items(), key=lambda kv: (-kv[1], kv[0]))],
        "Approvals waiting": [("pending approval requests",), (len(pending),)],
        "Decisions by effect": [("effect", "tool-call decisions")] + sorted(decisions.items()),
        "Cost by agent (USD)": [("agent", "model calls", "cost_usd")]
        + [(row["key"] or "-", row["entries"], f"{row['cost_usd']:.6f}") for row in by_agent]
        + [("total", sum(row["entries"] for row in by_agent), f"{Decimal(total):.6f}")],
    }


def format_table(title: str, rows: list[tuple]) -> str:
    """``rows`` (headers first) as a plain-text table under ``title``."""
    text = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in text if i < len(row)) for i in range(len(text[0]))]
    lines = [title, "-" * len(title)]
    for index, row in enumerate(text):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def customers_exist(project) -> bool:
    return Customer.objects.filter(project=project).exists()
