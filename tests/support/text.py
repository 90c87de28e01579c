"""Comparing recognized text with the truth."""

from __future__ import annotations

import re
import unicodedata


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)  # page markers
    text = re.sub(r"^#+\s*", "", text, flags=re.M)  # heading marks
    return " ".join(text.split())


def character_error_rate(reference: str, hypothesis: str) -> float:
    from rapidfuzz.distance import Levenshtein

    ref, hyp = normalize(reference), normalize(hypothesis)
    return Levenshtein.distance(ref, hyp) / max(1, len(ref))
