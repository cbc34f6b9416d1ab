"""The JPEG decoders of `celebahq official`: IJG libjpeg 8d (through the `jpeglib` package), as NVIDIA's original,
or Pillow's libjpeg-turbo on request.

libjpeg 7 and later (8d included) upsample subsampled chroma (4:2:0, 4:2:2) inside the IDCT; libjpeg-turbo, which
every current Pillow wheel bundles, keeps libjpeg 6b's triangle filter. The luma and 4:4:4 JPEGs decode alike; a
4:2:0 photo does not (the bundled example's 000001.jpg: 27% of the values differ, by up to 32 levels). Both decoders
run with libjpeg's defaults (islow IDCT, fancy upsampling), as Pillow's non-draft decode and the original.

`decode_jpeg(bytes, decoder)` -> uint8 HW3 RGB; `require_decoder` turns an unusable decoder into one UserError
line; `decoder_problem` runs a known-answer test (a 16×16 4:2:0 JPEG whose 8d decode differs from 6b's).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from gancore.errors import UserError
from gancore.sources import BadImage, check_pixel_count, decode_image, to_rgb_hwc

LIBJPEG_8D = "libjpeg-8d"  # the original's decoder (`create_celebahq` refuses any other)
PILLOW = "pillow"  # this Pillow's decoder (libjpeg-turbo in every current wheel): not the official dataset
DECODERS = (LIBJPEG_8D, PILLOW)
HOW_TO_GET_8D = ("pip install jpeglib (it bundles IJG libjpeg 8d); or --decoder pillow, whose result is not the "
                 "official CelebA-HQ")

#: a 16×16 4:2:0 JPEG (quality 90, a red/blue edge); libjpeg 8d decodes it to PROBE_MD5_8D, libjpeg 6b and
#: libjpeg-turbo to another md5: the known-answer test of `decoder_problem`.
PROBE_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMU"
    "FRUVDA8XGBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU"
    "FBQUFBQUFBT/wAARCAAQABADASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUF"
    "BAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVW"
    "V1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi"
    "4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAEC"
    "AxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVm"
    "Z2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq"
    "8vP09fb3+Pn6/9oADAMBAAIRAxEAPwDmfh78Edd+JWizanpl3p8EEVw1sy3ckisWCqxICowxhx39a8W8f/BbW/hzo0OpaldafPBL"
    "cLbqtrI7MGKs2TuRRjCHv6V7T8Pfjdrvw10WbTNMtNPngluGuWa7jkZgxVVIBV1GMIO3rXi3j/40638RtGh03UrXT4IIrhbhWtY3"
    "ViwVlwdzsMYc9vSvtvo9f2v9ezX4fYXo+tv3p+nePn9u/wBo5Z8P1e9bte37o//Z"
)
PROBE_MD5_8D = "6df5070b0f9b7c726e44618fd6636b95"
#: libjpeg's warning for a file that ends before its last scan (it then fills gray; Pillow refuses such a file)
_TRUNCATED = "Premature end of JPEG file"


def decode_jpeg(data: bytes, decoder: str) -> np.ndarray:
    """JPEG file bytes -> uint8 [H, W, 3] RGB by `decoder` (one of DECODERS); BadImage when they do not decode."""
    if decoder == PILLOW:
        return decode_image(data)
    if decoder == LIBJPEG_8D:
        return _decode_with_jpeglib(data, "8d")
    raise ValueError(f"unknown decoder {decoder!r}, expected one of {DECODERS}")


def _decode_with_jpeglib(data: bytes, version: str) -> np.ndarray:
    """Decode with jpeglib's build of IJG libjpeg `version` (it reads files: the bytes go to a private temporary
    file, so the pixels come from exactly these bytes). Refused like Pillow: too many pixels (from the header),
    not a JPEG, damaged, truncated, CMYK; libjpeg's other warnings (extraneous bytes) are dropped, as Pillow does."""
    import jpeglib

    messages: list[str] = []
    with tempfile.TemporaryDirectory(prefix="celebahq-jpeg-") as folder:
        path = os.path.join(folder, "photo.jpg")
        with open(path, "wb") as file:
            file.write(data)
        try:
            with jpeglib.version(version), _c_stderr_lines() as messages:
                jpeg = jpeglib.read_spatial(path)  # the header only; pixels on first access
                check_pixel_count(jpeg.width, jpeg.height)
                pixels = jpeg.spatial
        except BadImage:
            raise
        except Exception:  # noqa: BLE001 - jpeglib raises OSError, RuntimeError, ValueError
            raise BadImage(f"cannot decode: {'; '.join(messages) or 'not a readable JPEG file'}") from None
    if any(_TRUNCATED in line for line in messages):
        raise BadImage(f"cannot decode: truncated ({_TRUNCATED})")
    if pixels.shape[2] not in (1, 3):
        raise BadImage(f"cannot decode: {pixels.shape[2]}-channel (CMYK) JPEG, expected RGB or grey")
    return to_rgb_hwc(np.ascontiguousarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels))


