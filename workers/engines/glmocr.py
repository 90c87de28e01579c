"""GLM-OCR's request conventions, shared by the vllm and openai recognizers.

Pure functions only (no model, no network): the task prompts the model was trained on, the
image resizing to its pixel budget, the raw chat prompt, the repetition guard and the
tolerant parsing of information-extraction answers. Kept apart so both engines send exactly
the same requests and judge the answers the same way.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.engines.types import RecognitionRequest, RecognitionResult, RecognitionTask

if TYPE_CHECKING:
    from PIL import Image

# The prompts GLM-OCR was trained with for document parsing (see its model card and SDK
# config, task_prompt_mapping).
TASK_PROMPTS: dict[RecognitionTask, str] = {
    RecognitionTask.TEXT: "Text Recognition:",
    RecognitionTask.FORMULA: "Formula Recognition:",
    RecognitionTask.TABLE: "Table Recognition:",
}
# Information extraction: this fixed Chinese lead ("output the image's information in the
# following JSON format:") followed by a JSON template whose values are empty.
EXTRACTION_PREFIX = "请按下列JSON格式输出图中信息:\n"

# The vision tower works on 14 px patches merged 2 x 2: image sides are multiples of 28.
IMAGE_FACTOR = 28
# Processors refuse images more elongated than this; thinner crops are padded.
MAX_ASPECT_RATIO = 200

# GLM's chat format, as the model's chat template renders one user turn with one image.
CHAT_PREFIX = "[gMASK]<sop><|user|>\n"
IMAGE_PLACEHOLDER = "<|begin_of_image|><|image|><|end_of_image|>"
ASSISTANT_TURN = "<|assistant|>\n"


class TemplateError(ValueError):
    """An extraction template that is not a JSON object."""


# -- prompts ------------------------------------------------------------------------------


def normalize_template(template: str | dict[str, Any]) -> dict[str, Any]:
    """The template as a JSON object; raises TemplateError if it is not one."""
    if isinstance(template, dict):
        return template
    try:
        value = json.loads(template)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"extraction template is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise TemplateError("extraction template must be a JSON object")
    return value


def _empty_values(value: Any) -> Any:
    """The template with every leaf emptied, the form the model was trained to fill."""
    if isinstance(value, dict):
        return {str(k): _empty_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_empty_values(v) for v in value[:1]]
    return ""


def task_prompt(task: RecognitionTask, template: str | dict[str, Any] | None = None) -> str:
    """The text half of the request for one region.

    A template turns any recognition into information extraction. SKIP and ABANDON regions
    are never sent to the model: asking for them is a caller bug.
    """
    if template is not None:
        body = json.dumps(_empty_values(normalize_template(template)), ensure_ascii=False, indent=4)
        return EXTRACTION_PREFIX + body
    try:
        return TASK_PROMPTS[RecognitionTask(task)]
    except KeyError:
        raise ValueError(f"task {task!s} is not sent to the recognizer") from None


def chat_prompt(text: str) -> str:
    """The full prompt string for the raw-LLM path (one image, then the task text)."""
    return f"{CHAT_PREFIX}{IMAGE_PLACEHOLDER}{text}{ASSISTANT_TURN}"


# -- images -------------------------------------------------------------------------------


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = IMAGE_FACTOR,
    min_pixels: int = 112 * 112,
    max_pixels: int = 28 * 28 * 1280,
) -> tuple[int, int]:
    """Target (height, width): multiples of `factor`, area within [min_pixels, max_pixels].

    Keeps the aspect ratio as closely as the grid allows, so the processor downstream does
    no second resize, and caps the pixels so one large crop cannot overflow the encoder
    cache.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"empty image {width}x{height}")
    if max_pixels < factor * factor:
        raise ValueError(f"max_pixels {max_pixels} is below one {factor}x{factor} cell")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
        # A side clamped up to one cell can push the area over again: shrink the other.
        while h * w > max_pixels and (h > factor or w > factor):
            if h >= w:
                h -= factor
            else:
                w -= factor
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def _pad_to_aspect(image: np.ndarray, max_ratio: float = MAX_ASPECT_RATIO) -> np.ndarray:
    """Pads (white) the short side of a crop that is too elongated for the processor."""
    height, width = image.shape[:2]
    if max(height, width) <= max_ratio * min(height, width):
        return image
    pad: list[tuple[int, int]] = [(0, 0)] * image.ndim
    if height < width:
        pad[0] = (0, math.ceil(width / max_ratio) - height)
    else:
        pad[1] = (0, math.ceil(height / max_ratio) - width)
    return np.pad(image, pad, constant_values=255)


