"""``manage.py audit_verify``: walk the audit chain; exit 1 naming the first broken sequence."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from governance.selectors import audit_chain_verify


class Command(BaseCommand):
    help = "Verify the audit log hash chain. Exits non-zero naming the first broken sequence."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--chunk-size", type=int, default=2000, help="rows read per batch")
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="processes checking ranges of the chain in parallel (PostgreSQL)",
        )

    def handle(self, *args, chunk_size: int, workers: int = 1, **options) -> None:
        if chunk_size <= 0:
            raise CommandError("--chunk-size must be a positive integer")
        if workers <= 0:
            raise CommandError("--workers must be a positive integer")
        result = audit_chain_verify(chunk_size=chunk_size, workers=workers)
        if not result.ok:
            raise CommandError(
                f"audit chain broken at sequence {result.first_broken_sequence}: {result.reason} "
                f"({result.checked} events read)"
            )
        self.stdout.write(
            self.style.SUCCESS(f"audit chain OK: {result.checked} events, head {result.head_hash}")
        )
