"""The demo's built-in tools against their tables (called through ``tool_invoke``, as the
governed path calls them)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from agents.connectors import tool_invoke
from agents.models import OutboxEmail, RefundEntry, Tool

pytestmark = pytest.mark.django_db


def invoke(project, name, arguments, key="key-1"):
    tool = Tool.objects.get(project=project, name=name)
    return tool_invoke(tool=tool, arguments=arguments, idempotency_key=key)


def test_issue_refund_writes_one_ledger_row_per_idempotency_key(demo):
    arguments = {"customer_id": "C-1001", "amount_usd": "42.50", "reason": "duplicate"}
    first = invoke(demo, "issue_refund", arguments)
    again = invoke(demo, "issue_refund", arguments)
    other = invoke(demo, "issue_refund", arguments, key="key-2")
    assert first.ok and first.output["duplicate"] is False
    assert again.output == {**first.output, "duplicate": True}
    assert other.output["refund_id"] != first.output["refund_id"]
    assert RefundEntry.objects.count() == 2
    assert str(RefundEntry.objects.get(idempotency_key="key-1").amount_usd) == "42.50"


def test_issue_refund_refuses_an_unknown_customer_and_a_zero_amount(demo):
    assert not invoke(demo, "issue_refund", {"customer_id": "C-9999", "amount_usd": "5"}).ok
    assert not invoke(demo, "issue_refund", {"customer_id": "C-1001", "amount_usd": "0"}).ok
    assert RefundEntry.objects.count() == 0


def test_send_email_goes_to_the_address_on_file_only(demo):
    sent = invoke(demo, "send_email", {"customer_id": "C-1002", "subject": "Re", "body": "Hi"})
    assert sent.ok
    assert OutboxEmail.objects.get().to == "jonas.weber@example.org"
    refused = invoke(
        demo,
        "send_email",
        {"customer_id": "C-1002", "subject": "Re", "body": "Hi", "to": "x@elsewhere.test"},
        key="key-2",
    )
    assert not refused.ok and "address on file" in refused.error
    assert OutboxEmail.objects.count() == 1


def test_kb_search_ranks_the_matching_articles_first(demo):
    result = invoke(demo, "kb_search", {"query": "billing refund for a duplicate charge"})
    slugs = [a["slug"] for a in result.output["articles"]]
    assert result.ok and set(slugs[:2]) == {"refund-policy", "duplicate-charge"}
    assert len(slugs) == 3


def test_pii_scan_reports_types_without_values_and_the_report_aggregates(demo):
    scan = invoke(demo, "pii_scan", {"text": "His social security number is 853-37-1694"})
    assert scan.ok and scan.output["entities"] == {"US_SSN": 1}
    assert "853-37-1694" not in str(scan.output)
    empty = invoke(demo, "pii_scan", {"text": "What are my options?"}).output
    report = invoke(demo, "pii_report", {"scans": [scan.output, empty]}).output
    assert report["documents"] == 2 and report["with_pii"] == 1
    assert report["blocked_toward_models"] == 1
    assert report["by_type"]["US_SSN"] == {"count": 1, "documents": 1, "action": "block"}


def test_the_outbox_page_shows_queued_emails_and_refunds(demo, client, django_user_model):
    invoke(demo, "send_email", {"customer_id": "C-1003", "subject": "Re: billing", "body": "Hi"})
    invoke(demo, "issue_refund", {"customer_id": "C-1003", "amount_usd": "19.99"}, key="key-refund")
    client.force_login(django_user_model.objects.get(username="admin"))
    response = client.get(reverse("demo-outbox"))
    text = response.content.decode()
    assert response.status_code == 200
    assert "Re: billing" in text and "aiko.tanaka@example.net" in text and "19.99" in text


def test_the_outbox_page_needs_a_signed_in_member(demo, client):
    # Project pages show the session's current project, so only sign-in is checked here.
    response = client.get(reverse("demo-outbox"))
    assert response.status_code == 302 and "/login/" in response["Location"]