@contextmanager
def _c_stderr_lines() -> Iterator[list[str]]:
    """Collect what C code prints to file descriptor 2 in the block (libjpeg's warnings and error texts) instead of
    letting it reach the terminal; the list is filled when the block ends, also by an exception."""
    lines: list[str] = []
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line.strip() for line in sink.read().decode("ascii", "replace").splitlines() if line.strip())


@functools.cache
def decoder_problem(decoder: str) -> str | None:
    """None when `decoder` works here; else why not. libjpeg 8d must decode PROBE_JPEG to PROBE_MD5_8D."""
    if decoder != LIBJPEG_8D:
        return None
    try:
        import jpeglib  # noqa: F401
    except ImportError:
        return "the jpeglib package is not installed"
    try:
        md5 = hashlib.md5(_decode_with_jpeglib(PROBE_JPEG, "8d").tobytes()).hexdigest()
    except (BadImage, ImportError) as error:
        return f"jpeglib's libjpeg 8d does not run here ({error})"
    if md5 != PROBE_MD5_8D:
        return f"jpeglib's libjpeg 8d decodes a known 4:2:0 test JPEG to md5 {md5}, not {PROBE_MD5_8D}"
    return None


def require_decoder(decoder: str) -> None:
    """UserError (one line saying how to get it) unless `decoder` works here."""
    problem = decoder_problem(decoder)
    if problem:
        raise UserError(f"the official JPEG decoder, IJG libjpeg 8d, is unavailable: {problem}. {HOW_TO_GET_8D}")


def decoder_description(decoder: str) -> str:
    """The library and version behind `decoder`, e.g. 'IJG libjpeg 8d (jpeglib 1.0.2)'."""
    if decoder == LIBJPEG_8D:
        try:
            import jpeglib
        except ImportError:
            return "IJG libjpeg 8d (jpeglib not installed)"
        return f"IJG libjpeg 8d (jpeglib {jpeglib.__version__})"
    import PIL
    from PIL import features

    library = (f"libjpeg-turbo {features.version('libjpeg_turbo')}" if features.check_feature("libjpeg_turbo")
               else f"libjpeg {features.version('jpg')}")
    return f"{library} (Pillow {PIL.__version__})"


def jpeg_subsampling(data: bytes) -> str:
    """'4:4:4', '4:2:2', '4:2:0' or 'unknown' from a JPEG's header (only subsampled chroma decodes differently)."""
    import io

    from PIL import Image, JpegImagePlugin

    try:
        with Image.open(io.BytesIO(data)) as image:
            sampling = JpegImagePlugin.get_sampling(image) if image.format == "JPEG" else -1
    except Exception:  # noqa: BLE001 - PIL raises many types
        sampling = -1
    return {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}.get(sampling, "unknown")
