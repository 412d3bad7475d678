"""End to end: the API and a real worker process on the configured database and broker. A
real CSV is uploaded and processed by the worker, a report is generated and downloaded."""

import csv
import io

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from backend.files.models import File
from backend.tasks.models import Task, TaskStatus
from backend.tasks.tests.processes import wait_for

from .conftest import sha256

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROWS = 200_000


def _csv() -> bytes:
    lines = ["id,label,price,qty\r\n"]
    for i in range(ROWS):
        qty = "" if i % 10 == 0 else str(i % 7)
        lines.append(f'{i},"item {i}, boxed",{(i % 1000) * 0.25},{qty}\r\n')
    return "".join(lines).encode()


def _expected() -> dict:
    ids = list(range(ROWS))
    prices = [(i % 1000) * 0.25 for i in ids]
    qty = [i % 7 for i in ids if i % 10]
    return {
        "rows": ROWS,
        "columns": [
            {
                "name": "id",
                "count": ROWS,
                "empty": 0,
                "numeric": {
                    "count": ROWS,
                    "sum": sum(ids),
                    "mean": sum(ids) / ROWS,
                    "min": 0,
                    "max": ROWS - 1,
                },
            },
            {"name": "label", "count": ROWS, "empty": 0, "numeric": None},
            {
                "name": "price",
                "count": ROWS,
                "empty": 0,
                "numeric": {
                    "count": ROWS,
                    "sum": sum(prices),
                    "mean": sum(prices) / ROWS,
                    "min": 0.0,
                    "max": 249.75,
                },
            },
            {
                "name": "qty",
                "count": len(qty),
                "empty": ROWS - len(qty),
                "numeric": {
                    "count": len(qty),
                    "sum": sum(qty),
                    "mean": sum(qty) / len(qty),
                    "min": 0,
                    "max": 6,
                },
            },
        ],
    }


def _create(client, task_type: str, input_data: dict) -> str:
    response = client.post(
        "/api/tasks/", {"task_type": task_type, "input_data": input_data}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _finished(task_id, timeout: float = 120) -> Task:
    def done():
        task = Task.objects.get(pk=task_id)
        return task.status in (TaskStatus.COMPLETED, TaskStatus.FAILED) and task

    return wait_for(done, timeout=timeout, interval=0.1, what=f"task {task_id} to finish")


def test_worker_processes_a_csv_then_a_report_is_downloaded(cluster, user, client_for, media):
    cluster.env["MEDIA_ROOT"] = str(media)  # the worker reads the storage the API writes
    cluster.start_worker()
    client = client_for(user)
    content = _csv()

    uploaded = client.post(
        "/api/files/",
        {"file": SimpleUploadedFile("sales.csv", content, "text/csv"), "sha256": sha256(content)},
        format="multipart",
    )
    assert uploaded.status_code == 201, uploaded.content
    file_id = uploaded.json()["id"]

    processing = _create(client, "data_processing", {"file_id": file_id})
    task = _finished(processing)
    assert task.status == TaskStatus.COMPLETED, task.error
    assert task.result == _expected()
    assert task.progress == 100

    broken = client.post(
        "/api/files/",
        {"file": SimpleUploadedFile("broken.csv", b"a,b\n1,2\n3\n", "text/csv")},
        format="multipart",
    ).json()
    failed = _finished(_create(client, "data_processing", {"file_id": broken["id"]}))
    assert failed.status == TaskStatus.FAILED
    assert failed.error == "MalformedCSV: line 3: 1 field(s), expected 2 as in the header"

    report_id = _create(client, "report_generation", {"report": "tasks_export", "format": "csv"})
    report = _finished(report_id)
    assert report.status == TaskStatus.COMPLETED, report.error
    download = client.get(report.result["download_url"])
    assert download.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(download.streaming_content).decode())))
    assert report.result["rows"] == len(rows) == 3
    assert {row["id"]: row["status"] for row in rows} == {
        processing: "completed",
        str(failed.pk): "failed",
        report_id: "running",
    }
    generated = File.objects.get(pk=report.result["file_id"])
    assert generated.owner_id == user.pk and generated.name.endswith(".csv")

    # Once the tasks have ended, the file can be deleted, and its bytes are gone.
    stored = File.objects.get(pk=file_id).storage_name
    assert client.delete(f"/api/files/{file_id}/").status_code == 204
    assert not default_storage.exists(stored)
