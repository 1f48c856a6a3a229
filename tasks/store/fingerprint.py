"""Content fingerprints computed from the bytes the demuxer already reads.

Choice: BLAKE2b-128 of the whole file, fed by the same stream PyAV reads for probing or
converting, so a 5 GB clip in S3 is read once, not once to hash and again to convert.
Bytes the demuxer skips (an MP4 whose index sits at the end is read out of order) are
read at the end, which costs only the skipped ranges. A rerun skips a clip without
reading it at all when the store's own version token (ETag/generation/mtime) and size are
unchanged; the content fingerprint then decides only for clips that were re-written.
"""

from __future__ import annotations

import hashlib
import io

from tasks.errors import StorageError
from tasks.store.storage import redact


class HashingReader(io.RawIOBase):
    """A read-only, seekable file wrapper that hashes the file's bytes in order.

    Only reads that continue the hashed prefix feed the hash; ``fingerprint()`` reads
    whatever was skipped and returns the digest of the whole file.
    """

    def __init__(self, raw, size: int):
        super().__init__()
        self._raw = raw
        self._size = size
        self._pos = 0
        self._hashed = 0
        self._hash = hashlib.blake2b(digest_size=16)
        self.bytes_read = 0
        self.error: StorageError | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._raw.read(n)
        except Exception as e:  # whatever the store raised: a storage fault, worth a retry
            # Kept as well as raised: FFmpeg may swallow it and report a short file instead.
            self.error = StorageError(f"reading failed at byte {self._pos}: {redact(str(e))}")
            raise self.error from e
        start, end = self._pos, self._pos + len(data)
        if start <= self._hashed < end:
            self._hash.update(memoryview(data)[self._hashed - start:])
            self._hashed = end
        self._pos = end
        self.bytes_read += len(data)
        return data

    def readinto(self, b) -> int:  # io.RawIOBase contract
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = self._raw.seek(offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def fingerprint(self) -> str:
        """Digest of the whole file (reads only the ranges not read yet)."""
        if self._hashed < self._size:
            self._raw.seek(self._hashed)
            while chunk := self.read_raw(4 << 20):
                self._hash.update(chunk)
                self._hashed += len(chunk)
                self.bytes_read += len(chunk)
        return f"b2:{self._hash.hexdigest()}"

    def read_raw(self, n: int) -> bytes:
        try:
            return self._raw.read(n)
        except Exception as e:
            raise StorageError(f"reading failed: {redact(str(e))}") from e

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()
