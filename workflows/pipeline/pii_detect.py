"""Finding personal data in free text, offline: Presidio's pattern recognizers on a blank spaCy.

`detect(text)` returns the spans of personal data in a text; `pii.py` turns them into reversible
placeholders. Choices, and why:

* **Engine.** Presidio's AnalyzerEngine with a spaCy pipeline made by ``spacy.blank("en")``: a
  tokenizer only, so nothing is downloaded and no model is loaded. The engine is built once per
  process, lazily and under a lock (the Celery pool is threaded), and then only read.
  Measured on the development machine: about 1 s to build (most of it importing spaCy and
  Presidio, which importing this module does not do), then about 1 ms for a sentence, 4 ms for
  a paragraph with eight entities and 0.13 s for 8,000 characters of prose.
* **No network.** Presidio's e-mail recognizer checks the domain with ``tldextract``, whose
  module-level extractor fetches the public-suffix list over HTTP on first use. We replace that
  recognizer's check with a ``TLDExtract`` that has no URLs to fetch and no cache directory, so it
  reads the snapshot bundled with the package and never opens a socket (a test guards this).
* **Context without a lemmatizer.** Presidio raises a score when a context word ("phone", "ssn",
  "iban") stands just before a match; it compares lemmas, which a blank pipeline leaves empty,
  so we use the lower-cased token instead, and match context as whole words ("sin" must not
  match "business").
* **Entities.** E-mail; phone numbers (libphonenumber, national formats of US GB DE FR IL IN
  CA BR and any number written with a leading +); credit cards (Luhn-checked); IBAN
  (mod-97-checked); IPv4/IPv6; bitcoin addresses (checksummed); US SSN and ITIN; UK NINO and
  driving licence; Spanish NIF/NIE, Italian fiscal code, Finnish identity code (distinctive
  letter-and-digit shapes, most with a check character). **Only with a context word** in the
  40 characters before them (`_NEEDS_CONTEXT`): ids that are bare digit runs guarded by nothing
  but a check digit, which about one order or tracking number in ten would pass (UK NHS, US
  bank account and passport, UK passport, Canadian SIN, Australian TFN/Medicare, Indian
  Aadhaar, Polish PESEL, Swedish personnummer, South African id), letter-and-digit shapes with
  no check at all (Indian PAN, Singapore NRIC/FIN), and a phone number written as a bare digit
  run (nine in ten 10-digit order numbers are valid North American numbers). Person names:
  see below. Card numbers are Luhn-checked and nothing more, so about one 13-19 digit order
  number in fifteen is still taken for a card: it is replaced and restored like any other
  value, which costs the model that number, not the reviewer.
* **Left out on purpose.** URL (it matches the domain inside every e-mail, and a company web
  address is not personal), DATE_TIME (every delivery date would vanish from the prompt), NRP
  and LOCATION (they need NER, which a blank pipeline does not have; with patterns alone they
  would either find nothing or mangle ordinary words), UUID and MAC (system ids, not people),
  US driver licence (its pattern matches most product codes), postcodes and vehicle plates.
* **Threshold 0.4.** Presidio's phone recognizer scores 0.4 (libphonenumber has already
  validated the number); checksum-validated matches score 1.0; weak patterns (a bare nine-digit
  number as an SSN scores 0.05) only reach 0.4 with a context word.
* **Person names.** Without NER we only take names in positions that announce one, and only
  capitalised words: "my name is Jane Doe", "Mr/Mrs/Ms/Mx/Miss/Dr/Prof Smith", "Dear Jane" at
  the start of a line, a line starting "Name: Jane Doe", and a sign-off ("Kind regards,\\nJane
  Doe", "Thanks, Jane") where the name ends its line.
  Greetings to roles ("Dear Customer", "Dear Support Team") are not names. Free-standing names
  ("Ann called twice") are missed: a conservative recogniser mangles less and misses more, and
  the form's `pii: true` fields cover the names a workflow knows about.
* **Overlaps.** Spans never overlap in the result: the higher score wins, then the longer span,
  then the earlier one, so the redacted text is the same for the same input.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import regex

logger = logging.getLogger(__name__)

SCORE_THRESHOLD = 0.4
PERSON_SCORE = 0.6
LANGUAGE = "en"
# How far before a match a required context word may stand (characters).
CONTEXT_WINDOW = 40


@dataclass(frozen=True)
class Detected:
    entity_type: str
    start: int
    end: int
    score: float = 1.0

    def text(self, source: str) -> str:
        return source[self.start : self.end]


def detect(text: str) -> list[Detected]:
    """Personal data in ``text``: non-overlapping spans sorted by position."""
    if not text or not text.strip():
        return []
    results = analyzer().analyze(text=text, language=LANGUAGE, score_threshold=SCORE_THRESHOLD)
    found = [
        Detected(r.entity_type, r.start, r.end, round(r.score, 4))
        for r in results
        if r.end > r.start and _has_context(text, r)
    ]
    return _without_overlaps(found)


def entity_types() -> list[str]:
    """Every entity type `detect` can return."""
    return sorted({e for r in analyzer().registry.recognizers for e in r.supported_entities})


# --- building the engine once per process ------------------------------------------------------

_lock = threading.Lock()
_engine: Any = None
load_seconds: float | None = None  # how long the first build took, for the ops page and tests


def analyzer():
    """The process's AnalyzerEngine, built on first use (double-checked under a lock)."""
    global _engine, load_seconds
    if _engine is None:
        with _lock:
            if _engine is None:
                started = time.perf_counter()
                engine = _build()
                load_seconds = time.perf_counter() - started
                logger.info("PII analyzer ready in %.2fs", load_seconds)
                _engine = engine
    return _engine


