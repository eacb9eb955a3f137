"""The scanner's recognizers: Presidio's English defaults, tuned, plus our secret recognizers,
and cheap per-entity pre-filters ("gates") that skip recognizers which cannot match.

Nothing here touches the network: the email recognizer checks domains against
tldextract's bundled public-suffix snapshot instead of fetching the list.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import phonenumbers
import regex
import tldextract
from phonenumbers.phonenumberutil import (
    COUNTRY_CODES_FOR_NON_GEO_REGIONS,
    SUPPORTED_REGIONS,
    country_code_for_region,
)
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    CryptoRecognizer,
    DateRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    MacAddressRecognizer,
    MedicalLicenseRecognizer,
    NhsRecognizer,
    PhoneRecognizer,
    SpacyRecognizer,
    UrlRecognizer,
    UsBankRecognizer,
    UsItinRecognizer,
    UsLicenseRecognizer,
    UsPassportRecognizer,
    UsSsnRecognizer,
    UuidRecognizer,
)

# No suffix-list URLs and no cache directory: tldextract falls back to the snapshot it
# ships with, so no request is ever made and nothing is written to disk.
_OFFLINE_TLD_EXTRACT = tldextract.TLDExtract(
    cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True
)


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's ``EmailRecognizer`` (same pattern and score), validating the domain with
    the offline public-suffix snapshot. The stock one calls ``tldextract.extract``, which
    downloads the list on first use."""

    def validate_result(self, pattern_text: str) -> bool:
        return _OFFLINE_TLD_EXTRACT(pattern_text).fqdn != ""


# Digit blocks separated by up to four punctuation characters: a superset of the
# candidates libphonenumber's matcher considers (its separators are punctuation, spaces
# and "x"; letters end a candidate).
_PHONE_CANDIDATE = re.compile(r"\d(?:(?:[\W_]|[xX\u30FC]){0,4}\d)*")
_DIGIT = re.compile(r"\d")


class MatcherPhoneRecognizer(PhoneRecognizer):
    """Presidio's ``PhoneRecognizer``: the same matcher per region, leniency, spans and
    score, doing less work.

    - A region's matcher runs only if some candidate in the text has as many digits as
      the shortest number that matcher can accept (``min_phone_digits_by_region``).
    - Presidio parses each match a second time only to name its region in the
      explanation; here the explanation names the matching region.
    """

    def __init__(self, *, supported_regions: Sequence[str], **kwargs):
        super().__init__(supported_regions=tuple(supported_regions), **kwargs)
        self.min_digits = min_phone_digits_by_region(self.supported_regions)

    def analyze(self, text: str, entities: list[str], nlp_artifacts=None) -> list:
        most = max(
            (len(_DIGIT.findall(m.group())) for m in _PHONE_CANDIDATE.finditer(text)), default=0
        )
        results = []
        for region in self.supported_regions:
            if most < self.min_digits[region]:
                continue
            for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=self.leniency):
                results.append(self._get_recognizer_result(match, text, region, nlp_artifacts))
        return EntityRecognizer.remove_duplicates(results)


