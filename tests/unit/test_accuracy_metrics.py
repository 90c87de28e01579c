import pytest

from benchmarks.accuracy_metrics import bag_of_words, bow_f1, cer, normalize_text, wer


def test_normalize_collapses_whitespace_and_nfc() -> None:
    assert normalize_text("  a\n\tb   c ") == "a b c"
    assert normalize_text("e\u0301") == "\u00e9"


def test_normalize_drops_space_between_cjk() -> None:
    assert normalize_text("中文\n中文 abc 中") == "中文中文 abc 中"


def test_cer_identical_and_whitespace_insensitive() -> None:
    assert cer("hello world", "hello\nworld") == 0.0
    assert cer("", "") == 0.0
    assert cer("", "x") == 1.0


def test_cer_counts_edits() -> None:
    assert cer("abcd", "abed") == pytest.approx(0.25)
    assert cer("abcd", "") == 1.0


def test_wer() -> None:
    assert wer("the cat sat", "the cat sat") == 0.0
    assert wer("the cat sat", "the dog sat") == pytest.approx(1 / 3)
    assert wer("the cat sat", "the cat") == pytest.approx(1 / 3)


def test_wer_cjk_counts_characters() -> None:
    assert wer("中文字", "中大字") == pytest.approx(1 / 3)


def test_bag_of_words_is_order_insensitive() -> None:
    assert bow_f1("alpha beta gamma", "gamma alpha beta") == 1.0
    assert cer("alpha beta gamma", "gamma alpha beta") > 0


def test_bag_of_words_precision_recall() -> None:
    b = bag_of_words("a b c d", "a b x")
    assert b.precision == pytest.approx(2 / 3)
    assert b.recall == pytest.approx(2 / 4)
    assert b.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_bag_of_words_ignores_case_and_punctuation() -> None:
    assert bow_f1("Hello, world.", "hello world") == 1.0


def test_bag_of_words_empty() -> None:
    assert bow_f1("", "") == 1.0
    assert bow_f1("a", "") == 0.0
