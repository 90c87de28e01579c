"""GLM-OCR request conventions: prompts, resizing, repetition guard, extraction parsing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workers.engines import glmocr
from workers.engines.types import RecognitionTask

# -- prompts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "prompt"),
    [
        (RecognitionTask.TEXT, "Text Recognition:"),
        (RecognitionTask.FORMULA, "Formula Recognition:"),
        (RecognitionTask.TABLE, "Table Recognition:"),
    ],
)
def test_task_prompts(task: RecognitionTask, prompt: str) -> None:
    assert glmocr.task_prompt(task) == prompt


@pytest.mark.parametrize("task", [RecognitionTask.SKIP, RecognitionTask.ABANDON])
def test_skip_and_abandon_are_never_prompted(task: RecognitionTask) -> None:
    with pytest.raises(ValueError):
        glmocr.task_prompt(task)


def test_extraction_prompt_is_prefix_and_emptied_template() -> None:
    template = '{"name": "x", "address": {"city": 3}, "items": [{"sku": "a"}, {"sku": "b"}]}'
    prompt = glmocr.task_prompt(RecognitionTask.TEXT, template)
    assert prompt.startswith("请按下列JSON格式输出图中信息:\n{")
    body = json.loads(prompt[len(glmocr.EXTRACTION_PREFIX) :])
    assert body == {"name": "", "address": {"city": ""}, "items": [{"sku": ""}]}
    assert '\n    "name": ""' in prompt  # four-space indent, as in GLM-OCR's examples


@pytest.mark.parametrize("template", ["not json", "[1, 2]", '"text"'])
def test_bad_template_is_rejected(template: str) -> None:
    with pytest.raises(glmocr.TemplateError):
        glmocr.task_prompt(RecognitionTask.TEXT, template)


def test_chat_prompt_matches_glm_format() -> None:
    assert glmocr.chat_prompt("Text Recognition:") == (
        "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>"
        "Text Recognition:<|assistant|>\n"
    )


# -- resizing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width"),
    [(1, 1), (10, 3000), (3000, 10), (28, 28), (100, 200), (1000, 1000), (4000, 3000)],
)
def test_smart_resize_respects_grid_and_budget(height: int, width: int) -> None:
    min_pixels, max_pixels = 112 * 112, 28 * 28 * 1280
    h, w = glmocr.smart_resize(height, width, min_pixels=min_pixels, max_pixels=max_pixels)
    assert h % 28 == 0 and w % 28 == 0
    assert h >= 28 and w >= 28
    assert h * w <= max_pixels
    if height * width >= min_pixels and max(height, width) / min(height, width) < 20:
        assert h * w >= min_pixels * 0.5


def test_smart_resize_keeps_aspect_ratio_roughly() -> None:
    h, w = glmocr.smart_resize(500, 2000, min_pixels=112 * 112, max_pixels=28 * 28 * 256)
    assert abs((w / h) - 4) < 0.5


def test_smart_resize_small_image_grows_to_min() -> None:
    h, w = glmocr.smart_resize(20, 40, min_pixels=112 * 112, max_pixels=10**7)
    assert h * w >= 112 * 112


def test_prepare_image_converts_bgr_to_rgb_and_resizes() -> None:
    image = np.zeros((30, 90, 3), dtype=np.uint8)
    image[:, :, 0] = 255  # blue in BGR
    picture = glmocr.prepare_image(image, min_pixels=28 * 28, max_pixels=28 * 28 * 16)
    assert picture.mode == "RGB"
    assert picture.size[0] % 28 == 0 and picture.size[1] % 28 == 0
    r, _g, b = picture.getpixel((5, 5))
    assert b > 200 and r < 50


def test_prepare_image_pads_extremely_thin_crops() -> None:
    image = np.zeros((2, 1000, 3), dtype=np.uint8)
    picture = glmocr.prepare_image(image, min_pixels=28 * 28, max_pixels=28 * 28 * 64)
    width, height = picture.size
    assert max(width, height) / min(width, height) <= glmocr.MAX_ASPECT_RATIO


def test_prepare_image_rejects_empty() -> None:
    with pytest.raises(ValueError):
        glmocr.prepare_image(np.zeros((0, 5, 3), np.uint8), min_pixels=784, max_pixels=7840)


# -- repetition guard ---------------------------------------------------------------------


def test_guard_leaves_normal_text_alone() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 2 + "Then it rests."
    assert glmocr.find_runaway(text, window=48, max_repeats=8) is None


def test_guard_leaves_short_legit_repeats_alone() -> None:
    text = "Contents ........ 3\n| --- | --- | --- |\n0 0 0 0 0"
    assert glmocr.find_runaway(text, window=48, max_repeats=8) is None


def test_guard_cuts_runaway_tail() -> None:
    text = "Intro line.\n" + "abc def " * 40
    cut, was_cut = glmocr.guard_repetition(text, window=48, max_repeats=8)
    assert was_cut
    assert cut == "Intro line.\nabc def"


def test_guard_handles_partial_last_unit() -> None:
    text = "Start: " + "xyz123 " * 30 + "xyz"
    runaway = glmocr.find_runaway(text, window=48, max_repeats=8)
    assert runaway is not None
    assert set(runaway.unit) <= set("xyz123 ")
    assert glmocr.cut_runaway(text, runaway).startswith("Start:")


def test_guard_single_character_runaway() -> None:
    text = "Total: 12" + "0" * 200
    cut, was_cut = glmocr.guard_repetition(text, window=48, max_repeats=8)
    assert was_cut and cut == "Total: 120"


def test_guard_long_unit_needs_many_repeats() -> None:
    unit = "A longer sentence that repeats itself. "  # 39 chars
    assert glmocr.find_runaway("x" + unit * 7, window=48, max_repeats=8) is None
    assert glmocr.find_runaway("x" + unit * 9, window=48, max_repeats=8) is not None


# -- extraction parsing -------------------------------------------------------------------

TEMPLATE = {"name": "", "address": {"city": "", "zip": ""}, "items": [{"sku": ""}]}


def test_extraction_parses_fenced_answer() -> None:
    answer = (
        '```json\n{"name": "Ada", "address": {"city": "London", "zip": "N1"}, "items": []}\n```'
    )
    parsed = glmocr.parse_extraction(answer, TEMPLATE)
    assert parsed.ok
    assert parsed.data == {
        "name": "Ada",
        "address": {"city": "London", "zip": "N1"},
        "items": [],
    }


def test_extraction_missing_keys_become_null_and_extra_keys_drop() -> None:
    answer = (
        'Here: {"name": "Ada", "age": 36, "address": {"city": "Paris"}, '
        '"items": [{"sku": 1, "x": 2}]}'
    )
    parsed = glmocr.parse_extraction(answer, TEMPLATE)
    assert parsed.ok
    assert parsed.data == {
        "name": "Ada",
        "address": {"city": "Paris", "zip": None},
        "items": [{"sku": 1}],
    }


def test_extraction_tolerates_trailing_commas() -> None:
    parsed = glmocr.parse_extraction('{"name": "Ada",}', {"name": ""})
    assert parsed.ok and parsed.data == {"name": "Ada"}


@pytest.mark.parametrize("answer", ["no json here", '{"name": "Ada"', '{"name": Ada}', "[1, 2]"])
def test_extraction_invalid_answer_is_error_with_raw(answer: str) -> None:
    parsed = glmocr.parse_extraction(answer, TEMPLATE)
    assert not parsed.ok
    assert parsed.data is None
    assert parsed.raw == answer
    assert parsed.error


def test_judge_marks_truncation_and_extraction() -> None:
    truncated = glmocr.judge(
        "k",
        text="abc",
        finish_reason="length",
        prompt_tokens=10,
        completion_tokens=5,
        error=None,
        attempts=1,
        template=None,
    )
    assert not truncated.ok and truncated.truncated and "length" in (truncated.error or "")
    extracted = glmocr.judge(
        "k",
        text='{"name": "Ada", "zzz": 1}',
        finish_reason="stop",
        prompt_tokens=10,
        completion_tokens=5,
        error=None,
        attempts=1,
        template={"name": "", "city": ""},
    )
    assert extracted.ok
    assert json.loads(extracted.content) == {"name": "Ada", "city": None}
    assert extracted.extra["raw"] == '{"name": "Ada", "zzz": 1}'


def test_retry_sampling_is_seeded_by_key() -> None:
    assert glmocr.retry_sampling("a") == glmocr.retry_sampling("a")
    assert glmocr.retry_sampling("a")["seed"] != glmocr.retry_sampling("b")["seed"]
    assert glmocr.retry_sampling("a")["temperature"] > 0
