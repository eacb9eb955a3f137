"""The scripted model endpoint: its script validated with paths (API, form), its answers,
and its tokenizer loading offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart

from agents.config import ScriptedModelScript
from agents.models import ModelEndpoint
from agents.runtime.scripted import EXHAUSTED_TEXT, script_response
from agents.runtime.tokens import count_tokens

ROOT = Path(__file__).resolve().parents[3]
API = "/api/v1/projects/acme"


def test_the_api_names_the_path_of_a_bad_script(project, admin_client_api):
    response = admin_client_api.post(
        f"{API}/model-endpoints/",
        {
            "name": "demo",
            "kind": "scripted",
            "script": {"responses": [{"text": "a", "tool_calls": [{"name": "x"}]}, {"txt": 1}]},
        },
        format="json",
    )
    assert response.status_code == 400
    errors = response.json()["script"]
    assert any(e.startswith("responses.0: ") and "either tool_calls" in e for e in errors)
    assert any(e.startswith("responses.1.txt: ") for e in errors)
    assert not ModelEndpoint.objects.filter(name="demo").exists()


def test_a_script_only_belongs_to_a_scripted_endpoint(project, admin_client_api):
    response = admin_client_api.post(
        f"{API}/model-endpoints/",
        {
            "name": "local",
            "kind": "openai_compatible",
            "base_url": "http://127.0.0.1:1/v1",
            "script": {"responses": [{"text": "a"}]},
        },
        format="json",
    )
    assert response.status_code == 400
    assert list(response.json()) == ["script"]


def test_the_api_stores_and_returns_a_script(project, admin_client_api):
    script = {"responses": [{"tool_calls": [{"name": "echo", "arguments": {"text": "hi"}}]}]}
    response = admin_client_api.post(
        f"{API}/model-endpoints/",
        {"name": "demo", "kind": "scripted", "script": script},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["script"] == script


@pytest.mark.django_db
def test_the_form_takes_yaml_and_shows_script_errors_in_place(project, admin_user):
    client = Client()
    client.force_login(admin_user)
    url = reverse("model-endpoints")
    bad = client.post(
        url,
        {
            "project": "acme",
            "name": "demo",
            "kind": "scripted",
            "script": "responses:\n  - {tool_calls: []}\n",
        },
    )
    assert bad.status_code == 200
    form = bad.context["form"]
    assert "script" in form.errors
    assert "responses.0" in form.errors["script"][0]
    good = client.post(
        url,
        {
            "project": "acme",
            "name": "demo",
            "kind": "scripted",
            "script": "responses:\n  - {text: Done.}\n",
        },
    )
    assert good.status_code in (200, 302)
    assert ModelEndpoint.objects.get(name="demo").script == {"responses": [{"text": "Done."}]}
    page = client.get(url)
    assert "Scripted model" in page.content.decode()


def conversation(*items):
    messages = []
    for item in items:
        if isinstance(item, str):
            messages.append(ModelRequest(parts=[UserPromptPart(content=item)]))
        else:
            messages.append(ModelResponse(parts=[TextPart(content="x")]))
    return messages


def test_responses_follow_the_order_and_branches_match_the_latest_input():
    script = ScriptedModelScript.model_validate(
        {
            "responses": [{"text": "one"}, {"text": "two"}],
            "branches": [{"input_contains": "REFUND", "responses": [{"text": "person"}]}],
        }
    )
    assert script_response(script, conversation("hi")).text == "one"
    assert script_response(script, conversation("hi", None)).text == "two"
    assert script_response(script, conversation("hi", None, None)).text == "two"
    assert script_response(script, conversation("hi", None, "a refund please")).text == "person"
    empty = ScriptedModelScript.model_validate({})
    assert script_response(empty, conversation("hi")).text == EXHAUSTED_TEXT


def test_token_counts_come_from_cl100k_base():
    assert count_tokens("Hello there.") == 3
    assert count_tokens("") == 0


NO_NETWORK_SCRIPT = """
import json, sys
import django
django.setup()  # before the hook: Django's apps import urllib3, which probes IPv6 at import
events = []
def hook(event, args):
    if event in ("socket.__new__", "socket.connect", "socket.getaddrinfo"):
        events.append(event)
        raise RuntimeError("network access attempted: " + event)
sys.addaudithook(hook)
from agents.runtime.tokens import count_tokens
print(json.dumps({"events": events, "tokens": count_tokens("The quick brown fox")}))
"""


def test_the_tokenizer_loads_without_network(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
        "TIKTOKEN_CACHE_DIR": str(tmp_path / "cache"),
        "DEBUG": "true",
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "LOG_LEVEL": "error",
    }
    env.pop("DATABASE_URL", None)
    completed = subprocess.run(
        [sys.executable, "-c", NO_NETWORK_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == {"events": [], "tokens": 4}