def _build():
    # Imported here so that importing the pipeline (every web process, every test collection)
    # does not pay for spaCy and Presidio until a text is actually checked.
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    # Presidio logs every analyze() call at INFO ("Fetching all recognizers ..."); a worker
    # checking every prompt does not need that in its log.
    logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
    nlp_engine = _blank_spacy_engine()
    nlp_engine.load()
    registry = RecognizerRegistry(supported_languages=[LANGUAGE])
    for recognizer in _recognizers():
        registry.add_recognizer(recognizer)
    engine = AnalyzerEngine(
        registry=registry,
        nlp_engine=nlp_engine,
        supported_languages=[LANGUAGE],
        default_score_threshold=SCORE_THRESHOLD,
        context_aware_enhancer=LemmaContextAwareEnhancer(context_matching_mode="whole_word"),
    )
    # Recognizers load some data on first use (phone metadata, the public-suffix snapshot); do
    # that here, under the lock, rather than in whichever threads happen to come first.
    engine.analyze(text="Warm-up: jo@example.com, +44 20 7946 0958, 192.0.2.1.", language=LANGUAGE)
    return engine


def _blank_spacy_engine():
    import spacy
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine

    class BlankSpacyNlpEngine(SpacyNlpEngine):
        """A tokenizer-only spaCy pipeline: no model to download, no NER, no lemmas."""

        def load(self) -> None:
            self.nlp = {LANGUAGE: spacy.blank(LANGUAGE)}

        def _doc_to_nlp_artifact(self, doc, language):
            artifacts = super()._doc_to_nlp_artifact(doc, language)
            # Context words are compared with lemmas; without a lemmatizer use the word itself.
            artifacts.lemmas = [token.lemma_ or token.lower_ for token in doc]
            artifacts.keywords = artifacts.set_keywords(self, artifacts.lemmas, language)
            return artifacts

    return BlankSpacyNlpEngine(
        models=[{"lang_code": LANGUAGE, "model_name": "blank"}],
        ner_model_configuration=NerModelConfiguration(),
    )


# --- recognizers ------------------------------------------------------------------------------

