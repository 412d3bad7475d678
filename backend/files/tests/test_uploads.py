"""The upload handler: bytes are hashed and counted chunk by chunk as they stream to a
temporary file; nothing is held in memory whole and refused uploads leave nothing."""

import io
import os
import tracemalloc

import pytest
from django.core.files import uploadedfile
from django.http.multipartparser import MultiPartParser

from backend.files.models import File
from backend.files.uploads import FRAMING_ALLOWANCE, HashedUploadedFile, HashingUploadHandler

from .conftest import multipart, sha256


def parse(body: bytes, content_type: str, handler: HashingUploadHandler, declared=None):
    meta = {"CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(declared or len(body))}
    return MultiPartParser(meta, io.BytesIO(body), [handler], "utf-8").parse()


def test_a_large_upload_streams_in_chunks_in_constant_memory(upload_dir, monkeypatch):
    content = os.urandom(20 * 1024 * 1024)
    body, content_type = multipart({}, filename="big.bin", content=content)
    chunks = []
    original = HashingUploadHandler.receive_data_chunk

    def spy(self, raw_data, start):
        chunks.append(len(raw_data))
        return original(self, raw_data, start)

    monkeypatch.setattr(HashingUploadHandler, "receive_data_chunk", spy)
    handler = HashingUploadHandler(max_size=len(content))
    tracemalloc.start()
    try:
        _, files = parse(body, content_type, handler)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    upload = files["file"]
    try:
        # Far less than the 20 MB upload was ever allocated at once.
        assert peak < 2 * 1024 * 1024, f"peak {peak} bytes"
        assert isinstance(upload, HashedUploadedFile)
        assert sum(chunks) == len(content) and max(chunks) <= handler.chunk_size
        assert len(chunks) >= len(content) // handler.chunk_size
        assert upload.size == len(content) and upload.sha256 == sha256(content)
        assert os.path.dirname(upload.temporary_file_path()) == str(upload_dir)
        assert upload.read(10) == content[:10]
    finally:
        upload.close()
    assert list(upload_dir.iterdir()) == []


def test_past_the_limit_the_upload_stops_and_its_temporary_file_is_gone(upload_dir, monkeypatch):
    received = []
    original = HashingUploadHandler.receive_data_chunk

    def spy(self, raw_data, start):
        received.append(len(raw_data))
        return original(self, raw_data, start)

    monkeypatch.setattr(HashingUploadHandler, "receive_data_chunk", spy)
    handler = HashingUploadHandler(max_size=100_000)
    body, content_type = multipart({}, filename="big.bin", content=b"x" * 150_000)
    _, files = parse(body, content_type, handler)
    assert handler.too_large and "file" not in files
    # Stopped at the first chunk past the limit: the rest was never handed over.
    assert sum(received) <= 100_000 + handler.chunk_size
    assert list(upload_dir.iterdir()) == []


def test_a_declared_length_far_over_the_limit_is_refused_unread(upload_dir):
    handler = HashingUploadHandler(max_size=1000)
    body, content_type = multipart({}, filename="a.bin", content=b"x" * 10)
    stream = io.BytesIO(body)
    meta = {"CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(2000 + FRAMING_ALLOWANCE + 1)}
    post, files = MultiPartParser(meta, stream, [handler], "utf-8").parse()
    assert handler.too_large and not files and not post
    assert stream.tell() == 0


def test_a_body_up_to_twice_the_limit_is_read_to_its_end_and_dropped(upload_dir):
    handler = HashingUploadHandler(max_size=100_000)
    body, content_type = multipart({"sha256": "a" * 64}, filename="a.bin", content=b"z" * 190_000)
    stream = io.BytesIO(body)
    meta = {"CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body))}
    post, files = MultiPartParser(meta, stream, [handler], "utf-8").parse()
    assert handler.too_large and not files and post["sha256"] == "a" * 64
    assert stream.tell() == len(body)  # so the client can read the 413
    assert list(upload_dir.iterdir()) == []


def test_an_interrupted_upload_leaves_no_temporary_file(upload_dir):
    handler = HashingUploadHandler(max_size=10**6)
    body, content_type = multipart({}, filename="a.bin", content=b"y" * 300_000)
    # The client went away half-way: the body ends before its declared length.
    _, files = parse(body[:200_000], content_type, handler, declared=len(body))
    assert "file" not in files
    assert list(upload_dir.iterdir()) == []


def test_the_api_never_makes_an_in_memory_upload(client_for, user, post_upload, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an InMemoryUploadedFile was made")

    monkeypatch.setattr(uploadedfile.InMemoryUploadedFile, "__init__", refuse)
    # Small files too: the default handlers would keep anything under 2.5 MB in memory.
    response = post_upload(client_for(user), b"tiny")
    assert response.status_code == 201
    assert File.objects.get().size == 4


@pytest.mark.django_db
def test_the_handler_is_the_projects_upload_handler(settings):
    assert settings.FILE_UPLOAD_HANDLERS == ["backend.files.uploads.HashingUploadHandler"]
