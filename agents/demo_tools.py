"""The demo's built-in tools, with real effects on the demo tables (``agents.demo_models``):
``kb_search``, ``customer_lookup``, ``issue_refund`` (the refund ledger, idempotent by the
call's key), ``send_email`` (the outbox, only to the customer's address on file),
``pii_scan`` and ``pii_report`` (the document-review flow)."""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal, InvalidOperation

from agents.builtins import BuiltinCall, builtin_tool

CUSTOMER_REF = {"type": "string", "pattern": "^C-[0-9]{4}$"}
_WORD_RE = re.compile(r"[a-z0-9]{3,}")
_STOPWORDS = frozenset(
    [
        "the",
        "and",
        "for",
        "you",
        "your",
        "with",
        "this",
        "that",
        "have",
        "has",
        "are",
        "was",
        "can",
        "how",
        "what",
        "please",
        "about",
        "from",
        "question",
        "customer",
        "writes",
    ]
)


class DemoToolError(Exception):
    """The demo tool refuses the call; the message says why (no customer data in it)."""


def _customer(call: BuiltinCall, ref: str):
    from agents.demo_models import Customer

    customer = Customer.objects.filter(project_id=call.project_id, ref=ref).first()
    if customer is None:
        raise DemoToolError(f"no customer {ref}")
    return customer


