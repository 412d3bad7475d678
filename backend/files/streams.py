"""File-like adapters for streaming through the storage API in constant memory."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator


class CountingReader(io.RawIOBase):
    """Reads a binary file (a storage file) and counts the bytes read so far."""

    def __init__(self, source):
        self._source = source
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._source.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        self.bytes_read += size
        return size


class HashingChunkReader(io.RawIOBase):
    """A readable stream over an iterable of ``bytes`` chunks that hashes (SHA-256) and
    counts what passes through, so generated content can be handed to ``Storage.save``
    without ever being held whole in memory."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = memoryview(b"")
        self._hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        size = min(len(buffer), len(self._pending))
        data, self._pending = self._pending[:size], self._pending[size:]
        buffer[:size] = data
        self._hash.update(data)
        self.size += size
        return size

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()
