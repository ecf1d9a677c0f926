"""Decoding what clients send and encoding what we serve.

Only PNG, WebP and JPEG are accepted. The pixel count is checked from the header before any
pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from journeyd.domain.errors import TooLarge, Unprocessable

FORMATS = ("PNG", "WEBP", "JPEG")
MAX_PIXELS = 40_000_000
PNG_COMPRESS_LEVEL = 3  # lossless either way; 3 is ~3x faster than the default 6 for ~10% more bytes
# Pillow allocates pixels in blocks (16 MB by default). Blocks over glibc's largest mmap threshold
# (32 MB) are mapped and unmapped, so the memory of a big decode goes back to the system at once
# instead of staying in whichever thread's heap decoded it: measured, six concurrent 40 MP image prompts
# took the server's peak RSS 520 MB up with 16 MB blocks, 367 MB with 64 MB ones.
Image.core.set_block_size(64 * 1024 * 1024)


def image_pixels(data: bytes) -> int:
    """Width x height from the header alone (0 when it is not an image: decoding will say why)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception:
        return 0
    return width * height


def decode_image(data: bytes, *, what: str, max_pixels: int = MAX_PIXELS, max_side: int | None = None) -> Image.Image:
    """Open and fully decode an image, or raise a 413/422 that names `what`. With `max_side`, the
    image comes back shrunk to fit it (a JPEG is decoded at a fraction of its size to begin with)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image_format = image.format
            width, height = image.size
            if width * height > max_pixels:
                raise TooLarge(
                    f"{what} is {width}x{height} ({width * height / 1e6:.1f} megapixels); "
                    f"the limit is {max_pixels / 1e6:.0f} megapixels"
                )
            if image_format not in FORMATS:
                raise Unprocessable(f"{what} is a {image_format} image; send PNG, WebP or JPEG")
            if max_side is not None and max(width, height) > max_side:
                image.thumbnail((max_side, max_side))  # draft-decodes a JPEG, then reduces
            image.load()
    except (TooLarge, Unprocessable):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own bomb check fires from the header alone, for sizes far over our limit
        raise TooLarge(f"{what} is over {max_pixels / 1e6:.0f} megapixels, the limit") from None
    except UnidentifiedImageError:
        raise Unprocessable(f"{what} is not an image journeyd can read; send PNG, WebP or JPEG") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise Unprocessable(f"{what} could not be decoded ({error}); is the file complete?") from None
    return image


def to_rgb(image: Image.Image) -> np.ndarray:
    """HxWx3 uint8; transparent pixels are laid on white, as a browser shows them."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        image = canvas
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def encode_jpeg(pixels: np.ndarray, quality: int = 80) -> bytes:
    """For step previews: small and quick, and never mistaken for a result."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """Read back an image we wrote ourselves (trusted)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB") if image.mode not in ("RGB", "L") else image).copy()