# Recognizers whose matches are too common in ordinary business text to take on shape alone
# (see the module docstring); each is kept only when one of its words stands just before it.
_NEEDS_CONTEXT: dict[str, tuple[str, tuple[str, ...]]] = {
    # entity type: (Presidio recognizer class, words of which one must stand before the match)
    "UK_NHS": ("NhsRecognizer", ("nhs", "health service", "health number")),
    "US_BANK_NUMBER": ("UsBankRecognizer", ("account", "acct", "bank", "checking", "savings", "routing")),
    "US_PASSPORT": ("UsPassportRecognizer", ("passport",)),
    "UK_PASSPORT": ("UkPassportRecognizer", ("passport",)),
    "CA_SIN": ("CaSinRecognizer", ("sin", "social insurance")),
    "AU_TFN": ("AuTfnRecognizer", ("tfn", "tax file")),
    "AU_MEDICARE": ("AuMedicareRecognizer", ("medicare",)),
    "IN_AADHAAR": ("InAadhaarRecognizer", ("aadhaar", "aadhar", "uidai")),
    "IN_PAN": ("InPanRecognizer", ("pan", "permanent account")),
    "PL_PESEL": ("PlPeselRecognizer", ("pesel",)),
    "SE_PERSONNUMMER": ("SePersonnummerRecognizer", ("personnummer", "personal identity number")),
    "SG_NRIC_FIN": ("SgFinRecognizer", ("nric", "fin")),
    "ZA_ID_NUMBER": ("ZaIdNumberRecognizer", ("id number", "identity number", "rsa id", "sa id")),
}
_PHONE_CONTEXT = ("phone", "tel", "telephone", "mobile", "cell", "call", "ring", "text", "sms",
                  "fax", "whatsapp", "contact", "reach")


def _required_context(text: str, result) -> tuple[str, ...]:
    if result.entity_type == "PHONE_NUMBER":
        return _PHONE_CONTEXT if text[result.start : result.end].isdigit() else ()
    return _NEEDS_CONTEXT.get(result.entity_type, ("", ()))[1]


def _has_context(text: str, result) -> bool:
    words = _required_context(text, result)
    if not words:
        return True
    before = text[max(0, result.start - CONTEXT_WINDOW) : result.start].casefold()
    return any(regex.search(r"(?<!\w)" + regex.escape(w) + r"(?!\w)", before) for w in words)


def _recognizers() -> list:
    from presidio_analyzer import predefined_recognizers as p

    en = {"supported_language": LANGUAGE}
    recognizers = [
        _offline_email_recognizer(),
        p.PhoneRecognizer(**en),
        p.CreditCardRecognizer(**en),
        p.IbanRecognizer(**en),
        p.IpRecognizer(**en),
        p.CryptoRecognizer(**en),
        p.UsSsnRecognizer(**en),
        p.UsItinRecognizer(**en),
        p.UkNinoRecognizer(**en),
        p.UkDrivingLicenceRecognizer(**en),
        p.EsNifRecognizer(**en),
        p.EsNieRecognizer(**en),
        p.ItFiscalCodeRecognizer(**en),
        p.FiPersonalIdentityCodeRecognizer(**en),
        _person_name_recognizer(),
    ]
    for class_name, words in _NEEDS_CONTEXT.values():
        recognizers.append(getattr(p, class_name)(context=list(words), **en))
    return recognizers


def offline_tld_extractor():
    """A TLDExtract that reads only the public-suffix snapshot shipped with tldextract."""
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


def _offline_email_recognizer():
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    extract = offline_tld_extractor()

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return extract(pattern_text).fqdn != ""

    return OfflineEmailRecognizer(supported_language=LANGUAGE)


# --- person names -----------------------------------------------------------------------------