def prepare_image(image_bgr: np.ndarray, *, min_pixels: int, max_pixels: int) -> Image.Image:
    """A BGR crop as an RGB PIL image resized to the model's pixel budget."""
    from PIL import Image

    array = np.asarray(image_bgr)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or 0 in array.shape[:2]:
        raise ValueError(f"expected an H x W x 3 image, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    rgb = np.ascontiguousarray(_pad_to_aspect(array[:, :, 2::-1]))
    height, width = rgb.shape[:2]
    new_h, new_w = smart_resize(height, width, min_pixels=min_pixels, max_pixels=max_pixels)
    picture = Image.fromarray(rgb, mode="RGB")
    if (new_h, new_w) != (height, width):
        picture = picture.resize((new_w, new_h), Image.Resampling.BICUBIC)
    return picture


# -- the repetition guard -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegionPrompt:
    """What both GLM-OCR engines send for one region: the prompt and the resized image."""

    text: str
    image: Image.Image
    template: dict[str, Any] | None


def region_prompt(request: RecognitionRequest, *, min_pixels: int, max_pixels: int) -> RegionPrompt:
    """The prompt text (the task's, or the extraction template's) and the crop resized to the
    model's pixel budget. Raises ValueError or TypeError for a region that cannot be sent."""
    template = normalize_template(request.template) if request.template is not None else None
    return RegionPrompt(
        text=task_prompt(request.task, template),
        image=prepare_image(request.image, min_pixels=min_pixels, max_pixels=max_pixels),
        template=template,
    )


@dataclass(frozen=True, slots=True)
class Runaway:
    """A repeated tail: `unit` repeated `repeats` times from `start` to the end."""

    start: int
    unit: str
    repeats: float


def find_runaway(text: str, *, window: int, max_repeats: int) -> Runaway | None:
    """The runaway repeated tail of `text`, if there is one.

    A tail is a runaway when a unit of at most `window` characters repeats at least
    `max_repeats` times in a row at the end and the repeated stretch is at least
    2 x `window` characters long. The length floor keeps legitimate short repeats (a dot
    leader, a table rule, "0 0 0") from tripping it. The shortest such unit is reported.
    """
    n = len(text)
    if window <= 0 or max_repeats <= 1 or n < 2:
        return None
    floor = 2 * window
    for period in range(1, min(window, n // 2) + 1):
        need = max(period * max_repeats, floor)
        if need > n:
            continue
        # Count trailing positions that equal the character one period earlier.
        run = 0
        i = n - 1
        while i >= period and text[i] == text[i - period]:
            run += 1
            i -= 1
        span = run + period
        if span >= need:
            start = n - span
            return Runaway(start=start, unit=text[start : start + period], repeats=span / period)
    return None


def cut_runaway(text: str, runaway: Runaway) -> str:
    """The text with the runaway tail reduced to one occurrence of its unit."""
    return text[: runaway.start + len(runaway.unit)].rstrip()


def guard_repetition(text: str, *, window: int, max_repeats: int) -> tuple[str, bool]:
    """(text, cut): the text with any runaway tail cut, and whether it was cut."""
    runaway = find_runaway(text, window=window, max_repeats=max_repeats)
    if runaway is None:
        return text, False
    return cut_runaway(text, runaway), True


# -- information extraction ---------------------------------------------------------------


@dataclass(slots=True)
class Extraction:
    """The model's answer to an extraction prompt, checked against the template."""

    data: dict[str, Any] | None
    raw: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def _conform(value: Any, template: Any) -> Any:
    """`value` shaped like `template`: missing keys null, extra keys dropped."""
    if isinstance(template, dict):
        if not isinstance(value, dict):
            return None if value in (None, "") else _conform({}, template)
        return {key: _conform(value.get(key), sub) for key, sub in template.items()}
    if isinstance(template, list):
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        if template and isinstance(template[0], dict | list):
            return [_conform(item, template[0]) for item in items]
        return [item for item in items if not isinstance(item, dict | list)]
    if isinstance(value, dict | list):
        # A scalar was asked for: keep the structure as compact JSON text rather than lose it.
        return json.dumps(value, ensure_ascii=False)
    return value


def parse_extraction(text: str, template: str | dict[str, Any]) -> Extraction:
    """Parses the outermost {...} of `text` and conforms it to `template`.

    Tolerates code fences, chatter around the object and trailing commas. Keys the template
    has and the answer lacks become null; keys the template lacks are dropped. An answer
    with no parsable object is an error, with the raw text kept.
    """
    shape = normalize_template(template)
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return Extraction(data=None, raw=text, error="no JSON object in the answer")
    snippet = text[start : end + 1]
    value: Any
    try:
        value = json.loads(snippet)
    except json.JSONDecodeError:
        try:
            value = json.loads(_TRAILING_COMMA.sub(r"\1", snippet))
        except json.JSONDecodeError as exc:
            return Extraction(data=None, raw=text, error=f"invalid JSON in the answer: {exc}")
    if not isinstance(value, dict):
        return Extraction(data=None, raw=text, error="the answer is not a JSON object")
    return Extraction(data=_conform(value, shape), raw=text)


# -- judging an answer --------------------------------------------------------------------

# Finish reasons that mean the answer is incomplete: the region is tried once more, then fails.
TRUNCATING = frozenset({"length", "repetition", "abort"})


def judge(
    key: str,
    *,
    text: str,
    finish_reason: str | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    error: str | None,
    attempts: int,
    template: dict[str, Any] | None,
) -> RecognitionResult:
    """The result of one attempt: ok only if complete and, for extraction, parsable."""
    result = RecognitionResult(
        key=key,
        content=text,
        ok=error is None,
        error=error,
        finish_reason=finish_reason,
        truncated=finish_reason in TRUNCATING,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        attempts=attempts,
    )
    if result.ok and result.truncated:
        result.ok = False
        result.error = f"answer truncated ({finish_reason})"
    if result.ok and template is not None:
        parsed = parse_extraction(text, template)
        result.extra["raw"] = parsed.raw
        if parsed.ok:
            result.extra["fields"] = parsed.data
            result.content = json.dumps(parsed.data, ensure_ascii=False)
        else:
            result.ok = False
            result.error = parsed.error
    return result


def after_retry(first: RecognitionResult, second: RecognitionResult) -> RecognitionResult:
    """The second attempt's result, remembering what went wrong the first time."""
    second.attempts = first.attempts + 1
    second.extra["first_attempt"] = {
        "finish_reason": first.finish_reason,
        "error": first.error,
        "completion_tokens": first.completion_tokens,
    }
    return second


def retry_sampling(key: str) -> dict[str, Any]:
    """Sampling for the second try: the GLM-OCR SDK's sampling defaults, seeded by the key.

    Greedy decoding that looped or broke once will do so again; some temperature and a
    repetition penalty usually get past it, and the seed keeps redeliveries reproducible.
    """
    return {
        "temperature": 0.8,
        "top_p": 0.9,
        "top_k": 50,
        "repetition_penalty": 1.1,
        "seed": zlib.crc32(key.encode()),
    }
