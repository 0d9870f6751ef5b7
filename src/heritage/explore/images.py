"""Images for the explorer: files served only from the roots the user named, thumbnails, and
uploaded query images checked before anything decodes them in full.

Every path that arrives in a URL is resolved (symlinks included) and must stay inside one of
the ``--images`` roots; anything else — ``../``, absolute paths, percent-encoded traversal, a
symlink that leads out, a file that is not an image — is simply not found.
"""

from __future__ import annotations

import io
import warnings
from functools import lru_cache
from pathlib import Path, PurePosixPath

from heritage.collection import IMAGE_SUFFIXES

__all__ = ["MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS", "ImageRoots", "UploadError", "check_upload"]

#: an uploaded query image larger than this is refused before it is read
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: and one that would decode to more pixels than this (a decompression bomb)
MAX_UPLOAD_PIXELS = 40_000_000
THUMBNAIL_PX = 240


class UploadError(ValueError):
    """An uploaded file that is not a usable image; the message says why."""


class ImageRoots:
    """The folders images may be served from, in the order given (a record's image is looked
    up under each)."""

    def __init__(self, roots: tuple[Path, ...] | list[Path]) -> None:
        self.roots = [Path(r).expanduser().resolve() for r in roots]
        missing = [str(r) for r in self.roots if not r.is_dir()]
        if missing:
            raise FileNotFoundError(f"image folder(s) not found: {', '.join(missing)}")

    def __bool__(self) -> bool:
        return bool(self.roots)

    def resolve(self, root: int, relative: str) -> Path | None:
        """The file ``relative`` under root number ``root``, or None when it is not an image
        file inside that root."""
        if not 0 <= root < len(self.roots) or "\x00" in relative or "\\" in relative:
            return None
        rel = PurePosixPath(relative)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            return None
        base = self.roots[root]
        try:
            path = (base / rel).resolve()
        except (OSError, RuntimeError):
            return None
        if not path.is_relative_to(base) or path.suffix.lower() not in IMAGE_SUFFIXES:
            return None
        return path if path.is_file() else None

    def locate(self, name: str) -> tuple[int, str] | None:
        """(root number, path inside it) of a record's image named ``name`` (a path relative
        to a root, or an absolute path inside one), or None."""
        candidate = Path(name)
        for k, base in enumerate(self.roots):
            if candidate.is_absolute():
                try:
                    rel = candidate.resolve().relative_to(base).as_posix()
                except (ValueError, OSError):
                    continue
            else:
                rel = PurePosixPath(name).as_posix()
            if self.resolve(k, rel) is not None:
                return k, rel
        return None


@lru_cache(maxsize=2048)
def _thumbnail(path: str, mtime_ns: int, size: int) -> bytes:
    from PIL import Image

    with Image.open(path) as img:
        img.thumbnail((size, size))
        out = io.BytesIO()
        img.convert("RGB").save(out, "JPEG", quality=82)
    return out.getvalue()


def thumbnail(path: Path, size: int = THUMBNAIL_PX) -> bytes:
    """A JPEG thumbnail of ``path`` (cached in memory until the file changes)."""
    return _thumbnail(str(path), path.stat().st_mtime_ns, size)


def check_upload(data: bytes, limit: int = MAX_UPLOAD_BYTES) -> None:
    """Refuse an upload that is empty, too large, not an image, or a decompression bomb;
    reads only the header and then verifies the file, without decoding it in full."""
    from PIL import Image

    if not data:
        raise UploadError("the upload is empty; choose an image file")
    if len(data) > limit:
        raise UploadError(
            f"the upload is {len(data) / 1e6:.1f} MB; the limit is {limit / 1e6:.0f} MB"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > MAX_UPLOAD_PIXELS:
                    raise UploadError(
                        f"the image is {width}×{height} pixels; the limit is "
                        f"{MAX_UPLOAD_PIXELS:,} pixels"
                    )
                img.verify()
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UploadError(f"the image is too large to decode safely ({exc})") from exc
    except Exception as exc:  # PIL raises many kinds for a file that is not an image
        raise UploadError(
            f"the upload is not an image PIL can read ({type(exc).__name__})"
        ) from exc