# A capitalised word ("Ann", "O'Brien", "McDonald", "Zoë", "Smith-Jones"), then up to two more
# on the same line; initials may come first ("J. R. Hartley") or in the middle.
_WORD = r"\p{Lu}(?:[\p{L}'’-]*\p{Ll})"
_NAME = rf"(?P<name>(?:\p{{Lu}}\.[ \t]*){{0,2}}{_WORD}(?:[ \t]+(?:\p{{Lu}}\.[ \t]+)?{_WORD}){{0,2}})"
_TITLES = r"(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof)"
_SIGN_OFF = (
    r"(?i:kind regards|best regards|warm regards|regards|sincerely|yours sincerely|yours faithfully|"
    r"yours truly|best wishes|many thanks|thanks|thank you|cheers|best)"
)
_NAME_PATTERNS = [
    # "my name is Jane Doe", "I'm called Jo", "signed: J. Doe"
    rf"(?i:\bmy name is|\bmy name's|\bi am called|\bi'm called|\bsigned(?: by)?:?)[ \t]+{_NAME}",
    # "Name: Jane Doe" starting a line (not "Business name: Acme Bakery")
    rf"(?m:^[ \t]*)(?i:(?:full |customer |contact |your |my )?name)[ \t]*:[ \t]*{_NAME}",
    # "Mr Smith", "Dr. Jane Doe" (the title stays outside the placeholder)
    rf"\b{_TITLES}\.?[ \t]+{_NAME}",
    # "Dear Jane," at the start of a line
    rf"(?m:^[ \t]*)(?i:dear)[ \t]+(?!{_TITLES}\b){_NAME}",
    # "Kind regards,\nJane Doe" or "Thanks, Jane" ending the line
    rf"(?m:^[ \t]*){_SIGN_OFF}[ \t]*,?[ \t]*(?:\r?\n[ \t]*|[ \t]+){_NAME}[ \t]*[.!]?[ \t]*(?m:$)",
]
# Words that follow those cues without being a name ("Dear Customer", "Regards, The Team").
_NOT_NAMES = frozenset({
    "sir", "madam", "madame", "sirs", "customer", "customers", "client", "clients", "team",
    "support", "service", "services", "colleague", "colleagues", "friend", "friends", "all",
    "everyone", "valued", "member", "members", "manager", "managers", "department", "desk",
    "office", "the", "our", "your", "my", "a", "an", "this", "that", "hiring", "applicant",
    "applicants", "user", "users", "owner", "owners", "partner", "partners", "reader", "readers",
    "there", "here", "it", "is", "was", "not", "unknown", "none", "n/a", "again", "so", "for",
    "and", "in", "to", "of", "from", "at", "you", "me", "us", "them", "him", "her", "anyone",
    "someone", "somebody",
})


_COMPILED_NAME_PATTERNS = tuple(regex.compile(p) for p in _NAME_PATTERNS)


def _person_name_recognizer_class():
    from presidio_analyzer import LocalRecognizer, RecognizerResult

    class _PersonNameRecognizer(LocalRecognizer):
        """PERSON from cue phrases; see the module docstring for what it will and will not find."""

        def __init__(self):
            super().__init__(supported_entities=["PERSON"], supported_language=LANGUAGE, name="PersonNameRecognizer")

        def load(self) -> None:
            pass

        def analyze(self, text, entities, nlp_artifacts=None):
            spans = set()
            for pattern in _COMPILED_NAME_PATTERNS:
                for match in pattern.finditer(text):
                    start, end = match.span("name")
                    words = match.group("name").split()
                    while words and words[-1].casefold() in _NOT_NAMES:  # "Ann from Support"
                        words.pop()
                    if not words or words[0].casefold() in _NOT_NAMES:
                        continue
                    end = _end_of(text, start, words)
                    spans.add((start, end))
            return [
                RecognizerResult("PERSON", start, end, PERSON_SCORE,
                                 recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                                       RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})
                for start, end in sorted(spans)
            ]

    return _PersonNameRecognizer


def _end_of(text: str, start: int, words: list[str]) -> int:
    """Where the last kept word ends (the words were split on runs of blanks)."""
    position = start
    for word in words:
        position = text.index(word, position) + len(word)
    return position


def _person_name_recognizer():
    return _person_name_recognizer_class()()


# --- overlaps ---------------------------------------------------------------------------------


def _without_overlaps(found: list[Detected]) -> list[Detected]:
    kept: list[Detected] = []
    for candidate in sorted(found, key=lambda d: (-d.score, -(d.end - d.start), d.start, d.entity_type)):
        if all(candidate.end <= k.start or candidate.start >= k.end for k in kept):
            kept.append(candidate)
    return sorted(kept, key=lambda d: d.start)
