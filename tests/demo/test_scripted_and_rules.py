"""The two small extensions the demo needed: scripted models that take values from the input
(``input_matches`` branches, ``captures``, ``${name}``) and grant rules with their own
approval quorum."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from pydantic_ai.messages import ModelRequest, UserPromptPart

from agents.config import parse_config, parse_script
from agents.forms import rules_to_text
from agents.runtime.scripted import ScriptCaptureMissing, script_response

REFUND_SCRIPT = {
    "captures": {"amount": r"\$\s?([0-9]+(?:\.[0-9]{2})?)", "customer": r"(C-[0-9]{4})"},
    "branches": [
        {
            "input_matches": r"\$[0-9]",
            "responses": [
                {
                    "tool_calls": [
                        {
                            "name": "issue_refund",
                            "arguments": {"customer_id": "${customer}", "amount_usd": "${amount}"},
                        }
                    ]
                },
                {"text": "Refunded $${amount}."},
            ],
        }
    ],
    "responses": [{"text": "No amount."}],
}


def ask(script, text):
    return script_response(parse_script(script), [ModelRequest(parts=[UserPromptPart(text)])])


def test_a_capture_fills_tool_arguments_from_the_input():
    response = ask(REFUND_SCRIPT, "customer_id=C-1002 please refund $120.00")
    assert response.tool_calls[0].arguments == {"customer_id": "C-1002", "amount_usd": "120.00"}


def test_a_message_without_the_pattern_takes_the_default_responses():
    assert ask(REFUND_SCRIPT, "customer_id=C-1002 hello").text == "No amount."


def test_a_missing_capture_fails_the_request_instead_of_sending_the_placeholder():
    script = {"captures": {"n": r"#(\d+)"}, "responses": [{"text": "order ${n}"}]}
    with pytest.raises(ScriptCaptureMissing):
        ask(script, "no order number here")


@pytest.mark.parametrize(
    ("branch", "message"),
    [
        ({"input_matches": "(", "responses": [{"text": "x"}]}, "not a valid regular expression"),
        ({"responses": [{"text": "x"}]}, "give either input_contains or input_matches"),
        (
            {"input_contains": "a", "input_matches": "a", "responses": [{"text": "x"}]},
            "give either input_contains or input_matches",
        ),
    ],
)
def test_bad_branches_are_errors_at_their_path(branch, message):
    with pytest.raises(ValidationError) as caught:
        parse_script({"branches": [branch]})
    [error] = caught.value.message_dict["script"]
    assert error.startswith("branches.0") and message in error


def test_a_capture_name_must_be_a_plain_identifier():
    with pytest.raises(ValidationError):
        parse_script({"captures": {"Bad-Name": "x"}})


def config(rule):
    return {
        "model_endpoint": "e",
        "model_name": "m",
        "instructions": "i",
        "grants": [{"tool": "t", "rules": [rule]}],
    }


def test_a_require_approval_rule_may_name_its_quorum_and_it_survives_a_round_trip():
    rule = {"when": "double(args.amount_usd) > 500.0", "then": "require_approval", "quorum": 2}
    parsed = parse_config(config(rule))
    assert parsed.model_dump()["grants"][0]["rules"] == [rule]
    plain = parse_config(config({"when": "true", "then": "allow"}))
    assert plain.model_dump()["grants"][0]["rules"] == [{"when": "true", "then": "allow"}]
    assert rules_to_text([rule]).endswith("=> require_approval quorum 2")


def test_a_quorum_on_another_effect_is_an_error_at_its_path():
    with pytest.raises(ValidationError) as caught:
        parse_config(config({"when": "true", "then": "deny", "quorum": 2}))
    assert list(caught.value.message_dict) == ["grants.0.rules.0"]


def test_the_grant_form_reads_a_rule_quorum_back():
    from agents.forms import GrantRowForm
    from agents.models import Tool

    tool = Tool(pk=7, name="issue_refund")
    text = rules_to_text(
        [
            {"when": "double(args.amount_usd) > 500.0", "then": "require_approval", "quorum": 2},
            {"when": "double(args.amount_usd) > 50.0", "then": "require_approval"},
        ]
    )
    data = {
        "grant-7-granted": "on",
        "grant-7-effect": "allow",
        "grant-7-rules": text,
        "grant-7-approver_role": "approver",
        "grant-7-approval_quorum": "1",
    }
    form = GrantRowForm(data, tool=tool)
    assert form.is_valid(), form.errors
    assert form.cleaned_data["rules"] == [
        {"when": "double(args.amount_usd) > 500.0", "then": "require_approval", "quorum": 2},
        {"when": "double(args.amount_usd) > 50.0", "then": "require_approval"},
    ]
