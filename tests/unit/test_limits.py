"""Limits on hostile documents, as pure functions: header-checked image sizes, absurd PDF
page sizes, the render deadline, passwords, and file names made safe to show and write."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from PIL import Image

from app.media import JPEG, PDF, PNG, TIFF, display_filename
from app.passwords import SecretKeyMissing, decrypt_password, encrypt_password, require_key
from app.runner import _output_names, safe_part
from app.schemas import JobOptions
from app.settings import Settings
from tests.support import documents
from workers.documents import DocumentError, RenderTimeout, page_sizes, render_page

LIMIT = 200_000_000


@pytest.mark.parametrize(
    ("make", "media_type"),
    [
        (documents.make_png_bomb, PNG),
        (documents.make_jpeg_bomb, JPEG),
        (documents.make_tiff_bomb, TIFF),
    ],
)
def test_image_bombs_are_refused_from_their_header(
    tmp_path: Path, make: object, media_type: str
) -> None:
    bomb = make(tmp_path / "bomb")  # type: ignore[operator]
    assert bomb.stat().st_size < 1024
    with pytest.raises(DocumentError, match="image too large"):
        page_sizes(bomb, media_type, 10, max_image_pixels=LIMIT)
    with pytest.raises(DocumentError, match="image too large"):
        render_page(bomb, media_type, 1, 200, 40_000_000, max_image_pixels=LIMIT)


def test_image_over_the_setting_but_under_pillows_guard_is_refused(tmp_path: Path) -> None:
    """Pillow only errors at twice its limit; pagemill's own check is exact."""
    png = documents.make_png_bomb(tmp_path / "big.png", 15_000, 15_000)  # 225 Mpx
    with pytest.raises(DocumentError, match=r"15000 x 15000 pixels \(the limit is 200000000"):
        page_sizes(png, PNG, 10, max_image_pixels=LIMIT)
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 100), "white").save(small)
    with pytest.raises(DocumentError, match="MAX_IMAGE_PIXELS"):
        page_sizes(small, PNG, 10, max_image_pixels=9_999)
    assert len(page_sizes(small, PNG, 10, max_image_pixels=10_000)) == 1


def test_too_many_pages_fails_the_document(tmp_path: Path) -> None:
    pdf = documents.make_raw_pdf(tmp_path / "p.pdf", [((0, 0, 595, 842), b"")] * 3)
    with pytest.raises(DocumentError, match=r"too many pages: 3 \(the limit is 2\)"):
        page_sizes(pdf, PDF, 2)


def test_page_sizes_keep_absurd_pages_and_render_refuses_them(tmp_path: Path) -> None:
    pdf = documents.make_raw_pdf(
        tmp_path / "sizes.pdf",
        [
            ((0, 0, 14_400, 14_400), documents.text_line("A two hundred inch page")),
            ((0, 0, 200_000, 200_000), documents.text_line("absurd")),
            ((0, 0, 0.5, 0.5), b""),
        ],
    )
    assert [s.width_pt for s in page_sizes(pdf, PDF, 10)] == [14_400, 200_000, 0.5]
    big = render_page(pdf, PDF, 1, 200, 40_000_000)
    height, width = big.image.shape[:2]
    assert width * height <= 40_000_000 and big.dpi < 40, "not rendered under the pixel cap"
    for number in (2, 3):
        with pytest.raises(DocumentError, match="is not a real page"):
            render_page(pdf, PDF, number, 200, 40_000_000)


def test_a_page_slower_than_the_timeout_is_abandoned(tmp_path: Path) -> None:
    pdf = documents.make_raw_pdf(
        tmp_path / "slow.pdf",
        [
            ((0, 0, 595, 842), documents.text_line("A quick page")),
            ((0, 0, 595, 842), documents.slow_page_content()),
        ],
    )
    assert render_page(pdf, PDF, 1, 200, 40_000_000, timeout=5).image.shape[0] > 2000
    with pytest.raises(RenderTimeout, match=r"longer than 0.5 s"):
        render_page(pdf, PDF, 2, 200, 40_000_000, timeout=0.5)


def test_progressive_render_matches_the_plain_one(tmp_path: Path) -> None:
    pdf = documents.make_born_digital_pdf(tmp_path / "d.pdf", [(None, ["Same pixels."])])
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf))
    plain = doc[0].render(scale=2).to_numpy()  # A4 at 144 dpi: whole pixels either way
    ours = render_page(pdf, PDF, 1, 144, 40_000_000, timeout=60).image
    assert ours.shape == plain.shape and (ours == plain).all()


def test_encrypted_pdf_opens_with_its_password_only(tmp_path: Path) -> None:
    source = documents.make_born_digital_pdf(tmp_path / "d.pdf", [(None, ["Locked text."])])
    locked = documents.make_encrypted_pdf(tmp_path / "e.pdf", source, "pa55")
    with pytest.raises(DocumentError, match="a password is required"):
        page_sizes(locked, PDF, 10)
    with pytest.raises(DocumentError, match="the password given does not open it"):
        page_sizes(locked, PDF, 10, password="wrong")
    assert len(page_sizes(locked, PDF, 10, password="pa55")) == 1
    assert render_page(locked, PDF, 1, 100, 40_000_000, password="pa55").image.size


