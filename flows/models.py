"""Flows data: flows, immutable flow versions, runs, step runs and their trace spans."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from agents.models import UniqueFieldErrorsMixin
from controlplane.immutable import ImmutableModel
from controlplane.models import slug_validator


class Flow(UniqueFieldErrorsMixin, models.Model):
    """A named flow in a project. Its definition lives in immutable versions; exactly one
    version is active (``active_version``) and new runs start on it."""

    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="flows"
    )
    slug = models.SlugField(max_length=50, validators=[slug_validator])
    name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    active_version = models.ForeignKey(
        "FlowVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "slug"]
        constraints = [models.UniqueConstraint(fields=["project", "slug"], name="flow_unique_slug")]

    def __str__(self) -> str:
        return self.slug


class SourceFormat(models.TextChoices):
    YAML = "yaml", "YAML"
    JSON = "json", "JSON"


class FlowVersion(ImmutableModel):
    """One immutable definition of a flow. ``definition`` is the validated, normalized
    ``flows.definition.FlowDefinition`` as JSON; ``source`` the text as written (YAML or
    JSON, ``source_format``). ``number`` counts from 1 per flow. Create with
    ``flows.services.flow_version_create``; never edited afterwards."""

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    source = models.TextField(blank=True)
    source_format = models.CharField(
        max_length=8, choices=SourceFormat.choices, default=SourceFormat.YAML
    )
    change_note = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["flow", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["flow", "number"], name="flow_version_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.flow.slug}@v{self.number}"


class RunStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    WAITING_APPROVAL = "waiting_approval", "Waiting for approval"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


RUN_FINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})


class TriggerKind(models.TextChoices):
    MANUAL = "manual", "Dashboard"
    API = "api", "REST API"
    WEBHOOK = "webhook", "Webhook"
    SCHEDULE = "schedule", "Schedule"
    RETRY = "retry", "Retry"


class Run(models.Model):
    """One execution of a flow version. ``trace_id`` is the W3C trace id (32 lowercase hex)
    every span of the run belongs to. ``cost_usd``: Decimal USD, the sum of its step runs'
    costs. ``cancel_requested``: set by ``run_cancel``; pending steps never start and
    running ones stop at their next call boundary."""

    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="runs"
    )
    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="runs")
    flow_version = models.ForeignKey(FlowVersion, on_delete=models.PROTECT, related_name="runs")
    status = models.CharField(
        max_length=20, choices=RunStatus.choices, default=RunStatus.PENDING, db_index=True
    )
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    trace_id = models.CharField(max_length=32, unique=True)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    trigger = models.CharField(
        max_length=16, choices=TriggerKind.choices, default=TriggerKind.MANUAL
    )
    retry_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="retries"
    )
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["project", "status"], name="run_project_status")]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.flow_version}"

    @property
    def is_final(self) -> bool:
        return self.status in RUN_FINAL


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    WAITING_APPROVAL = "waiting_approval", "Waiting for approval"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    SKIPPED = "skipped", "Skipped"


STEP_FINAL = frozenset(
    {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.SKIPPED}
)


class StepRun(models.Model):
    """One step of a run (or one item of a map step: ``parent`` is the map's step run and
    ``item_index`` the item's 0-based position; -1 for non-item steps).

    ``step_id`` names the step in the definition (compensation steps run with
    ``compensates`` naming the step they undo). ``attempt`` counts from 1; ``attempts`` is
    the history ``[{"attempt", "started_at", "finished_at", "status", "error",
    "error_kind"}]`` (ISO 8601 UTC) and ``next_attempt_at`` when the next one is due.
    ``lease_owner`` / ``lease_expires_at``: the worker holding a running step and until
    when (``"queued"`` while its task waits in the broker); an expired lease is requeued by
    the sweeper. ``queued_at``: when its task was last queued (dispatch latency). ``agent_version`` and ``turn_id``:
    the agent version and ``agents.AgentTurn`` an agent step used; ``approval_request_ids``
    the requests it waits on and ``approval_outcomes`` the decisions noted so far (request id ->
    ``{"status", "arguments", "comment"}``). ``cost_usd``: Decimal USD.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    step_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=16)
    parent = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="children"
    )
    item_index = models.IntegerField(default=-1)
    compensates = models.CharField(max_length=64, blank=True)
    status = models.CharField(
        max_length=20, choices=StepStatus.choices, default=StepStatus.PENDING, db_index=True
    )
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    error_kind = models.CharField(max_length=64, blank=True)
    attempt = models.PositiveIntegerField(default=0)
    attempts = models.JSONField(default=list, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    agent_version = models.ForeignKey(
        "agents.AgentVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    turn_id = models.BigIntegerField(null=True, blank=True)
    approval_request_ids = models.JSONField(default=list, blank=True)
    approval_outcomes = models.JSONField(default=dict, blank=True)
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    span_id = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["run", "created_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "step_id", "item_index"], name="step_run_unique_item"
            )
        ]

    def __str__(self) -> str:
        suffix = f"[{self.item_index}]" if self.item_index >= 0 else ""
        return f"{self.step_id}{suffix} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in STEP_FINAL


class SpanKind(models.TextChoices):
    RUN = "run", "Run"
    STEP = "step", "Step"
    MODEL = "model", "Model call"
    TOOL = "tool", "Tool call"
    APPROVAL = "approval", "Approval"


class Span(models.Model):
    """One timed operation of a run's trace: the run itself, a step run, a model call, a
    tool call or an approval wait. ``span_id`` is 16 lowercase hex; ``parent_span_id`` the
    enclosing span ("" for the run's root span). ``attributes`` are OpenTelemetry-style
    flat key/values. ``exported_at`` is set once sent to an OTLP collector."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="spans")
    step_run = models.ForeignKey(
        StepRun, on_delete=models.CASCADE, null=True, blank=True, related_name="spans"
    )
    trace_id = models.CharField(max_length=32)
    span_id = models.CharField(max_length=16)
    parent_span_id = models.CharField(max_length=16, blank=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=SpanKind.choices)
    start_time = models.DateTimeField()
    end_time = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, default="ok")
    attributes = models.JSONField(default=dict, blank=True)
    exported_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "start_time", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["trace_id", "span_id"], name="span_unique_id")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


class FlowWebhook(models.Model):
    """The inbound webhook of a flow: ``POST /hooks/flows/<flow id>/<token>`` (or the token
    in the ``X-Flow-Token`` header) starts a run whose input is the JSON body. Only the
    SHA-256 ``digest`` of the token is stored (and its ``prefix``, to tell tokens apart);
    the token itself is shown once, when it is made. Rotating replaces the digest."""

    flow = models.OneToOneField(Flow, on_delete=models.CASCADE, related_name="webhook")
    prefix = models.CharField(max_length=16)
    digest = models.CharField(max_length=64, unique=True)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    rotated_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"webhook of {self.flow.slug} ({self.prefix}…)"


class ScheduleKind(models.TextChoices):
    CRON = "cron", "Cron"
    INTERVAL = "interval", "Interval"


class FlowSchedule(models.Model):
    """Start a run of ``flow`` on a timer with ``input``: a 5-field ``cron`` expression (UTC)
    or every ``interval_seconds``. Celery beat (django-celery-beat's database scheduler)
    fires ``periodic_task``, which ``flows.services`` keeps in step with this row; a
    disabled schedule starts nothing."""

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=8, choices=ScheduleKind.choices)
    cron = models.CharField(max_length=100, blank=True)
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    input = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_run = models.ForeignKey(
        Run, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["flow", "name"]
        constraints = [
            models.UniqueConstraint(fields=["flow", "name"], name="flow_schedule_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.flow.slug}: {self.name}"

    @property
    def every(self) -> str:
        """The timer as text: ``cron 0 * * * *`` or ``every 300 s``."""
        if self.kind == ScheduleKind.CRON:
            return f"cron {self.cron}"
        return f"every {self.interval_seconds} s"
