"""``manage.py demo_ingest [--limit N]``: one support-triage run per demo ticket (the shipped
presidio-research messages and the demo's refund requests) and one document-review run over
the batch; waits for the worker with a progress bar, then prints the batch's summary."""

from __future__ import annotations

import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from controlplane.context import ACTOR_SYSTEM, Actor, acting_as
from controlplane.models import Project
from flows.demo import ingest as demo
from flows.models import Flow, Run


class Command(BaseCommand):
    help = (
        "Start one support-triage run per demo message and one document-review run over "
        "the batch; wait for the worker (progress bar) and print a summary: runs by status, "
        "PII findings by type and action, approvals waiting, decisions by effect, cost by agent."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--limit", type=int, default=20, help="tickets to ingest (default 20)")
        parser.add_argument(
            "--offset", type=int, default=0, help="start at this ticket (default 0)"
        )
        parser.add_argument(
            "--no-wait", action="store_true", help="start the runs and return (no summary wait)"
        )
        parser.add_argument(
            "--timeout", type=float, default=600.0, help="seconds to wait for the worker"
        )
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="do nothing when the demo project already has runs (make run uses it)",
        )
        parser.add_argument("--no-review", action="store_true", help="skip the document review")

    def handle(self, *args, limit, offset, no_wait, timeout, if_empty, no_review, **options):
        if limit < 1:
            raise CommandError("--limit must be at least 1")
        project = Project.objects.filter(slug="demo").first()
        if project is None or not Flow.objects.filter(project=project).exists():
            raise CommandError("The demo is not loaded: run python manage.py demo_load first.")
        if if_empty and Run.objects.filter(project=project).exists():
            self.stdout.write("The demo project already has runs: nothing ingested.")
            return
        try:
            tickets = demo.demo_tickets(limit, offset=offset)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        user = get_user_model().objects.filter(username="admin").first()
        with (
            acting_as(Actor(kind=ACTOR_SYSTEM, name="system:demo_ingest")),
            tqdm(total=len(tickets), desc="starting runs", unit="run", file=self.stdout) as bar,
        ):
            batch = demo.ingest(
                project=project,
                user=user,
                tickets=tickets,
                review=not no_review,
                on_start=lambda run: bar.update(1) if run.flow.slug == "support-triage" else None,
            )
        self.stdout.write(
            f"Started {len(batch.triage_run_ids)} support-triage run(s)"
            + (f" and document-review run {batch.review_run_id}" if batch.review_run_id else "")
            + "."
        )
        if no_wait:
            self.stdout.write("Not waiting: the worker runs them (see the dashboard).")
            return
        self._wait(batch, timeout)
        messages = [t["message"] for t in tickets]
        for title, rows in demo.summary(project, batch, messages).items():
            self.stdout.write("")
            self.stdout.write(demo.format_table(title, rows))

    def _wait(self, batch: demo.Batch, timeout: float) -> None:
        ids = batch.run_ids
        deadline = time.monotonic() + timeout
        with tqdm(
            total=len(ids), desc="runs finished or parked", unit="run", file=self.stdout
        ) as bar:
            done = 0
            while done < len(ids):
                now_done = demo.settled_count(ids)
                bar.update(now_done - done)
                done = now_done
                if done >= len(ids):
                    break
                if time.monotonic() > deadline:
                    self.stdout.write(
                        self.style.WARNING(
                            f"{len(ids) - done} run(s) still going after {timeout:.0f} s: is a "
                            "worker running? (make run starts one; or: celery -A controlplane worker)"
                        )
                    )
                    break
                time.sleep(0.5)
