"""The demo's tables (``flows/demo``): a small knowledge base, customers, the refund
ledger and the email outbox, written by the demo's built-in tools (``agents.demo_tools``)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class KnowledgeArticle(models.Model):
    """A help article ``kb_search`` finds (shipped with the demo: ``flows/demo/data``)."""

    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="knowledge_articles"
    )
    slug = models.SlugField(max_length=80)
    title = models.CharField(max_length=200)
    body = models.TextField()
    category = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["project", "slug"]
        constraints = [models.UniqueConstraint(fields=["project", "slug"], name="kb_unique_slug")]

    def __str__(self) -> str:
        return self.title


class Customer(models.Model):
    """A demo customer: ``ref`` (``C-1001``) is what tickets and tools name."""

    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="customers"
    )
    ref = models.CharField(max_length=20)
    name = models.CharField(max_length=200)
    email = models.EmailField()
    plan = models.CharField(max_length=32, default="standard")

    class Meta:
        ordering = ["project", "ref"]
        constraints = [
            models.UniqueConstraint(fields=["project", "ref"], name="customer_unique_ref")
        ]

    def __str__(self) -> str:
        return self.ref


class RefundEntry(models.Model):
    """One refund ``issue_refund`` issued: ``amount_usd`` Decimal USD; unique by
    ``idempotency_key`` (the governed call's key), so a retried call refunds once."""

    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="refunds"
    )
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="refunds")
    amount_usd = models.DecimalField(max_digits=12, decimal_places=2)
    reason = models.CharField(max_length=300, blank=True)
    idempotency_key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"refund {self.amount_usd} USD to {self.customer}"


class OutboxEmail(models.Model):
    """An email ``send_email`` queued (the demo never sends mail): unique by
    ``idempotency_key``."""

    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="outbox"
    )
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="emails")
    to = models.EmailField()
    subject = models.CharField(max_length=200)
    body = models.TextField()
    idempotency_key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return self.subject
