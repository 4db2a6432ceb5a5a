"""OCR with Tesseract (pytesseract, Apache-2.0; Pillow, MIT-CMU): images and the scanned pages of PDFs.

OCR is used only when it is turned on (ReaderOptions.ocr, setting ingest.ocr) and a `tesseract` binary exists
(ReaderOptions.tesseract_cmd, else `tesseract` on PATH). Images are opened under Pillow's decompression-bomb limit
(Image.MAX_IMAGE_PIXELS); one image is decoded at a time.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ingest.document import DEFAULT_OPTIONS, ReaderOptions
from rag.errors import DocumentError, OcrUnavailableError

if TYPE_CHECKING:
    from PIL import Image as PILImage

OCR_TIMEOUT_S = 180  # per image; a stuck tesseract is killed instead of outliving the parse worker
_MIN_SIDE = 16  # images smaller than this (icons, rules) are not worth OCR
_INSTALL = "install tesseract-ocr (apt install tesseract-ocr)"
_lock = threading.Lock()  # pytesseract keeps the binary's path in a module global


def tesseract_command(options: ReaderOptions | None = None) -> str | None:
    """The tesseract binary to run, or None when there is none."""
    options = options or DEFAULT_OPTIONS
    if options.tesseract_cmd:
        cmd = options.tesseract_cmd
        if os.path.sep in cmd or (os.path.altsep and os.path.altsep in cmd):
            return cmd if os.path.isfile(cmd) and os.access(cmd, os.X_OK) else None
        return shutil.which(cmd)
    return shutil.which("tesseract")


def ocr_unavailable_reason(options: ReaderOptions | None = None) -> str | None:
    """None when OCR can run; otherwise why not and what to do, starting with "OCR not available"."""
    options = options or DEFAULT_OPTIONS
    if not options.ocr:
        return "OCR not available: OCR is turned off (setting ingest.ocr = false): turn it on to read scanned pages"
    if tesseract_command(options) is not None:
        return None
    if options.tesseract_cmd:
        return f"OCR not available: tesseract not found at {options.tesseract_cmd}: fix the path or {_INSTALL}"
    return f"OCR not available: tesseract is not installed (not on PATH): {_INSTALL}"


def ocr_available(options: ReaderOptions | None = None) -> bool:
    """True when OCR is turned on and a tesseract binary exists."""
    return ocr_unavailable_reason(options) is None


def _prepare(image: PILImage.Image) -> PILImage.Image:
    """A mode Tesseract reads well: transparent areas on white, CMYK/16-bit/float to RGB or L."""
    from PIL import Image

    if image.mode in ("1", "L", "RGB"):
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith(("I", "F")):  # 16/32-bit grey: stretch the used range onto 0..255
        wide = image.convert("F")
        low, high = wide.getextrema()
        scale = 255.0 / (high - low) if high > low else 1.0
        return wide.point(lambda v: (v - low) * scale).convert("L")
    return image.convert("RGB")


def ocr_image(image: PILImage.Image, options: ReaderOptions | None = None, *, name: str = "image") -> str:
    """Text Tesseract recognises in one image ("" when none). `name` starts error messages (usually the file name).

    Raises OcrUnavailableError when OCR is off, tesseract is missing or a language pack is missing,
    DocumentError when tesseract fails on the image.
    """
    import pytesseract

    options = options or DEFAULT_OPTIONS
    reason = ocr_unavailable_reason(options)
    if reason is not None:
        raise OcrUnavailableError(f"{name}: {reason}")
    if min(image.size) < _MIN_SIDE:
        return ""
    prepared = _prepare(image)
    with _lock:
        previous = pytesseract.pytesseract.tesseract_cmd
        pytesseract.pytesseract.tesseract_cmd = tesseract_command(options) or "tesseract"
        try:
            text = pytesseract.image_to_string(prepared, lang=options.ocr_languages, timeout=OCR_TIMEOUT_S)
        except pytesseract.TesseractNotFoundError:
            raise OcrUnavailableError(
                f"{name}: OCR not available: tesseract could not be started: {_INSTALL}"
            ) from None
        except pytesseract.TesseractError as exc:
            message = str(exc.message if hasattr(exc, "message") else exc)
            if "language" in message.lower() or "data file" in message.lower():
                packs = ", ".join(f"tesseract-ocr-{lang}" for lang in options.ocr_languages.split("+"))
                raise OcrUnavailableError(
                    f"{name}: OCR not available for language(s) {options.ocr_languages!r}: install the language data "
                    f"(apt install {packs}) or change the setting ingest.ocr_languages"
                ) from None
            raise DocumentError(
                f"{name}: tesseract could not read the image ({message.strip()}): check the image"
            ) from None
        except RuntimeError as exc:  # pytesseract's timeout
            raise DocumentError(
                f"{name}: OCR took longer than {OCR_TIMEOUT_S}s on one image: split or downscale the file"
            ) from exc
        finally:
            pytesseract.pytesseract.tesseract_cmd = previous
    return _tidy(text)


def _tidy(text: str) -> str:
    """Tesseract output with trailing spaces, form feeds and runs of blank lines removed."""
    lines = [line.rstrip() for line in text.replace("\f", "\n").splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


# --------------------------------------------------------------------------------------------------------------------
# PDF pages
# --------------------------------------------------------------------------------------------------------------------


def ocr_pdf_page(page, path: Path, options: ReaderOptions | None = None) -> str:  # noqa: ANN001 - pypdf PageObject
    """OCR the images shown on one PDF page, one image decoded at a time. Images that cannot be decoded are skipped."""
    images = page.images
    texts: list[str] = []
    hidden: list[int] = []  # images in the page's resources that its content stream does not draw
    for index in range(len(images)):
        text, displayed = _ocr_pdf_image(images, index, path, options, displayed_only=True)
        if not displayed:
            hidden.append(index)
        elif text:
            texts.append(text)
    if not texts and hidden and len(hidden) == len(images):
        # Images drawn through form XObjects are reported as not displayed: OCR them all.
        for index in hidden:
            text, _ = _ocr_pdf_image(images, index, path, options, displayed_only=False)
            if text:
                texts.append(text)
    return "\n\n".join(texts)


def _ocr_pdf_image(images, index: int, path: Path, options, *, displayed_only: bool) -> tuple[str, bool]:  # noqa: ANN001
    try:
        image_file = images[index]
        displayed = getattr(image_file, "is_displayed", True)
        if displayed_only and not displayed:
            return "", False
        image = image_file.image
    except Exception:  # noqa: BLE001 - an image pypdf cannot decode (JBIG2, broken stream): OCR the others
        return "", True
    if image is None:
        return "", True
    try:
        return ocr_image(image, options, name=path.name), True
    finally:
        image.close()


def forget_decoded_pdf_data(page) -> None:  # noqa: ANN001 - pypdf PageObject
    """Drop what pypdf cached while reading a page (decoded content and image streams), so memory stays per page."""
    try:
        objects = []
        contents = page.get("/Contents")
        contents = contents.get_object() if contents is not None else None
        if isinstance(contents, list):
            objects += [c.get_object() for c in contents]
        elif contents is not None:
            objects.append(contents)
        resources = page.get("/Resources")
        resources = resources.get_object() if resources is not None else None
        xobjects = resources.get("/XObject") if resources is not None else None
        xobjects = xobjects.get_object() if xobjects is not None else None
        if xobjects is not None:
            objects += [xobjects[name].get_object() for name in xobjects]
        for obj in objects:
            if getattr(obj, "decoded_self", None) is not None:
                obj.decoded_self = None
        if getattr(page, "_content_stream_images", None) is not None:
            page._content_stream_images = None
    except Exception:  # noqa: BLE001 - best effort: a broken page dictionary just keeps its cache
        pass
