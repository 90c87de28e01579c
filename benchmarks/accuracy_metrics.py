"""Accuracy metrics for OCR output against ground truth: CER, WER and bag-of-words F1.

Texts are normalised first (NFC, whitespace collapsed) so that line breaks and spacing, which
differ legitimately between a text layer and an OCR engine, cost nothing. Whitespace between
two CJK characters is dropped, because CJK text has no spaces and a line break inside a
Chinese or Japanese paragraph is not a word boundary.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

_WS = re.compile(r"\s+")
# Han, Hiragana, Katakana, Hangul, CJK punctuation and full-width forms.
_CJK = (
    "\u3000-\u303f\u3040-\u309f\u30a0-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
)
_CJK_GAP = re.compile(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])")
_CJK_CHAR = re.compile(rf"[{_CJK}]")
_WORD = re.compile(r"\w+", re.UNICODE)


def normalize_text(text: str) -> str:
    """NFC, whitespace runs → one space, no space between two CJK characters, stripped."""
    text = unicodedata.normalize("NFC", text)
    text = _WS.sub(" ", text).strip()
    return _CJK_GAP.sub("", text)


def cer(ref: str, hyp: str) -> float:
    """Character error rate: Levenshtein distance / reference length (normalised texts).

    Can exceed 1.0 when the hypothesis is much longer than the reference. An empty reference
    gives 0.0 for an empty hypothesis and 1.0 otherwise.
    """
    r, h = normalize_text(ref), normalize_text(hyp)
    if not r:
        return 0.0 if not h else 1.0
    return Levenshtein.distance(r, h) / len(r)


def _words(text: str) -> list[str]:
    """Words for WER and bag-of-words: whitespace tokens; CJK characters count one each."""
    out: list[str] = []
    for token in normalize_text(text).split(" "):
        if not token:
            continue
        if _CJK_CHAR.search(token):
            # Split CJK runs into single characters, keep Latin runs inside them whole.
            out.extend(t for t in re.findall(rf"[{_CJK}]|[^{_CJK}]+", token) if t.strip())
        else:
            out.append(token)
    return out


def wer(ref: str, hyp: str) -> float:
    """Word error rate: Levenshtein distance over word sequences / reference word count."""
    r, h = _words(ref), _words(hyp)
    if not r:
        return 0.0 if not h else 1.0
    return Levenshtein.distance(r, h) / len(r)


@dataclass(frozen=True, slots=True)
class BagOfWords:
    precision: float
    recall: float
    f1: float


def _bag(text: str) -> Counter[str]:
    """Order-insensitive multiset of word tokens (case-folded, punctuation dropped)."""
    bag: Counter[str] = Counter()
    for token in _words(text):
        for word in _WORD.findall(token.casefold()):
            bag[word] += 1
    return bag


def bag_of_words(ref: str, hyp: str) -> BagOfWords:
    """Bag-of-words precision/recall/F1: insensitive to reading order, so a table read by
    column or a margin note placed elsewhere is not punished as it is by CER."""
    r, h = _bag(ref), _bag(hyp)
    nr, nh = sum(r.values()), sum(h.values())
    if nr == 0 and nh == 0:
        return BagOfWords(1.0, 1.0, 1.0)
    common = sum((r & h).values())
    precision = common / nh if nh else 0.0
    recall = common / nr if nr else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return BagOfWords(precision, recall, f1)


def bow_f1(ref: str, hyp: str) -> float:
    """Shorthand for bag_of_words(ref, hyp).f1."""
    return bag_of_words(ref, hyp).f1
