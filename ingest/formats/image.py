"""Image files through Tesseract OCR (ingest.ocr); a multi-page TIFF gives one section per page."""

from __future__ import annotations

import warnings
from pathlib import Path

from ingest import ocr
from ingest.document import DEFAULT_OPTIONS, ParsedDocument, ReaderOptions, Section, title_from_filename
from rag.errors import (
    DocumentError,
    EmptyDocumentError,
    OcrUnavailableError,
)

SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"})


_MULTI_PAGE = {"TIFF", "MPO"}  # formats whose frames are pages; animations (GIF, WebP) use their first frame


def read(path: Path, options: ReaderOptions | None = None) -> ParsedDocument:
    """OCR an image file; a multi-page TIFF gives one section per page."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    options = options or DEFAULT_OPTIONS
    sections: list[Section] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # reads the header only: size checks happen here
                reason = ocr.ocr_unavailable_reason(options)
                if reason is not None:
                    raise OcrUnavailableError(f"{path.name}: an image is read with OCR, but {reason}")
                frames = getattr(image, "n_frames", 1) if image.format in _MULTI_PAGE else 1
                for frame in range(frames):
                    image.seek(frame)
                    upright = ImageOps.exif_transpose(image)
                    text = ocr.ocr_image(upright, options, name=path.name)
                    if upright is not image:
                        upright.close()
                    if text:
                        sections.append(Section(text, [], frame + 1 if frames > 1 else None))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DocumentError(
            f"{path.name}: the image is too large to decode safely ({exc}): possible decompression bomb; "
            "downscale it or split it"
        ) from None
    except UnidentifiedImageError:
        raise DocumentError(
            f"{path.name}: not a readable image (corrupt, or another format with an image extension): re-save it "
            "as PNG or JPEG"
        ) from None
    except (OSError, ValueError, EOFError, SyntaxError) as exc:
        raise DocumentError(f"{path.name}: the image could not be decoded ({exc}): re-save it as PNG or JPEG") from None
    if not sections:
        raise EmptyDocumentError(
            f"{path.name}: OCR found no text in the image: check that it shows readable text "
            "(letters at least ~20 px high, upright, good contrast)"
        )
    return ParsedDocument(title_from_filename(path), sections, "image")
