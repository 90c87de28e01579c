"""The web page at `/`, in Debian's headless Chromium (scripts/install-browser.sh) driven by
Selenium, against a real `pagemill api` process and the session's real workers, Postgres,
Redis and SeaweedFS: a key from `pagemill keys create`, files dropped and picked, progress
watched to the end, the result read beside each page image and its region boxes."""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.support import documents, services

pytestmark = pytest.mark.integration

PAGEMILL = str(Path(sys.executable).parent / "pagemill")
SAMPLES = services.ROOT / "samples"
# Text a hostile document carries in its text layer: it must show as text, never as markup.
HOSTILE = '<img src="x" onerror="document.title=\'pwned\'"> and <script>alert(1)</script>'
T = TypeVar("T")
READABLE = [
    (600 - 20 * i, f"Line {i} of a page that reads well, beside one that cannot be drawn.")
    for i in range(8)
]


@pytest.fixture(scope="module")
def base_url(
    stack_env: dict[str, str], stack_workers: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with services.api_server(stack_env, tmp_path_factory.mktemp("web-api") / "api.log") as url:
        yield url


@pytest.fixture(scope="module")
def key(stack_env: dict[str, str]) -> str:
    return services.cli_key(stack_env, "web", "web test")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium through its chromedriver (both from Debian)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "run scripts/install-browser.sh (make test does)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
        "--disable-gpu",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    browser.set_script_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()


def _wait(what: str, check: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Waits until `check` returns something truthy (a guard against hangs, not a check)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.2)


def _open(browser: Any, base_url: str) -> None:
    browser.get(base_url + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(base_url + "/")


def _sign_in(browser: Any, key: str) -> None:
    from selenium.webdriver.common.by import By

    field = browser.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()


def _drop(browser: Any, path: Path) -> None:
    """Drops a file on the drop zone as a user's drag would: a DataTransfer holding the file
    (read from disk by a file input the test adds) in a `drop` event."""
    from selenium.webdriver.common.by import By

    browser.execute_script(
        "const i = document.createElement('input'); i.type = 'file'; i.id = 'test-drop';"
        "document.body.append(i);"
    )
    browser.find_element(By.ID, "test-drop").send_keys(str(path))
    browser.execute_script(
        "const input = document.getElementById('test-drop');"
        "const data = new DataTransfer(); data.items.add(input.files[0]); input.remove();"
        "const zone = document.getElementById('drop-zone');"
        "zone.dispatchEvent(new DragEvent('dragenter', {dataTransfer: data, bubbles: true}));"
        "zone.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true,"
        " cancelable: true}));"
    )


def _jobs(browser: Any) -> dict[str, dict[str, Any]]:
    """Each job row as the page shows it, by file name."""
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#jobs li.job')].map(li => ({"
        " id: li.dataset.id, name: li.querySelector('.job-name').textContent,"
        " state: li.querySelector('.state').textContent,"
        " pages: li.querySelector('.job-pages').textContent,"
        " percent: li.querySelector('progress').value,"
        " error: li.querySelector('.job-error').hidden ? null"
        "   : li.querySelector('.job-error').textContent,"
        " viewable: !li.querySelector('.view').hidden}))"
    )
    return {row["name"]: row for row in rows}


ENDED = ("succeeded", "partial", "failed", "cancelled")


def test_a_wrong_key_shows_an_error_and_nothing_else(browser: Any, base_url: str) -> None:
    from selenium.webdriver.common.by import By

    _open(browser, base_url)
    assert browser.find_element(By.ID, "sign-in").is_displayed()
    assert not browser.find_element(By.ID, "workspace").is_displayed()
    _sign_in(browser, "pm_" + "x" * 32)
    error = browser.find_element(By.ID, "sign-in-error")
    _wait("the sign-in error", error.is_displayed, 30)
    assert "not accepted" in error.text and "401" in error.text
    assert not browser.find_element(By.ID, "workspace").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('pagemill.key')") is None


def test_drop_watch_and_read_a_result(
    browser: Any, base_url: str, key: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    hostile = documents.make_born_digital_pdf(
        tmp_path / "hostile.pdf", [("Notice", [HOSTILE, "The river was calm."])]
    )
    not_a_document = tmp_path / "notes.txt"
    not_a_document.write_text("just some notes, not a document\n")
    half_bad = documents.make_raw_pdf(
        tmp_path / "half-bad.pdf",
        [
            ((0, 0, 595, 842), b"".join(documents.text_line(line, 12, y) for y, line in READABLE)),
            ((0, 0, 200_000, 200_000), documents.text_line("An absurd page")),
        ],
    )

    _open(browser, base_url)
    browser.get_log("browser")  # what earlier tests left
    _sign_in(browser, key)
    _wait("the workspace", browser.find_element(By.ID, "workspace").is_displayed, 30)
    assert browser.find_element(By.ID, "who").text == "tenant web"
    # The key lives in this tab's sessionStorage, and in no URL.
    assert browser.execute_script("return sessionStorage.getItem('pagemill.key')") == key
    assert key not in browser.current_url

    _drop(browser, SAMPLES / "scanned-report.pdf")
    _wait("the dropped job's row", lambda: "scanned-report.pdf" in _jobs(browser), 60)
    picker = browser.find_element(By.ID, "file-input")
    picker.send_keys(f"{hostile}\n{not_a_document}\n{half_bad}")  # several files: one batch
    _wait("the picked jobs' rows", lambda: len(_jobs(browser)) == 4, 60)

    rows = _wait(
        "every job to end",
        lambda: (
            (jobs := _jobs(browser)) and all(j["state"] in ENDED for j in jobs.values()) and jobs
        ),
        300,
    )
    report, notice, notes = rows["scanned-report.pdf"], rows["hostile.pdf"], rows["notes.txt"]
    assert report["state"] == "succeeded" and report["pages"] == "2 / 2 pages"
    assert report["percent"] == 100 and report["viewable"] and report["error"] is None
    assert notice["state"] == "succeeded" and notice["viewable"]
    # A file that is no document fails with its reason, in red, with no result to view.
    assert notes["state"] == "failed" and not notes["viewable"] and notes["pages"] == ""
    assert notes["error"] == "not a document: plain text", notes
    failed_row = browser.find_element(By.CSS_SELECTOR, f'li[data-id="{notes["id"]}"] .job-error')
    assert failed_row.is_displayed()
    partial = rows["half-bad.pdf"]
    assert partial["state"] == "partial" and partial["viewable"], partial
    assert partial["pages"].endswith("/ 2 pages, 1 failed"), partial

    # The scanned report: page images with boxes and labels, markdown beside them.
    browser.find_element(By.CSS_SELECTOR, f'li[data-id="{report["id"]}"] .view').click()
    _wait("two pages", lambda: len(browser.find_elements(By.CSS_SELECTOR, "#pages .page")) == 2)
    assert browser.find_element(By.ID, "result-title").text == "scanned-report.pdf"
    assert browser.find_element(By.ID, "result-state").text == "succeeded"
    first = browser.find_element(By.CSS_SELECTOR, '#pages .page[data-page="1"]')
    image = first.find_element(By.CSS_SELECTOR, ".page-image img")
    _wait(
        "page 1's image",
        lambda: browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", image
        ),
    )
    shown = browser.execute_script(
        "const img = arguments[0]; const svg = img.parentNode.querySelector('svg');"
        "return {natural: [img.naturalWidth, img.naturalHeight],"
        " box: [img.clientWidth, img.clientHeight], src: img.src,"
        " view: svg.getAttribute('viewBox'),"
        " svg: [svg.clientWidth, svg.clientHeight]}",
        image,
    )
    assert shown["src"].startswith("blob:")  # fetched with the key, not by a keyed URL
    assert 0 < shown["natural"][0] <= 1200 and shown["natural"][1] == 1200
    # The boxes' coordinate space is the rendered page; the image is that page scaled down.
    _, _, width, height = (float(v) for v in shown["view"].split())
    assert abs(shown["natural"][0] / shown["natural"][1] - width / height) < 0.01
    assert shown["svg"] == shown["box"]  # the overlay covers exactly the image

    regions = first.find_elements(By.CSS_SELECTOR, "svg g.region")
    assert len(regions) >= 2
    labels = [r.find_element(By.CSS_SELECTOR, "text.label").text for r in regions]
    assert all(re.fullmatch(r"\d+ [a-z_]+", label) for label in labels), labels
    assert any(label.endswith((" doc_title", " paragraph_title")) for label in labels), labels
    assert any(label.endswith(" text") for label in labels), labels
    for region in regions:
        box = region.find_element(By.CSS_SELECTOR, "rect.box")
        assert box.size["width"] > 20 and box.size["height"] > 5
        inside = browser.execute_script(
            "const a = arguments[0].getBoundingClientRect(),"
            " b = arguments[1].getBoundingClientRect();"
            "return a.left >= b.left - 1 && a.right <= b.right + 1"
            " && a.top >= b.top - 1 && a.bottom <= b.bottom + 1",
            box,
            image,
        )
        assert inside
    markdown = first.find_element(By.CSS_SELECTOR, ".markdown")
    text = markdown.text.lower()
    for word in ("quarterly", "river", "rainfall", "spillway", "bridge"):
        assert word in text, text
    assert markdown.find_elements(By.CSS_SELECTOR, "h3, h4")  # the title as a heading
    second = browser.find_element(By.CSS_SELECTOR, '#pages .page[data-page="2"] .markdown')
    browser.execute_script("arguments[0].scrollIntoView()", second)
    assert "gauge" in second.text.lower()

    browser.set_window_size(1400, 1250)  # the jobs, and page 1 of the result below them
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot = tmp_path / "web.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000

    # A page that failed says why, in its place; the page beside it reads as usual.
    browser.find_element(By.CSS_SELECTOR, f'li[data-id="{partial["id"]}"] .view').click()
    bad = _wait(
        "the failed page",
        lambda: browser.find_elements(By.CSS_SELECTOR, '#pages .page[data-page="2"]'),
    )[0]
    assert bad.get_attribute("data-state") == "failed"
    error = bad.find_element(By.CSS_SELECTOR, ".page-error")
    assert error.is_displayed() and "not a real page" in error.text, error.text
    assert browser.find_element(By.ID, "result-state").text == "partial"
    good = browser.find_element(By.CSS_SELECTOR, '#pages .page[data-page="1"]')
    assert "reads well" in good.find_element(By.CSS_SELECTOR, ".markdown").text
    assert not good.find_elements(By.CSS_SELECTOR, ".page-error")
    assert bad.find_element(By.CSS_SELECTOR, ".image-missing").text == "the page was not laid out"

    # The hostile document's text layer shows as text; nothing in it became markup.
    browser.find_element(By.CSS_SELECTOR, f'li[data-id="{notice["id"]}"] .view').click()
    _wait(
        "the hostile document's page",
        lambda: browser.find_elements(By.CSS_SELECTOR, '#pages .page[data-page="1"] .markdown'),
    )
    page = browser.find_element(By.CSS_SELECTOR, '#pages .page[data-page="1"] .markdown')
    assert "<img" in page.text and "<script>" in page.text, page.text
    assert not page.find_elements(By.CSS_SELECTOR, "img, script")
    time.sleep(1)  # an onerror would have run by now
    assert browser.title == "pagemill"
    assert browser.find_element(By.ID, "result-title").text == "hostile.pdf"

    # No errors in the console (a CSP violation would be one).
    problems = [
        entry
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "favicon" not in entry["message"]
    ]
    assert not problems, problems

    # Forgetting the key clears the tab; a job is found again by its id.
    browser.find_element(By.ID, "sign-out").click()
    assert browser.find_element(By.ID, "sign-in").is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0
    _sign_in(browser, key)
    _wait("the workspace", browser.find_element(By.ID, "workspace").is_displayed, 30)
    assert _jobs(browser) == {}
    browser.find_element(By.ID, "open-id").send_keys(report["id"])
    browser.find_element(By.CSS_SELECTOR, "#open-form button").click()
    found = _wait("the job by its id", lambda: _jobs(browser).get("scanned-report.pdf"), 30)
    assert found["state"] == "succeeded" and found["viewable"]


def test_page_images_belong_to_their_tenant(
    stack_env: dict[str, str], base_url: str, key: str, tmp_path: Path
) -> None:
    """GET /v1/jobs/{id}/pages/{n}/image: the page as rendered, scaled down; 404 for a page
    the job does not have and for another tenant, exactly like an unknown job."""
    other = services.cli_key(stack_env, "web-other", "web test")
    png = SAMPLES / "scanned-note.png"
    with httpx.Client(base_url=base_url, headers=services.bearer(key), timeout=60) as client:
        submitted = client.post("/v1/jobs", files={"files": (png.name, png.read_bytes())})
        assert submitted.status_code == 201, submitted.text
        job_id = submitted.json()["jobs"][0]["id"]
        deadline = time.monotonic() + 240
        while client.get(f"/v1/jobs/{job_id}").json()["state"] not in ENDED:
            assert time.monotonic() < deadline, "job did not end"
            time.sleep(0.5)
        image = client.get(f"/v1/jobs/{job_id}/pages/1/image")
        assert image.status_code == 200, image.text
        assert (
            image.headers["content-type"] == "image/jpeg" and image.content[:3] == b"\xff\xd8\xff"
        )
        assert client.get(f"/v1/jobs/{job_id}/pages/2/image").status_code == 404
        assert client.get(f"/v1/jobs/{job_id}/pages/0/image").status_code == 422
        missing = client.get(f"/v1/jobs/{'0' * 32}/pages/1/image")
        assert missing.status_code == 404
    with httpx.Client(base_url=base_url, headers=services.bearer(other), timeout=60) as client:
        foreign = client.get(f"/v1/jobs/{job_id}/pages/1/image")
        assert foreign.status_code == 404 and foreign.json() == {"detail": f"no job {job_id}"}
    assert httpx.get(f"{base_url}/v1/jobs/{job_id}/pages/1/image").status_code == 401


def test_the_page_is_served_with_a_strict_policy_beside_the_api(base_url: str) -> None:
    page = httpx.get(base_url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy and "form-action 'none'" in policy
    assert '<script type="module" src="/web/app.js">' in page.text
    assert "<script>" not in page.text  # no inline script
    for name, kind in (
        ("app.js", "javascript"),
        ("markdown.js", "javascript"),
        ("style.css", "css"),
    ):
        asset = httpx.get(f"{base_url}/web/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
    assert httpx.get(base_url + "/web/index.html").status_code == 404
    assert httpx.get(base_url + "/web/..%2Fapi%2Fmain.py").status_code == 404
    # The API around it is unchanged.
    assert httpx.get(base_url + "/healthz").json()["status"] == "ok"
    assert httpx.get(base_url + "/docs").status_code == 200
    assert "/" not in httpx.get(base_url + "/openapi.json").json()["paths"]
    unknown = httpx.get(base_url + "/v1/nothing-here")
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Not Found"}


MARKDOWN = """# Annual *report*
Some **bold** and `code`,
on two lines.

- one
- two

1. first
2. second

| a | b |
|---|---|
| 1 | <img src=x onerror=alert(1)> |

<table><tr><td colspan="2" onclick="alert(2)">cell <b>x</b><img src=x onerror=alert(2)></td>
</tr><tr><td>y</td><td><script>alert(3)</script>z</td></tr></table>

$$
x^2 <b>
$$

<!-- page 2 -->
<img src=x onerror=alert(4)>

![figure](images/page-00001-region-0003.png)
"""


def test_markdown_becomes_elements_of_text_only(browser: Any, base_url: str) -> None:
    """The page's markdown renderer (app/web/markdown.js) on markup a hostile document
    could carry: structure comes out, and every tag or attribute in the text stays text."""
    browser.get(base_url + "/")
    out = browser.execute_async_script(
        "const [source, done] = arguments;"
        "import('/web/markdown.js').then(({render}) => {"
        " const box = document.createElement('div');"
        " const figure = (alt, href) => Object.assign(document.createElement('span'),"
        "   {className: 'figure', textContent: `${alt} ${href}`});"
        " box.append(render(source, figure));"
        " const all = [...box.querySelectorAll('*')];"
        " done({tags: all.map(e => e.tagName.toLowerCase()),"
        "  attributes: all.flatMap(e => [...e.attributes].map(a => `${a.name}=${a.value}`)),"
        "  blocks: [...box.children].map(e => [e.tagName.toLowerCase(), e.textContent]),"
        "  cells: [...box.querySelectorAll('td, th')].map(c => c.textContent)});"
        "}).catch(e => done({error: String(e)}));",
        MARKDOWN,
    )
    assert "error" not in out, out
    assert set(out["tags"]) <= {
        "h3", "p", "em", "strong", "code", "ul", "ol", "li", "table", "thead", "tbody", "tr",
        "th", "td", "div", "pre", "span",
    }, out["tags"]  # fmt: skip
    allowed = {"colspan=2", "class=md-heading", "class=formula", "class=figure"}
    assert set(out["attributes"]) <= allowed, out["attributes"]
    assert out["blocks"] == [
        ["h3", "Annual report"],
        ["p", "Some bold and code, on two lines."],
        ["ul", "onetwo"],
        ["ol", "firstsecond"],
        ["table", "ab1<img src=x onerror=alert(1)>"],
        ["div", "cell xyalert(3)z"],
        ["pre", "x^2 <b>"],
        ["p", "<img src=x onerror=alert(4)>"],
        ["span", "figure images/page-00001-region-0003.png"],
    ]
    assert out["cells"][-3:] == ["cell x", "y", "alert(3)z"]
