from django.http import FileResponse
from django.utils.http import http_date

from . import services
from .models import File

STREAM_BLOCK_SIZE = 64 * 1024


def last_modified(file: File) -> int:
    """When the file's bytes were last modified, in whole seconds since the epoch: when they
    were uploaded (they never change)."""
    return int(file.created_at.timestamp())


def file_response(file: File) -> FileResponse:
    """The file's bytes streamed from the storage as an attachment named after it."""
    response = FileResponse(
        services.file_open(file),
        as_attachment=True,
        filename=file.name,
        content_type=file.content_type,
    )
    response.block_size = STREAM_BLOCK_SIZE
    response["Content-Length"] = str(file.size)
    response["ETag"] = f'"{file.sha256}"'
    response["Last-Modified"] = http_date(last_modified(file))
    response["Cache-Control"] = "private, no-cache"
    return response
