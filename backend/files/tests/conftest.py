import hashlib
import uuid
from pathlib import Path

import pytest

# The end-to-end fixture (real worker processes) of the task tests, shared here.
from backend.tasks.tests.conftest import cluster, pytest_runtest_makereport  # noqa: F401


@pytest.fixture(autouse=True)
def media(settings, tmp_path) -> Path:
    """Each test stores bytes in a folder of its own, and uploads spool to another one, so
    a test can see exactly what was left behind."""
    root = tmp_path / "media"
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    settings.MEDIA_ROOT = str(root)
    settings.FILE_UPLOAD_TEMP_DIR = str(uploads)
    return root


@pytest.fixture
def full_disk(monkeypatch) -> None:
    """The storage's disk full: its writes go to /dev/full, which the kernel answers with
    ENOSPC."""
    from django.core.files.storage import FileSystemStorage

    def onto_a_full_disk(self, name, content):
        with open("/dev/full", "wb") as device:
            for chunk in content.chunks():
                device.write(chunk)
            device.flush()
        return name

    monkeypatch.setattr(FileSystemStorage, "_save", onto_a_full_disk)


@pytest.fixture
def upload_dir(settings) -> Path:
    return Path(settings.FILE_UPLOAD_TEMP_DIR)


def stored_files(root: Path) -> list[Path]:
    """Every file under the storage folder."""
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def multipart(
    fields: dict[str, str], *, filename: bytes | str, content: bytes, content_type="text/csv"
) -> tuple[bytes, str]:
    """A multipart body written byte by byte, so a test can send any file name (the test
    client would clean it first). Returns ``(body, content type header)``."""
    boundary = uuid.uuid4().hex
    if isinstance(filename, str):
        filename = filename.encode()
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="'.encode()
        + filename
        + f'"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@pytest.fixture
def post_upload():
    """``post_upload(client, content, filename=..., sha256=..., **headers)``: a raw multipart
    POST to /api/files/."""

    def post(client, content: bytes, *, filename="data.csv", content_type="text/csv", **extra):
        fields = {key: extra.pop(key) for key in list(extra) if key == "sha256"}
        body, header = multipart(
            fields, filename=filename, content=content, content_type=content_type
        )
        return client.generic("POST", "/api/files/", body, content_type=header, **extra)

    return post