class DigitDateRecognizer(DateRecognizer):
    """Presidio's ``DateRecognizer``; each of its patterns needs a digit, so a text without
    one skips them (spaCy's DATE and TIME labels still apply)."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts=None, regex_flags=None):
        if not _DIGIT.search(text):
            return []
        return super().analyze(text, entities, nlp_artifacts, regex_flags)


class _TokenRecognizer(PatternRecognizer):
    """A secret recognizer whose match must look random: at least one digit and one
    letter after ``prefix_length`` characters, so words such as ``sk-learn-style-config``
    or "bearer authentication" are not secrets."""

    def __init__(self, *, prefix_length: int = 0, mixed_case: bool = False, **kwargs):
        self.prefix_length = prefix_length
        self.mixed_case = mixed_case
        super().__init__(**kwargs)

    def invalidate_result(self, pattern_text: str) -> bool:
        body = pattern_text[self.prefix_length :]
        looks_random = any(c.isdigit() for c in body) and any(c.isalpha() for c in body)
        if self.mixed_case:
            looks_random = (
                looks_random and any(c.isupper() for c in body) and any(c.islower() for c in body)
            )
        return not looks_random


# Secrets. Case matters in these formats, and Presidio compiles every pattern with
# IGNORECASE, so the prefixes sit in (?-i:...) groups. Boundaries are look-arounds on the
# token alphabet rather than \b, because "-" and "_" are part of the tokens.
_SK = r"(?<![A-Za-z0-9_-])"
_SK_END = r"(?![A-Za-z0-9_-])"


def secret_recognizers() -> list[EntityRecognizer]:
    """Our recognizers for credentials (entity types in ``SECRET_ENTITY_TYPES``)."""
    return [
        # OpenAI: sk-<48>, sk-proj-<...>, sk-svcacct-<...>, sk-admin-<...>.
        _TokenRecognizer(
            supported_entity="OPENAI_API_KEY",
            name="OpenAiApiKeyRecognizer",
            prefix_length=3,
            patterns=[
                Pattern(
                    "OpenAI API key",
                    _SK
                    + r"(?-i:sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,})"
                    + _SK_END,
                    0.95,
                )
            ],
        ),
        # Anthropic: sk-ant-api03-<...>, sk-ant-admin01-<...>.
        _TokenRecognizer(
            supported_entity="ANTHROPIC_API_KEY",
            name="AnthropicApiKeyRecognizer",
            prefix_length=7,
            patterns=[
                Pattern(
                    "Anthropic API key",
                    _SK + r"(?-i:sk-ant-[A-Za-z0-9_-]{20,})" + _SK_END,
                    0.95,
                )
            ],
        ),
        # AWS access key ids: AKIA (long-term) and ASIA (temporary) + 16 upper-case alnum.
        PatternRecognizer(
            supported_entity="AWS_ACCESS_KEY_ID",
            name="AwsAccessKeyIdRecognizer",
            patterns=[
                Pattern(
                    "AWS access key id",
                    r"(?<![A-Za-z0-9])(?-i:(?:AKIA|ASIA)[A-Z0-9]{16})(?![A-Za-z0-9])",
                    0.95,
                )
            ],
        ),
        # AWS secret access keys are 40 base64 characters with nothing to recognize them
        # by: a weak score that only context ("aws", "secret" within five words before,
        # e.g. aws_secret_access_key=...) lifts over the default threshold. Mixed case and
        # a digit are required, so a 40-hex SHA-1 is not one.
        _TokenRecognizer(
            supported_entity="AWS_SECRET_ACCESS_KEY",
            name="AwsSecretAccessKeyRecognizer",
            mixed_case=True,
            context=["aws", "secret"],
            patterns=[
                Pattern(
                    "AWS secret access key (weak)",
                    r"(?<![A-Za-z0-9/+=])(?-i:[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
                    0.3,
                )
            ],
        ),
        # GitHub: ghp_/gho_/ghu_/ghs_/ghr_ + 36 (GitHub may lengthen them), github_pat_.
        PatternRecognizer(
            supported_entity="GITHUB_TOKEN",
            name="GitHubTokenRecognizer",
            patterns=[
                Pattern(
                    "GitHub token",
                    r"(?<![A-Za-z0-9_])(?-i:gh[pousr]_[A-Za-z0-9]{36,251})(?![A-Za-z0-9_])",
                    0.95,
                ),
                Pattern(
                    "GitHub fine-grained token",
                    r"(?<![A-Za-z0-9_])(?-i:github_pat_[A-Za-z0-9_]{22,})(?![A-Za-z0-9_])",
                    0.95,
                ),
            ],
        ),
        # PEM / OpenSSH / PGP private keys: the whole block, or from the header to the end
        # of the base64 body when the END line is missing (a truncated paste).
        PatternRecognizer(
            supported_entity="PRIVATE_KEY",
            name="PrivateKeyRecognizer",
            patterns=[
                Pattern(
                    "Private key block",
                    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
                    r"(?:.*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
                    r"|[A-Za-z0-9+/=\s\\:,.-]*)",
                    1.0,
                )
            ],
        ),
        # The credential after "Bearer" (Authorization headers, curl lines, logs).
        _TokenRecognizer(
            supported_entity="BEARER_TOKEN",
            name="BearerTokenRecognizer",
            patterns=[
                Pattern(
                    "Bearer token",
                    r"(?<=\bbearer[ \t]{1,10})[A-Za-z0-9\-._~+/]{8,}=*",
                    0.8,
                )
            ],
        ),
    ]


# Presidio's registry defaults (conf/default.yaml global_regex_flags: 26).
PRESIDIO_REGEX_FLAGS = regex.DOTALL | regex.MULTILINE | regex.IGNORECASE
# conf/default_recognizers.yaml's English context (the class default has "cc ").
_CREDIT_CARD_CONTEXT = [
    "credit",
    "card",
    "visa",
    "mastercard",
    "cc",
    "amex",
    "discover",
    "jcb",
    "diners",
    "maestro",
    "instapayment",
]


class ContextCardNumberRecognizer(PatternRecognizer):
    """Card numbers Presidio's ``CreditCardRecognizer`` misses: its pattern knows only
    some issuer prefixes (1, 3, 4, 5[0-5], 6) and at most 17 digits, so 19-digit Visa,
    2-series Mastercard and 12-digit Maestro numbers pass (20 of the 79 card numbers of
    presidio-research's synthetic dev set). This one takes any 12-19 contiguous digits
    right after a card word ("card", "card no", "card #", "cc", "card number is") and
    keeps them only when the Luhn checksum holds; the match is the digits alone."""

    PATTERN = (
        r"(?<=\b(?:card|cc)\b[.,]?(?:\s*(?:no\.?|number|num|#))?(?:\s*(?:is|:))?\s{0,3})"
        r"\d{12,19}\b"
    )

    def __init__(self) -> None:
        super().__init__(
            supported_entity="CREDIT_CARD",
            patterns=[Pattern("card number after a card word", self.PATTERN, 0.6)],
            name="ContextCardNumberRecognizer",
        )

    def validate_result(self, pattern_text: str) -> bool:
        digits = [int(c) for c in pattern_text][::-1]
        total = sum(
            d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits)
        )
        return total % 10 == 0


def presidio_recognizers(
    *, phone_regions: Sequence[str], enable_uk_nhs: bool, spacy_entities: Sequence[str]
) -> list[EntityRecognizer]:
    """Presidio 2.2.366's default English recognizers (``conf/default_recognizers.yaml``),
    tuned: phone numbers for ``phone_regions``; UK NHS numbers only when enabled (any 10
    digits with a valid check digit match, e.g. order numbers); the offline email
    recognizer; spaCy NER for ``spacy_entities``."""
    recognizers: list[EntityRecognizer] = [
        CreditCardRecognizer(context=_CREDIT_CARD_CONTEXT),
        ContextCardNumberRecognizer(),
        UsBankRecognizer(),
        UsLicenseRecognizer(),
        UsItinRecognizer(),
        UsPassportRecognizer(),
        UsSsnRecognizer(),
        CryptoRecognizer(),
        DigitDateRecognizer(),
        OfflineEmailRecognizer(),
        IbanRecognizer(),
        IpRecognizer(),
        MedicalLicenseRecognizer(),
        MacAddressRecognizer(),
        UuidRecognizer(),
        MatcherPhoneRecognizer(supported_regions=tuple(phone_regions)),
        UrlRecognizer(),
        SpacyRecognizer(supported_entities=list(spacy_entities)),
    ]
    if enable_uk_nhs:
        recognizers.append(NhsRecognizer())
    for recognizer in recognizers:
        if isinstance(recognizer, PatternRecognizer):
            # As Presidio's registry loader sets them (some classes default to fewer).
            recognizer.global_regex_flags = PRESIDIO_REGEX_FLAGS
    return recognizers


def _shortest_number(metadata) -> int | None:
    if metadata is None or metadata.general_desc is None:
        return None
    # Valid numbers have one of these national lengths ("local only" lengths are not
    # valid numbers, and the matcher accepts valid numbers only).
    lengths = [n for n in metadata.general_desc.possible_length if n > 0]
    return min(lengths) if lengths else None


def min_phone_digits_by_region(regions: Sequence[str]) -> dict[str, int]:
    """For each region, the fewest digits of a number its matcher can accept, from
    libphonenumber's metadata: a national number of any region sharing its country code
    (the US matcher accepts Canadian numbers), or any number in international form."""
    metadata = {r: phonenumbers.PhoneMetadata.metadata_for_region(r) for r in SUPPORTED_REGIONS}
    international = [
        len(str(country_code_for_region(r))) + n
        for r, m in metadata.items()
        if (n := _shortest_number(m))
    ]
    international += [
        len(str(cc)) + n
        for cc in COUNTRY_CODES_FOR_NON_GEO_REGIONS
        if (n := _shortest_number(phonenumbers.PhoneMetadata.metadata_for_nongeo_region(cc)))
    ]
    shortest_international = min(international)
    out = {}
    for region in regions:
        code = country_code_for_region(region)
        national = [
            n
            for r, m in metadata.items()
            if country_code_for_region(r) == code and (n := _shortest_number(m))
        ]
        out[region] = max(1, min([shortest_international, *national]))
    return out


def min_phone_digits(regions: Sequence[str]) -> int:
    """The fewest digits of a phone number any of the ``regions``' matchers can accept."""
    return min(min_phone_digits_by_region(regions).values())


def entity_gates(*, phone_regions: Sequence[str]) -> dict[str, re.Pattern[str]]:
    """Per entity type, a pattern that every text the entity's recognizers can match also
    matches (a necessary condition, derived from each recognizer's own regex). A text
    that fails an entity's gate skips that entity's recognizers. Entity types without a
    gate (spaCy NER) always run."""
    phone = min_phone_digits(phone_regions)
    gates = {
        # 4+3+3+3 digits, single separators; or 12 contiguous (ContextCardNumberRecognizer)
        "CREDIT_CARD": r"\d(?:[- ]?\d){12}|\d{12}",
        "US_BANK_NUMBER": r"\d{8}",
        "US_DRIVER_LICENSE": r"\d",  # some state formats are one letter + one digit
        "US_ITIN": r"\d{3}",
        "US_PASSPORT": r"\d{8}",
        "US_SSN": r"\d{4}",
        "UK_NHS": r"\d{3}",
        "MEDICAL_LICENSE": r"\d{7}",
        "CRYPTO": r"[A-Za-z0-9]{26}",
        "EMAIL_ADDRESS": r"@",
        "IBAN_CODE": r"(?i)[a-z]{2}\d{2}",
        "IP_ADDRESS": r"\d\.\d|:[0-9A-Fa-f]{0,4}:",  # IPv4, or IPv6's two or more colons
        "MAC_ADDRESS": r"[0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}",
        "UUID": r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-",
        "URL": r"(?i)\.[a-z]{2}",
        "PHONE_NUMBER": rf"(?:\d\D*){{{phone}}}",  # that many digits anywhere
        "OPENAI_API_KEY": r"sk-",
        "ANTHROPIC_API_KEY": r"sk-ant-",
        "AWS_ACCESS_KEY_ID": r"AKIA|ASIA",
        # A run of exactly 40, as the recognizer requires (a 64-hex digest is not one).
        "AWS_SECRET_ACCESS_KEY": r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])",
        "GITHUB_TOKEN": r"gh[pousr]_|github_pat_",
        "PRIVATE_KEY": r"(?i)PRIVATE KEY",
        "BEARER_TOKEN": r"(?i)bearer",
    }
    return {entity: re.compile(pattern) for entity, pattern in gates.items()}
