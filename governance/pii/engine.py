"""The PII scanner: one Presidio analyzer per process, ``scan`` for a text, ``scan_data`` for JSON.

Built lazily on first use (thread-safe), from settings: ``PII_SPACY_MODEL`` (an
installed spaCy package; never downloaded), ``PII_PHONE_REGIONS``, ``PII_ENABLE_UK_NHS``.
Nothing here opens a network connection.

Why it is faster than a stock ``AnalyzerEngine`` (numbers in ``bench/pii.py``):

- spaCy runs only its NER component. The tagger, parser, attribute ruler and lemmatizer
  are not loaded (in the en_core_web models NER has its own token-to-vector layer, so the
  shared one goes too). Presidio needs lemmas only to match context words, which it does
  by substring ("phone" in "phones"), so the lower-cased token text stands in for the
  lemma.
- The NER pass runs only when an entity type the policy acts on comes from NER (PERSON,
  LOCATION, NRP, DATE_TIME). Otherwise the tokenizer alone supplies the context words.
- Only the recognizers of entity types the policy acts on run, and only when the text
  passes the entity's gate (``recognizers.entity_gates``: e.g. no "@", no email).
- thinc multiplies spaCy's matrices with numpy's OpenBLAS (pinned to one thread) rather
  than blis, which is two to three times slower for these small shapes on our hosts.
- Smaller savings: the phone recognizer skips regions whose shortest valid number is
  longer than any digit run in the text and does not parse each match twice; the date
  regexes need a digit; Presidio's stop-word checks do not grow spaCy's vocabulary; the
  context enhancer does not deep-copy results of recognizers without context words.

Overlapping findings are resolved so the text can be rewritten: the stronger action wins,
then a pattern or checksum match over a spaCy NER label (spaCy gives every entity the
same 0.85, not a confidence: the small model labels a phone number's digit groups DATE,
or "ping 8.8.8.8 and" PERSON), then the longer span (a URL inside an email address
goes), then the higher score.

Hashing uses Presidio's ``hash`` operator (SHA-256) with a salt: 2.2.366 accepts a salt of
16+ bytes, and without one it draws a random salt per value, so equal values would not
hash equally. Our salt is derived from ``SECRET_KEY`` (HMAC-SHA256), so digests are
stable within a deployment (equal values can be correlated) but a short value such as a
phone number cannot be recovered by hashing candidates without the key.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import hmac
import logging
import re
import threading
import traceback
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import spacy
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry
from presidio_analyzer import RecognizerResult as AnalyzerResult
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import SpacyRecognizer
from presidio_anonymizer.operators import Hash, Mask, Operator, Replace
from spacy.attrs import IS_PUNCT, IS_STOP
from spacy.tokens import Doc
from thinc.api import use_ops

from governance.pii.recognizers import entity_gates, presidio_recognizers, secret_recognizers
from governance.pii.rules import (
    ACTION_RANK,
    DEFAULT_PII_POLICY,
    NER_ENTITY_TYPES,
    PiiPolicy,
    PiiRule,
)
from governance.pii.types import (
    DataFinding,
    DataScanResult,
    Finding,
    ScanResult,
    strongest_action,
)

logger = logging.getLogger(__name__)

LANGUAGE = "en"

# Presidio's own default NER configuration (conf/default.yaml): spaCy labels mapped to
# Presidio entity types; ORG and the numeric/other labels ignored.
NER_CONFIGURATION = {
    "model_to_presidio_entity_mapping": {
        "PER": "PERSON",
        "PERSON": "PERSON",
        "NORP": "NRP",
        "FAC": "LOCATION",
        "LOC": "LOCATION",
        "GPE": "LOCATION",
        "LOCATION": "LOCATION",
        "ORG": "ORGANIZATION",
        "ORGANIZATION": "ORGANIZATION",
        "DATE": "DATE_TIME",
        "TIME": "DATE_TIME",
    },
    "low_confidence_score_multiplier": 0.4,
    "low_score_entity_names": [],
    "labels_to_ignore": [
        "ORGANIZATION",
        "CARDINAL",
        "EVENT",
        "LANGUAGE",
        "LAW",
        "MONEY",
        "ORDINAL",
        "PERCENT",
        "PRODUCT",
        "QUANTITY",
        "WORK_OF_ART",
    ],
}

# Pipeline components Presidio does not need: it reads entities, tokens and lemmas.
_UNNEEDED_COMPONENTS = (
    "parser",
    "senter",
    "tagger",
    "morphologizer",
    "attribute_ruler",
    "lemmatizer",
    "trainable_lemmatizer",
    "textcat",
    "textcat_multilabel",
)
_OPENBLAS_SET_THREADS = (
    "scipy_openblas_set_num_threads64_",  # numpy >= 2 wheels (scipy-openblas64)
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)
RECOGNIZER_ID_KEY = AnalyzerResult.RECOGNIZER_IDENTIFIER_KEY

# Rule identifiers that decisions and audit data carry (``governance.engine.Decision.rule``:
# ``grant.rule.2``, ``policy.error``, ``caps.max_tool_calls_per_run``; ``pii.tool_input``,
# ``budget.exceeded``, ``approval.self_approval``...) are not PII, but spaCy labels some
# PERSON ("Decided by grant.rule.2") and Presidio's URL pattern takes ``grant.ru`` or
# ``policy.er`` (country domains) out of them. They go to Presidio's allow list
# (``analyze(allow_list=..., allow_list_match="regex")``), which drops a finding whose whole
# span matches: a lower-case namespace below, then dot-separated lower-case segments,
# case-sensitive. A span with anything more ("grant.rule.2 John", "https://grant.ru") is
# still a finding; a bare domain spelt like one (``grant.ru``) is not.
RULE_IDENTIFIER_NAMESPACES = (
    "approval",
    "breaker",
    "budget",
    "caps",
    "delegation",
    "grant",
    "model",
    "pii",
    "policy",
    "tool",
)
RULE_IDENTIFIER_ALLOW_LIST = [
    r"\A(?:" + "|".join(RULE_IDENTIFIER_NAMESPACES) + r")(?:\.[a-z0-9_]+)+\Z"
]
_MASK_ALL = 1 << 30  # Presidio masks min(len(value), chars_to_mask) characters
# presidio-anonymizer's operators for our actions (stateless).
_OPERATORS: dict[str, Operator] = {"redact": Replace(), "mask": Mask(), "hash": Hash()}


class SpacyModelMissingError(RuntimeError):
    """The configured spaCy model is not installed (it is never downloaded at run time)."""


def _pin_openblas_to_one_thread() -> bool:
    """Set numpy's OpenBLAS (already loaded with numpy) to one thread; ``False`` when it
    cannot be found (another BLAS, or not Linux).

    spaCy's matrices for one short text are tiny: OpenBLAS threads only add hand-offs,
    and on a busy host they turn a 3 ms call into a 100 ms one. This is process-wide,
    like setting OPENBLAS_NUM_THREADS=1, which servers commonly do anyway.
    """
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    paths = sorted(
        {
            line.split()[-1]
            for line in maps.splitlines()
            if "openblas" in line.lower() and line.split()[-1].startswith("/")
        }
    )
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in _OPENBLAS_SET_THREADS:
            setter = getattr(library, symbol, None)
            if setter is not None:
                setter(1)
                return True
    return False


class ContextEnhancer(LemmaContextAwareEnhancer):
    """Presidio's lemma context enhancer, given only the results of recognizers that have
    context words: the others (spaCy's, most of them) skip its deep copy."""

    def enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
        with_context = {r.id for r in recognizers if r.context}
        if not with_context:
            return raw_results
        enhance, keep = [], []
        for result in raw_results:
            recognizer = (result.recognition_metadata or {}).get(RECOGNIZER_ID_KEY)
            (enhance if recognizer in with_context else keep).append(result)
        if not enhance:
            return raw_results
        return keep + super().enhance_using_context(
            text, enhance, nlp_artifacts, recognizers, context
        )


class LeanSpacyNlpEngine(SpacyNlpEngine):
    """Presidio's spaCy engine with only the NER component loaded and lower-cased token
    texts as lemmas; ``tokenize`` gives context words without running any model."""

    def load(self) -> None:
        self.fast_gemm = _pin_openblas_to_one_thread()
        self.nlp = {}
        for model in self.models:
            self._validate_model_params(model)
            name = model["model_name"]
            if not (spacy.util.is_package(name) or Path(name).exists()):
                raise SpacyModelMissingError(
                    f"spaCy model {name!r} is not installed; install its package "
                    "(PII_SPACY_MODEL names it). It is never downloaded at run time."
                )
            # numpy's gemm (OpenBLAS, one thread) instead of blis where we can pin it:
            # the same results, and for the small matrices of one short text two to three
            # times faster on our hosts (bench/pii.py --ablation).
            ops = use_ops("numpy", use_blis=False) if self.fast_gemm else nullcontext()
            with ops:
                nlp = spacy.load(name, exclude=list(_UNNEEDED_COMPONENTS))
            if "tok2vec" in nlp.pipe_names and not nlp.get_pipe("tok2vec").listening_components:
                nlp.remove_pipe("tok2vec")
            self.nlp[model["lang_code"]] = nlp

    def _doc_to_nlp_artifact(self, doc: Doc, language: str) -> NlpArtifacts:
        # Mirrors SpacyNlpEngine._doc_to_nlp_artifact, with lower-cased text as lemmas.
        entities, scores = self._get_updated_entities(
            self._get_entities(doc), self._get_scores_for_entities(doc)
        )
        return NlpArtifacts(
            entities=entities,
            tokens=doc,
            tokens_indices=[token.idx for token in doc],
            lemmas=[token.lower_ for token in doc],
            nlp_engine=self,
            language=language,
            scores=scores,
        )

    # Presidio asks vocab[word].is_stop / .is_punct for every lemma: that adds a lexeme
    # for each new word ever seen (the vocabulary grows for the life of the process) and
    # is slow. The vocabulary's own attribute functions give the same answers.
    def is_stopword(self, word: str, language: str) -> bool:
        return self.nlp[language].vocab.lex_attr_getters[IS_STOP](word)

    def is_punct(self, word: str, language: str) -> bool:
        return self.nlp[language].vocab.lex_attr_getters[IS_PUNCT](word)

    def tokenize(self, text: str, language: str) -> NlpArtifacts:
        """Artifacts with tokens only (no entities), from the rule-based tokenizer."""
        return self._doc_to_nlp_artifact(self.nlp[language].make_doc(text), language)

    def process_texts(self, texts: Sequence[str], language: str) -> list[NlpArtifacts]:
        """Artifacts with NER for several texts in one ``nlp.pipe`` call."""
        return [self._doc_to_nlp_artifact(doc, language) for doc in self.nlp[language].pipe(texts)]


@dataclass(frozen=True)
class ScannerConfig:
    """What a scanner is built from; a change (e.g. in tests) builds a new one."""

    spacy_model: str
    phone_regions: tuple[str, ...]
    enable_uk_nhs: bool
    hash_salt: bytes

    @classmethod
    def from_settings(cls) -> ScannerConfig:
        from django.conf import settings

        return _config(
            settings.PII_SPACY_MODEL,
            tuple(settings.PII_PHONE_REGIONS),
            settings.PII_ENABLE_UK_NHS,
            settings.SECRET_KEY,
        )


@functools.lru_cache(maxsize=8)
def _config(
    spacy_model: str, phone_regions: tuple[str, ...], enable_uk_nhs: bool, secret_key: str
) -> ScannerConfig:
    # Every scan asks for the config (settings may change in tests); the salt's HMAC is
    # computed once per settings.
    salt = hmac.new(secret_key.encode(), b"governance.pii.hash-salt", hashlib.sha256).digest()
    return ScannerConfig(
        spacy_model=spacy_model,
        phone_regions=phone_regions,
        enable_uk_nhs=enable_uk_nhs,
        hash_salt=salt,
    )


class PiiScanner:
    """A Presidio analyzer and the anonymizer's operators, set up once; ``scan`` and
    ``scan_data`` use them.

    ``extra_recognizers`` are added to the registry (for tests and experiments).
    """

    def __init__(
        self, config: ScannerConfig, *, extra_recognizers: Iterable[EntityRecognizer] = ()
    ):
        self.config = config
        self.nlp_engine = LeanSpacyNlpEngine(
            models=[{"lang_code": LANGUAGE, "model_name": config.spacy_model}],
            ner_model_configuration=NerModelConfiguration(**NER_CONFIGURATION),
        )
        self.nlp_engine.load()
        spacy_entities = self.nlp_engine.get_supported_entities()
        recognizers = [
            *presidio_recognizers(
                phone_regions=config.phone_regions,
                enable_uk_nhs=config.enable_uk_nhs,
                spacy_entities=spacy_entities,
            ),
            *secret_recognizers(),
            *extra_recognizers,
        ]
        self.analyzer = AnalyzerEngine(
            registry=RecognizerRegistry(recognizers=recognizers, supported_languages=[LANGUAGE]),
            nlp_engine=self.nlp_engine,
            supported_languages=[LANGUAGE],
            context_aware_enhancer=ContextEnhancer(),
        )
        for action, operator in _OPERATORS.items():
            operator.validate(self._operator_params("PERSON", action))
        self.supported_entities = frozenset(self.analyzer.get_supported_entities(LANGUAGE))
        self.ner_entities = frozenset(spacy_entities) | NER_ENTITY_TYPES
        self.ner_recognizer_id = next(
            r.id for r in self.analyzer.registry.recognizers if isinstance(r, SpacyRecognizer)
        )
        self.gates: dict[str, re.Pattern[str]] = entity_gates(phone_regions=config.phone_regions)
        self._any_gates: dict[tuple[str, ...], re.Pattern[str] | None] = {}

    # --- detection ----------------------------------------------------------------------

    def _any_gate(self, rules: Mapping[str, PiiRule]) -> re.Pattern[str] | None:
        """One pattern that matches where any of the rules' entity gates does (their
        alternation), so a text no gate matches costs one search; ``None`` when an
        entity has no gate (it always runs). Built once per set of rules."""
        key = tuple(rules)
        if key in self._any_gates:
            return self._any_gates[key]
        patterns: list[str] | None = []
        for entity in key:
            if entity not in self.supported_entities:
                continue
            gate = self.gates.get(entity)
            if gate is None:
                patterns = None
                break
            pattern = gate.pattern
            if pattern.startswith("(?i)"):  # a global flag must scope to its branch
                pattern = f"(?i:{pattern[4:]})"
            patterns.append(f"(?:{pattern})")
        combined = None
        if patterns is not None:
            try:
                combined = re.compile("|".join(patterns) if patterns else "(?!)")
            except re.error:
                combined = None  # the per-entity gates still decide
        if len(self._any_gates) >= 64:
            self._any_gates.clear()
        self._any_gates[key] = combined
        return combined

    def _entities_to_run(self, text: str, rules: Mapping[str, PiiRule]) -> list[str]:
        any_gate = self._any_gate(rules)
        if any_gate is not None and not any_gate.search(text):
            return []
        entities = []
        for entity in rules:
            if entity not in self.supported_entities:
                continue
            gate = self.gates.get(entity)
            if gate is None or gate.search(text):
                entities.append(entity)
        return entities

    def _needs_ner(self, entities: Iterable[str]) -> bool:
        return any(entity in self.ner_entities for entity in entities)

    def _findings(
        self,
        text: str,
        rules: Mapping[str, PiiRule],
        entities: list[str],
        artifacts: NlpArtifacts,
    ) -> list[Finding]:
        results = self.analyzer.analyze(
            text=text,
            language=LANGUAGE,
            entities=entities,
            nlp_artifacts=artifacts,
            allow_list=RULE_IDENTIFIER_ALLOW_LIST,
            allow_list_match="regex",
            regex_flags=0,
        )
        candidates = []
        for result in results:
            rule = rules.get(result.entity_type)
            if rule is not None and result.score >= rule.threshold:
                finding = Finding(
                    result.entity_type, result.start, result.end, result.score, rule.action
                )
                recognizer = (result.recognition_metadata or {}).get(RECOGNIZER_ID_KEY)
                candidates.append((finding, recognizer == self.ner_recognizer_id))
        return resolve_overlaps(candidates)

    def find(self, text: str, rules: Mapping[str, PiiRule]) -> list[Finding]:
        """The findings in ``text`` for ``rules`` (entity type -> rule), after thresholds
        and overlap resolution, ordered by start. Raises on engine errors."""
        entities = self._entities_to_run(text, rules)
        if not entities:
            return []
        if self._needs_ner(entities):
            artifacts = self.nlp_engine.process_text(text, LANGUAGE)
        else:
            artifacts = self.nlp_engine.tokenize(text, LANGUAGE)
        return self._findings(text, rules, entities, artifacts)

    def find_many(self, texts: Sequence[str], rules: Mapping[str, PiiRule]) -> list[list[Finding]]:
        """``find`` for several texts; the NER pass runs batched over those needing it."""
        plans = [self._entities_to_run(text, rules) for text in texts]
        if not any(plans):
            return [[] for _ in texts]
        need_ner = [i for i, entities in enumerate(plans) if self._needs_ner(entities)]
        ner_artifacts = (
            dict(
                zip(
                    need_ner,
                    self.nlp_engine.process_texts([texts[i] for i in need_ner], LANGUAGE),
                    strict=True,
                )
            )
            if need_ner
            else {}
        )
        out = []
        for i, (text, entities) in enumerate(zip(texts, plans, strict=True)):
            if not entities:
                out.append([])
                continue
            artifacts = ner_artifacts.get(i) or self.nlp_engine.tokenize(text, LANGUAGE)
            out.append(self._findings(text, rules, entities, artifacts))
        return out

    # --- transformation -------------------------------------------------------------------

    def _operator_params(self, entity_type: str, action: str) -> dict[str, Any]:
        if action == "redact":
            return {"new_value": f"<{entity_type}>"}
        if action == "mask":
            return {"masking_char": "*", "chars_to_mask": _MASK_ALL, "from_end": False}
        if action == "hash":
            return {"hash_type": "sha256", "salt": self.config.hash_salt}
        raise ValueError(f"No operator for action {action!r}")

    def transform(self, text: str, findings: Sequence[Finding]) -> str | None:
        """``text`` with each finding transformed per its action by Presidio's anonymizer
        operators (redact: ``replace`` with ``<ENTITY_TYPE>``; ``mask``; ``hash``);
        ``None`` if any finding blocks. ``findings`` must not overlap (``find`` resolves
        overlaps), so the operators are applied directly rather than through
        ``AnonymizerEngine``, whose conflict handling would have nothing to do."""
        if any(f.action == "block" for f in findings):
            return None
        parts, last = [], 0
        for finding in sorted(findings, key=lambda f: f.start):
            if finding.action == "allow":
                continue
            operator = _OPERATORS[finding.action]
            params = self._operator_params(finding.entity_type, finding.action)
            parts.append(text[last : finding.start])
            parts.append(operator.operate(text=text[finding.start : finding.end], params=params))
            last = finding.end
        if not parts:
            return text
        parts.append(text[last:])
        return "".join(parts)

    # --- entry points ---------------------------------------------------------------------

    def scan(self, text: str, direction: str, policy: PiiPolicy) -> ScanResult:
        if not isinstance(text, str):
            raise TypeError(f"scan() takes a str, not {type(text).__name__}")
        rules = policy.rules_for(direction)
        findings = self.find(text, rules) if rules and text else []
        return ScanResult(
            findings=tuple(findings),
            text_out=self.transform(text, findings),
            action=strongest_action(f.action for f in findings),
        )

    def scan_data(self, value: Any, direction: str, policy: PiiPolicy) -> DataScanResult:
        rules = policy.rules_for(direction)
        strings: list[tuple[str, str]] = []
        _collect_strings(value, "$", strings)
        texts = [text for _, text in strings]
        per_text = self.find_many(texts, rules) if rules else [[] for _ in texts]
        findings = [
            DataFinding(path, f.entity_type, f.start, f.end, f.score, f.action)
            for (path, _), text_findings in zip(strings, per_text, strict=True)
            for f in text_findings
        ]
        if not findings:
            return DataScanResult(value_out=value, findings=(), action="allow")
        action = strongest_action(f.action for f in findings)
        if action == "block":
            return DataScanResult(value_out=None, findings=tuple(findings), action=action)
        replaced = iter(
            self.transform(text, text_findings)
            for text, text_findings in zip(texts, per_text, strict=True)
        )
        return DataScanResult(
            value_out=_rebuild(value, replaced), findings=tuple(findings), action=action
        )


def resolve_overlaps(candidates: Iterable[tuple[Finding, bool]]) -> list[Finding]:
    """Keep non-overlapping findings from ``(finding, from_ner)`` pairs, preferring the
    stronger action, then a non-NER finding, then the longer span, then the higher
    score, then the earlier start. Returned ordered by start."""
    ranked = sorted(
        candidates,
        key=lambda c: (
            -ACTION_RANK[c[0].action],
            c[1],
            -(c[0].end - c[0].start),
            -c[0].score,
            c[0].start,
        ),
    )
    kept: list[Finding] = []
    for finding, _ in ranked:
        if all(finding.end <= k.start or k.end <= finding.start for k in kept):
            kept.append(finding)
    kept.sort(key=lambda f: (f.start, f.end))
    return kept


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _child_path(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = str(key)
    if _IDENTIFIER.match(key):
        return f"{path}.{key}"
    return f"{path}[{key!r}]"


def _collect_strings(value: Any, path: str, out: list[tuple[str, str]]) -> None:
    if isinstance(value, str):
        out.append((path, value))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _collect_strings(item, _child_path(path, key), out)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _collect_strings(item, _child_path(path, index), out)


def _rebuild(value: Any, replaced: Iterable[str | None]) -> Any:
    # Same traversal order as _collect_strings.
    iterator = iter(replaced)

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return next(iterator)
        if isinstance(node, Mapping):
            return {key: walk(item) for key, item in node.items()}
        if isinstance(node, list | tuple):
            return [walk(item) for item in node]
        return node

    return walk(value)


# --- the process's scanner ------------------------------------------------------------------

_lock = threading.Lock()
_scanner: PiiScanner | None = None


def get_scanner() -> PiiScanner:
    """The process's scanner, built on first use from settings (and rebuilt if the
    settings it depends on change)."""
    global _scanner
    config = ScannerConfig.from_settings()
    scanner = _scanner
    if scanner is not None and scanner.config == config:
        return scanner
    with _lock:
        if _scanner is None or _scanner.config != config:
            _scanner = PiiScanner(config)
        return _scanner


def _failure(exc: BaseException) -> str:
    # The message of an engine error can quote the text (e.g. Presidio's "Did not find
    # word '...'"), so neither the log nor the result carries it: type and frames only.
    logger.error(
        "PII scan failed with %s; blocked. Traceback (message omitted):\n%s",
        type(exc).__name__,
        "".join(traceback.format_tb(exc.__traceback__)),
    )
    return f"PII scan failed ({type(exc).__name__}); the content was blocked."


def scan(
    text: str,
    direction: str,
    policy: PiiPolicy | None = None,
    *,
    scanner: PiiScanner | None = None,
) -> ScanResult:
    """Scan ``text`` going in ``direction`` (one of ``PII_DIRECTIONS``) under ``policy``
    (``DEFAULT_PII_POLICY`` when ``None``).

    Never raises: any failure (engine error, bad direction, not a str) gives action
    ``block``, no text and an ``error`` naming the error type (fail closed).
    """
    try:
        active = scanner or get_scanner()
        return active.scan(text, direction, DEFAULT_PII_POLICY if policy is None else policy)
    except Exception as exc:  # noqa: BLE001 - fail closed on anything
        return ScanResult(findings=(), text_out=None, action="block", error=_failure(exc))


def scan_data(
    value: Any,
    direction: str,
    policy: PiiPolicy | None = None,
    *,
    scanner: PiiScanner | None = None,
) -> DataScanResult:
    """Scan JSON-like ``value`` (dicts, lists, strings, other scalars): every string value
    is scanned, keys and non-string scalars are kept. Returns the transformed structure,
    the findings with their JSON paths, and the strongest action. Fails closed like
    ``scan``: any error gives action ``block``, ``value_out`` ``None`` and an ``error``.
    """
    try:
        active = scanner or get_scanner()
        return active.scan_data(value, direction, DEFAULT_PII_POLICY if policy is None else policy)
    except Exception as exc:  # noqa: BLE001 - fail closed on anything
        return DataScanResult(value_out=None, findings=(), action="block", error=_failure(exc))
