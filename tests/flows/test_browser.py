"""End to end in headless Chromium with a real Celery worker process: sign in, open a
flow (its DAG drawn), start a run from the dashboard, watch the run page turn from
running to succeeded without a reload (htmx polling), screenshot it.

The first step calls an HTTP tool that holds its answer until the test releases it, so
the page is seen running before it is seen succeeded."""

from __future__ import annotations

import re

import pytest

from flows.models import Run
from flows.services import flow_create

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

HELD = """
description: Hold, then echo.
steps:
  - id: hold
    kind: tool
    tool: hold-after
    agent: operator
    arguments: {topic: "{{ input.topic }}"}
  - id: done
    kind: tool
    tool: echo
    agent: operator
    depends_on: [hold]
    arguments: {text: "done {{ input.topic }}"}
"""


def test_start_a_run_and_watch_it_succeed_live(
    browser, project, admin_user, world, tool_server, worker
):
    flow_create(project=project, slug="held", source=HELD, actor=admin_user)
    page, base = browser.page, browser.base
    browser.sign_in("/flows/", username="alice")

    page.get_by_role("link", name="held").click()
    page.wait_for_url(f"{base}/flows/held/")
    assert page.locator('svg g.dag-node[data-step="hold"]').count() == 1
    assert page.locator('svg path.dag-edge[data-source="hold"][data-target="done"]').count() == 1
    # Inline validation: an error appears by path, the text stays as typed.
    editor = page.get_by_label("Definition", exact=True)
    editor.fill(HELD.replace("depends_on: [hold]", "depends_on: [nowhere]"))
    page.locator('#definition-errors li[data-path="definition.steps.1.depends_on.0"]').wait_for()
    assert "nowhere" in editor.input_value()
    editor.fill(HELD)
    page.get_by_text("The definition is valid.").wait_for()
    browser.screenshot("flow-page")

    page.get_by_label("Run input (JSON object)").fill('{"topic": "owls"}')
    page.get_by_role("button", name="Start run").click()
    page.wait_for_url(re.compile(rf"{re.escape(base)}/runs/\d+/$"))
    run = Run.objects.get()
    assert (run.trigger, run.input, run.started_by_id) == (
        "manual",
        {"topic": "owls"},
        admin_user.pk,
    )

    # The worker holds the first step; the page shows it running.
    page.locator('#steps tr[data-step="hold"][data-status="running"]').wait_for(timeout=60_000)
    assert page.locator("#run-status").inner_text() == "running"
    page.evaluate("window.__sameDocument = true")

    tool_server.release()
    page.locator("#run-status.status-succeeded").wait_for(timeout=60_000)
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    assert page.locator('#steps tr[data-step="done"]').get_attribute("data-status") == "succeeded"
    assert (
        page.locator('svg g.dag-node[data-step="done"]').get_attribute("data-status") == "succeeded"
    )
    assert page.locator(".waterfall-row").count() >= 3  # the run and its two steps at least
    assert "done owls" in page.locator("body").inner_text()
    # Final: the live part no longer polls.
    assert page.locator("#run-live").get_attribute("hx-trigger") is None
    browser.screenshot("flow-run")

    run.refresh_from_db()
    assert run.status == "succeeded"
    assert len(tool_server.effects) == 1
    browser.assert_clean()


def test_the_live_partial_follows_a_run_on_a_real_worker(
    project, admin_user, world, tool_server, worker
):
    """The same run without a browser (runs where Chromium is missing): the partial the
    page polls shows the held step running, then the run succeeded with polling off."""
    from django.test import Client

    from .conftest import wait_for, wait_run

    flow = flow_create(project=project, slug="held", source=HELD, actor=admin_user)
    client = Client()
    client.force_login(admin_user)
    response = client.post("/flows/held/start/", {"input": '{"topic": "owls"}', "project": "acme"})
    run = Run.objects.get(flow=flow)
    assert response["Location"] == f"/runs/{run.pk}/"

    def live() -> str:
        return client.get(f"/runs/{run.pk}/live/").content.decode()

    running = wait_for(
        lambda: (text := live()) and 'data-step="hold" data-status="running"' in text and text,
        worker=worker,
    )
    assert 'hx-trigger="every 1s"' in running
    tool_server.release()
    assert wait_run(run, worker=worker).status == "succeeded"
    final = live()
    assert 'data-status="succeeded"' in final and "hx-trigger" not in final
    assert "done owls" in final