def test_empty_and_truncated_pdfs_say_so(tmp_path: Path) -> None:
    good = documents.make_born_digital_pdf(tmp_path / "d.pdf", [(None, ["Text."])])
    with pytest.raises(DocumentError, match="no page"):
        page_sizes(documents.make_zero_page_pdf(tmp_path / "z.pdf"), PDF, 10)
    with pytest.raises(DocumentError, match="corrupt or unreadable PDF"):
        page_sizes(documents.make_truncated_pdf(tmp_path / "t.pdf", good), PDF, 10)
    assert len(page_sizes(documents.make_bad_xref_pdf(tmp_path / "x.pdf", good), PDF, 10)) == 1


def test_password_is_never_dumped_with_the_options() -> None:
    options = JobOptions(text_mode="text", password="hunter2")  # type: ignore[arg-type]
    assert "hunter2" not in str(options.model_dump()) + options.model_dump_json() + repr(options)
    assert options.password is not None and options.password.get_secret_value() == "hunter2"


def _embedded(data_dir: Path) -> Settings:
    # Explicit, whatever PAGEMILL_* this process has: no broker server, no key.
    return Settings(data_dir=data_dir, broker_url=None, secret_key=None)


def test_embedded_key_is_generated_private_and_reused(tmp_path: Path) -> None:
    token = encrypt_password("hunter2", _embedded(tmp_path / "data"))
    assert "hunter2" not in token
    key = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert decrypt_password(token, _embedded(tmp_path / "data")) == "hunter2"
    with pytest.raises(SecretKeyMissing):
        decrypt_password(token, _embedded(tmp_path / "other"))


def test_distributed_mode_needs_the_key() -> None:
    from cryptography.fernet import Fernet

    distributed = Settings(broker_url="redis://127.0.0.1:1/0", secret_key=None)
    with pytest.raises(SecretKeyMissing, match="PAGEMILL_SECRET_KEY is not set"):
        require_key(distributed)
    keyed = Settings(broker_url="redis://127.0.0.1:1/0", secret_key=Fernet.generate_key().decode())
    assert decrypt_password(encrypt_password("pw", keyed), keyed) == "pw"


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("../../etc/passwd.pdf", "../../etc/passwd.pdf"),  # a label, stored as given
        ("\x1b]0;pwned\x07name.pdf", "]0;pwnedname.pdf"),
        ("rapport-été-漢字.pdf", "rapport-été-漢字.pdf"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("\x00\x01", "upload"),
        ("bad\udcffbyte.pdf", "bad\ufffdbyte.pdf"),
        ("x" * 5000, "x" * 1024),
    ],
)
def test_display_filename(given: str, shown: str) -> None:
    assert display_filename(given) == shown


def test_output_names_stay_inside_out_and_fit(tmp_path: Path) -> None:
    names = ["a\x07b\nc.pdf", "x" * 250 + ".pdf", "été 漢字.pdf", "..pdf", "back\\slash.pdf"]
    files = []
    for name in names:
        (tmp_path / name).write_bytes(b"%PDF-")
        files.append(tmp_path / name)
    out = _output_names(files, [str(tmp_path)])
    assert [str(out[f]) for f in files[:1] + files[2:]] == ["a_b_c", "été 漢字", "_", "back_slash"]
    long = str(out[files[1]])
    assert long.startswith("xxx") and len((long + ".images").encode()) < 255
    for name in out.values():
        assert ".." not in name.parts and not name.is_absolute()
    assert safe_part("..") == "_" and safe_part("") == "_" and safe_part("a/b") == "a_b"


def test_jobs_table_shows_names_and_errors_as_text() -> None:
    """A file named like rich markup is shown as it is, not interpreted (or crashing)."""
    import io
    from datetime import UTC, datetime

    from rich.console import Console

    from app.runner import jobs_table
    from app.schemas import JobOut, Progress, Timings

    now = datetime.now(UTC)
    job = JobOut(
        id="j1",
        batch_id=None,
        filename="[/]weird [bold]name.pdf",
        media_type=None,
        size_bytes=1,
        state="failed",
        error="corrupt [x] ([/])",
        options={},
        progress=Progress(pages_total=None, pages_done=0, pages_failed=0, percent=100.0),
        timings=Timings(
            created_at=now,
            started_at=None,
            finished_at=None,
            queued_seconds=None,
            running_seconds=None,
        ),
        result=None,
    )
    buffer = io.StringIO()
    Console(file=buffer, width=200).print(jobs_table([job]))
    assert "[/]weird [bold]name.pdf" in buffer.getvalue()
    assert "corrupt [x] ([/])" in buffer.getvalue()
