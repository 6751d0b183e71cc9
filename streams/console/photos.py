"""The photos curators look at: served by the console itself, never by a bucket URL.

`/image/<object id>?etag=<etag>&size=full|thumb` -> the ledger's object, fetched from S3 only when the
ledger holds a decision on exactly that content (streams.ledger.images: key + etag, no dot segments).
What the browser gets is always an image type the console chose from the bytes, never the store's
Content-Type (an object uploaded as text/html stays inert): JPEG, PNG, GIF and WebP pass through as they
are; anything else a browser cannot show (16-bit TIFF scans, CMYK, ...) and every thumbnail is decoded
with the pipeline's own decoder (streams.contract.imaging) and re-encoded as JPEG. Renditions are kept
in a small in-memory LRU (by bucket, key, etag and size: the content never changes under an etag).
"""
from __future__ import annotations

import io
import threading
from collections import OrderedDict

from PIL import Image

from streams.contract.imaging import ImageRejected, load_image, shrink_to_rgb
from streams.ledger.errors import LedgerError, NotFound
from streams.ledger.images import ObjectImages
from streams.ledger.service import Ledger

SIZES = {"thumb": 320, "full": 2048}
WEB_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
PASS_THROUGH_BYTES = 16 * 2**20


class NotDisplayable(NotFound):
    """The object's bytes are no image the console can show."""


class StoreUnavailable(LedgerError):
    """The S3 store did not answer (the page shows the photo as unavailable; a reload tries again)."""
    status = 503


class Photos:
    def __init__(self, ledger: Ledger, client=None, max_pixels: int | None = None, cache_bytes: int = 96 * 2**20):
        self.ledger, self.images = ledger, ObjectImages(ledger, client)
        self.max_pixels = max_pixels or ledger.settings.max_image_pixels
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple, tuple[bytes, str]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def get(self, object_id: int, etag: str, size: str = "full") -> tuple[bytes, str]:
        """(bytes, media type) of the object's photo at `size` ("full" or "thumb")."""
        obj = self.ledger.object(object_id)
        key = (obj.bucket, obj.key, etag, size)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        try:
            data, _ = self.images.get(obj.bucket, obj.key, etag)
        except LedgerError:
            raise
        except Exception as e:  # noqa: BLE001 - minio: connection refused, timeouts, 5xx
            raise StoreUnavailable(f"the photo store does not answer: {type(e).__name__}") from None
        out = self._render(data, SIZES[size], passthrough=size == "full")
        with self._lock:
            if key not in self._cache and len(out[0]) <= self.cache_bytes // 8:
                self._cache[key] = out
                self._held += len(out[0])
                while self._held > self.cache_bytes:
                    _, (old, _) = self._cache.popitem(last=False)
                    self._held -= len(old)
        return out

    def _render(self, data: bytes, box: int, passthrough: bool) -> tuple[bytes, str]:
        try:
            fmt = Image.open(io.BytesIO(data)).format
        except Exception:  # noqa: BLE001 - Pillow raises many kinds for bytes that are no image
            raise NotDisplayable("the object is no image the console can show") from None
        if passthrough and fmt in WEB_FORMATS and len(data) <= PASS_THROUGH_BYTES:
            return data, WEB_FORMATS[fmt]
        try:
            img = load_image(data, self.max_pixels, (box, box))
            small = shrink_to_rgb(img, (box, box))
        except ImageRejected as e:
            raise NotDisplayable(f"the photo cannot be shown: {e}") from None
        small.thumbnail((box, box))
        buf = io.BytesIO()
        small.save(buf, "JPEG", quality=85)
        return buf.getvalue(), "image/jpeg"
