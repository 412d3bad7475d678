"""The upload handler of ``POST /api/files/``: hashes and counts the bytes as the request
streams in, writes them to a temporary file (deleted when closed), and stops the upload as
soon as it passes ``MAX_UPLOAD_SIZE``. Nothing is ever held in memory whole.

Once stopped, nothing more is hashed or written: the rest of the body is read and dropped, so
that every HTTP client receives the 413 (a server that answers before the body is read
leaves clients that do not wait for ``100 Continue`` with a broken pipe). A body declared
larger than twice the limit is refused without reading it at all."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import QueryDict
from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.http.multipartparser import MultiPartParserError
from django.utils.datastructures import MultiValueDict
from rest_framework.exceptions import ParseError
from rest_framework.parsers import DataAndFiles, MultiPartParser

from .names import FALLBACK_NAME

# Room for the multipart framing and the small form fields (``sha256``) around the file.
FRAMING_ALLOWANCE = 64 * 1024


def refused_unread(content_length: int, max_size: int) -> bool:
    """Declared so large that the body is not worth reading even to drop it."""
    return content_length > 2 * max_size + FRAMING_ALLOWANCE


class HashedUploadedFile(TemporaryUploadedFile):
    """A temporary file with the SHA-256 (hex) and size of its bytes, known when complete."""

    sha256: str = ""


class HashingUploadHandler(FileUploadHandler):
    chunk_size = 64 * 1024

    def __init__(self, request=None, max_size: int | None = None):
        super().__init__(request)
        self.max_size = settings.MAX_UPLOAD_SIZE if max_size is None else max_size
        # Set when the upload was refused for its size; the view answers 413.
        self.too_large = False
        self._hash = None
        self._received = 0

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if refused_unread(content_length, self.max_size):
            self.too_large = True
            return QueryDict(encoding=encoding), MultiValueDict()
        return None

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self._hash = hashlib.sha256()
        self._received = 0
        self.file = HashedUploadedFile(
            self.file_name, self.content_type, 0, self.charset, self.content_type_extra
        )

    def receive_data_chunk(self, raw_data: bytes, start: int):
        self._received += len(raw_data)
        if self._received > self.max_size:
            self.too_large = True
            self.file.close()  # a closed temporary file is deleted at once
            # The rest of the body (less than the limit again) is read and dropped.
            raise StopUpload(connection_reset=False)
        self._hash.update(raw_data)
        try:
            self.file.write(raw_data)
        except OSError:
            # A full temporary folder: the part written so far is deleted now (Django cleans
            # up only for StopUpload, and it stayed until the garbage collector came, the
            # folder full meanwhile: every upload after it refused too).
            self.discard()
            raise
        return None

    def file_complete(self, file_size: int):
        self.file.seek(0)
        self.file.size = file_size
        self.file.sha256 = self._hash.hexdigest()
        return self.file

    def upload_interrupted(self):
        self.discard()

    def discard(self) -> None:
        """Close (and so delete) the temporary file of this upload, if any."""
        file = getattr(self, "file", None)
        if file is not None:
            file.close()


class _NamedParts(DjangoMultiPartParser):
    """Django's multipart parser, except that a file part whose name is a path alone (``..``,
    ``a/b/``) or nothing printable is kept, under the service's fallback name: Django
    dropped the part, and the upload was refused as "No file was submitted"."""

    def sanitize_file_name(self, file_name):
        return super().sanitize_file_name(file_name) or FALLBACK_NAME


class UploadParser(MultiPartParser):
    """DRF's multipart parser over ``_NamedParts``."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        meta = request.META.copy()
        meta["CONTENT_TYPE"] = media_type
        try:
            encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
            parts = _NamedParts(meta, stream, request.upload_handlers, encoding)
            return DataAndFiles(*parts.parse())
        except MultiPartParserError as exc:
            raise ParseError(f"Multipart form parse error - {exc}") from exc