def _stem(word: str) -> str:
    # A light suffix strip, so "charged", "charges" and "charge" meet at "charg".
    for suffix in ("ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def _terms(text: str) -> list[str]:
    return [_stem(w) for w in _WORD_RE.findall(text.lower()) if w not in _STOPWORDS]


@builtin_tool(
    name="kb_search",
    description="Search the help-centre knowledge base; returns the best articles.",
    input_schema={
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 500},
            "limit": {"type": "integer", "minimum": 1, "maximum": 10},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    takes_call=True,
)
def kb_search(*, query: str, limit: int = 3, call: BuiltinCall) -> dict:
    """Rank the project's articles by how many of the query's words (3+ letters, stop
    words dropped, light suffix stripping) occur in the title (x3), the category (x2) and the body: ``{"articles":
    [{"slug", "title", "score", "snippet"}]}``, best first, at most ``limit``."""
    from agents.demo_models import KnowledgeArticle

    terms = set(_terms(query))
    scored = []
    for article in KnowledgeArticle.objects.filter(project_id=call.project_id):
        title, body = set(_terms(article.title)), set(_terms(article.body))
        score = 3 * len(terms & title) + 2 * (_stem(article.category) in terms) + len(terms & body)
        if score:
            scored.append((score, article.slug, article))
    scored.sort(key=lambda row: (-row[0], row[1]))
    return {
        "articles": [
            {"slug": a.slug, "title": a.title, "score": s, "snippet": a.body[:200]}
            for s, _, a in scored[:limit]
        ]
    }


@builtin_tool(
    name="customer_lookup",
    description="Look a customer up by reference (C-1234): name, email, plan, refunds so far.",
    input_schema={
        "type": "object",
        "properties": {"customer_id": CUSTOMER_REF},
        "required": ["customer_id"],
        "additionalProperties": False,
    },
    takes_call=True,
)
def customer_lookup(*, customer_id: str, call: BuiltinCall) -> dict:
    customer = _customer(call, customer_id)
    refunded = sum((r.amount_usd for r in customer.refunds.all()), Decimal(0))
    return {
        "customer_id": customer.ref,
        "name": customer.name,
        "email": customer.email,
        "plan": customer.plan,
        "refunded_usd": str(refunded),
    }


@builtin_tool(
    name="issue_refund",
    description="Refund a customer (USD, 2 decimals). Financial: governed by amount.",
    input_schema={
        "type": "object",
        "properties": {
            "customer_id": CUSTOMER_REF,
            "amount_usd": {"type": "string", "pattern": "^[0-9]{1,7}(\\.[0-9]{1,2})?$"},
            "reason": {"type": "string", "maxLength": 300},
        },
        "required": ["customer_id", "amount_usd"],
        "additionalProperties": False,
    },
    takes_call=True,
)
def issue_refund(*, customer_id: str, amount_usd: str, reason: str = "", call: BuiltinCall) -> dict:
    """Write one ``RefundEntry`` per idempotency key: the same key again returns the first
    refund with ``"duplicate": true`` and refunds nothing more. Raises ``DemoToolError``
    without a key, for an unknown customer or a non-positive amount."""
    from agents.demo_models import RefundEntry

    if not call.idempotency_key:
        raise DemoToolError("issue_refund needs an idempotency key")
    try:
        amount = Decimal(amount_usd)
    except InvalidOperation as exc:
        raise DemoToolError("amount_usd is not a decimal") from exc
    if amount <= 0:
        raise DemoToolError("amount_usd must be positive")
    customer = _customer(call, customer_id)
    entry, created = RefundEntry.objects.get_or_create(
        idempotency_key=call.idempotency_key,
        defaults={
            "project_id": call.project_id,
            "customer": customer,
            "amount_usd": amount,
            "reason": reason[:300],
        },
    )
    return {
        "refund_id": entry.pk,
        "customer_id": customer.ref,
        "amount_usd": str(entry.amount_usd),
        "status": "issued",
        "duplicate": not created,
    }


@builtin_tool(
    name="send_email",
    description="Queue an email to a customer (the outbox); only to the address on file.",
    input_schema={
        "type": "object",
        "properties": {
            "customer_id": CUSTOMER_REF,
            "subject": {"type": "string", "minLength": 1, "maxLength": 200},
            "body": {"type": "string", "minLength": 1, "maxLength": 20000},
            "to": {"type": "string", "maxLength": 254},
        },
        "required": ["customer_id", "subject", "body"],
        "additionalProperties": False,
    },
    takes_call=True,
)
def send_email(
    *, customer_id: str, subject: str, body: str, to: str = "", call: BuiltinCall
) -> dict:
    """Write one ``OutboxEmail`` to the customer's address on file (one per idempotency
    key). ``to``, when given, must be that address: any other is refused
    (``DemoToolError``), so a model cannot mail a third party."""
    from agents.demo_models import OutboxEmail

    customer = _customer(call, customer_id)
    if to and to.strip().lower() != customer.email.lower():
        raise DemoToolError("send_email writes only to the customer's address on file")
    if not call.idempotency_key:
        raise DemoToolError("send_email needs an idempotency key")
    email, created = OutboxEmail.objects.get_or_create(
        idempotency_key=call.idempotency_key,
        defaults={
            "project_id": call.project_id,
            "customer": customer,
            "to": customer.email,
            "subject": subject,
            "body": body,
        },
    )
    return {"email_id": email.pk, "queued": True, "duplicate": not created}


# Every Presidio entity type, redacted: pii_scan reports what it finds, never the values.
def _scan_everything_policy():
    from governance.pii.rules import PRESIDIO_ENTITY_TYPES, SECRET_ENTITY_TYPES, PiiPolicy

    types = [t for t in PRESIDIO_ENTITY_TYPES if t != "UK_NHS"] + list(SECRET_ENTITY_TYPES)
    return PiiPolicy.model_validate({"tool_output": {t: {"action": "redact"} for t in types}})


@builtin_tool(
    name="pii_scan",
    description="Scan one document for PII: the entity types found and the redacted text.",
    input_schema={
        "type": "object",
        "properties": {"text": {"type": "string", "maxLength": 100000}},
        "required": ["text"],
        "additionalProperties": False,
    },
)
def pii_scan(*, text: str) -> dict:
    """``{"entities": {type: count}, "redacted": text with every finding as <TYPE>}``.
    Raises ``DemoToolError`` when the scan fails (never returns the text unscanned)."""
    from governance.pii import scan

    result = scan(text, "tool_output", _scan_everything_policy())
    if result.error or result.text_out is None:
        raise DemoToolError("the PII scan failed")
    return {
        "entities": dict(Counter(f.entity_type for f in result.findings)),
        "redacted": result.text_out,
    }


@builtin_tool(
    name="pii_report",
    description="Aggregate pii_scan results: documents with PII, counts by type and the "
    "action the project policy takes toward models.",
    input_schema={
        "type": "object",
        "properties": {"scans": {"type": "array", "items": {"type": "object"}}},
        "required": ["scans"],
        "additionalProperties": False,
    },
    takes_call=True,
)
def pii_report(*, scans: list, call: BuiltinCall) -> dict:
    """``{"documents", "with_pii", "blocked_toward_models", "by_type": {type: {"count",
    "documents", "action"}}}``; ``action`` is what the project's policy does with the type
    in ``model_input`` (``none`` when it has no rule)."""
    from governance.selectors import effective_policy

    rules = effective_policy(project_id=call.project_id).document.pii_policy.rules_for(
        "model_input"
    )
    counts: Counter[str] = Counter()
    documents: Counter[str] = Counter()
    with_pii = blocked = 0
    for entry in scans:
        entities = entry.get("entities") or {} if isinstance(entry, dict) else {}
        if entities:
            with_pii += 1
        if any(getattr(rules.get(t), "action", "") == "block" for t in entities):
            blocked += 1
        for entity_type, count in entities.items():
            counts[entity_type] += int(count)
            documents[entity_type] += 1
    return {
        "documents": len(scans),
        "with_pii": with_pii,
        "blocked_toward_models": blocked,
        "by_type": {
            t: {
                "count": counts[t],
                "documents": documents[t],
                "action": rules[t].action if t in rules else "none",
            }
            for t in sorted(counts)
        },
    }
