"""Demo data for a fresh installation (``manage.py seed_demo_data``): demo users, tasks of
every registered type in every status they can have, a schedule and a file. Idempotent: what
exists (found by its name) is left alone and only what is missing is created.

Each task's input goes through its type's input serializer with the task's owner, as a
request's would, so a demo task that runs (the active ones do) runs like one created
through the API: a ``data_processing`` task reads a file of its own owner's."""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from backend.common.errors import DomainError
from backend.files import services as file_services
from backend.files.models import File
from backend.schedules import services as schedule_services
from backend.schedules.models import Schedule
from backend.tasks import types
from backend.tasks.models import ACTIVE_STATUSES, Task, TaskStatus
from backend.users.models import User

PREFIX = "demo: "
FILE_NAME = "demo-temperatures.csv"
FILE_CONTENT = b"city,temperature\nOslo,4.5\nLisbon,18.25\nCairo,27\nQuito,14.5\n"
SCHEDULE_NAME = f"{PREFIX}sum every hour"
COMPLETED_RUNS = 4  # per type, spread over the last hour, so the dashboard has a history


def username(i: int) -> str:
    return f"demo{i}"


DEMO_USERNAMES = r"^demo[0-9]+$"  # every username(i)


def password(i: int) -> str:
    return f"demo-password-{i}"


def sample_input(task_type: types.TaskType, file_id) -> dict:
    """An input for each type shipped, as a client would send it; ``{}`` for a type this
    list does not know."""
    samples = {
        "sum": {"numbers": [1, 2, 3.5]},
        "countdown": {"seconds": 3},
        "manual": {},
        "email": {"to": ["demo1@example.com"], "subject": "Hello", "body": "A demo mail."},
        "reminder": {"message": "Water the plants"},
        "report_generation": {"report": "task_summary", "format": "json"},
        "data_processing": {"file_id": str(file_id)},
        "api_integration": {"url": "https://example.com/", "method": "GET"},
    }
    if task_type.name in samples:
        return samples[task_type.name]
    if "data" in task_type.input_serializer().fields:  # the text types
        return {"data": "Async Task Manager demo text"}
    return {}


def statuses_of(task_type: types.TaskType) -> list[str]:
    """Every status this type can be in (a manual task is never scheduled)."""
    return [
        status
        for status in TaskStatus.values
        if task_type.runs_on_worker or status != TaskStatus.SCHEDULED
    ]


@dataclass
class Seeded:
    users_created: list[tuple[str, str]] = field(default_factory=list)
    users: int = 0
    tasks_created: int = 0
    tasks: int = 0
    schedule_created: bool = False
    schedule_refused: str = ""  # why the schedule's service refused it (it was left out)
    file_created: bool = False


def validated_input(task_type: types.TaskType, owner: User, name: str, data: dict) -> dict:
    """``data`` as the type's input serializer stores it for a task of ``owner``'s (raises
    ValidationError when it is not valid for them)."""
    inputs = task_type.input_for(data, owner=owner, task={"name": name, "description": ""})
    inputs.is_valid(raise_exception=True)
    return inputs.validated_data


CREATED_BEFORE_RUN = timedelta(seconds=30)


def _task_rows(task_type: types.TaskType, now) -> list[dict]:
    """(name, status, timestamps) of the demo tasks of one type."""
    rows = []
    for status in statuses_of(task_type):
        count = COMPLETED_RUNS if status == TaskStatus.COMPLETED else 1
        for n in range(count):
            finished = now - timedelta(minutes=5 + 13 * n)
            row = {
                "name": f"{PREFIX}{task_type.name} ({status}{f' {n + 1}' if count > 1 else ''})",
                "task_type": task_type.name,
                "status": status,
                "max_attempts": task_type.max_attempts,
            }
            if status == TaskStatus.SCHEDULED:
                row["run_at"] = now + timedelta(days=1)
            if status == TaskStatus.RUNNING:
                row.update(started_at=now, heartbeat_at=now, attempts=1)
            if status in (TaskStatus.COMPLETED, TaskStatus.FAILED):
                row.update(
                    started_at=finished - timedelta(seconds=1 + 2 * n), completed_at=finished
                )
                row["attempts"] = 1
            if status == TaskStatus.COMPLETED:
                row.update(result={"demo": True}, progress=100)
            if status == TaskStatus.FAILED:
                row["error"] = "demo: a failed run"
            if status == TaskStatus.CANCELLED:
                row["completed_at"] = finished
            rows.append(row)
    return rows


@contextmanager
def _one_seed_at_a_time():
    """Two runs at once would each find the same things missing and create them twice
    (beyond MAX_ACTIVE_TASKS): the second waits for the first. PostgreSQL: a session
    advisory lock (any machine); SQLite: a lock on a file beside the database file."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [_SEED_LOCK])
            try:
                yield
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_SEED_LOCK])
        return
    name = str(connection.settings_dict["NAME"])
    path = f"{name}.seed.lock" if os.path.isabs(name) else settings.VAR_DIR / "seed.lock"
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


_SEED_LOCK = 0x5EED_DE30  # any number of this service's own


def demo_data_seed(*, users: int = 3) -> Seeded:
    """Create what is missing of the demo data. Active tasks are shared out so each demo user
    keeps a free place under MAX_ACTIVE_TASKS to try the API with (more users are created
    when ``users`` cannot hold them all). One run at a time."""
    with _one_seed_at_a_time():
        return _seed(users)


@transaction.atomic
def _seed(users: int) -> Seeded:
    now = timezone.now()
    seeded = Seeded()
    registered = types.all_types()
    active_needed = sum(
        1 for kind in registered for status in statuses_of(kind) if status in ACTIVE_STATUSES
    )
    per_user = max(1, settings.MAX_ACTIVE_TASKS - 1)
    count = max(users, math.ceil(active_needed / per_user))
    numbers = itertools.count(1)
    held: dict = {}  # a demo user's active tasks, as the limit counts them

    def another_person() -> User:
        """The next demo user, created when missing. A name taken in another case
        (usernames are unique in any case), or its email taken (as an email or as a
        username: either one logs in), is someone else's: skipped. So is an account of
        that name with neither the demo's email nor its password, nor the demo's file or
        schedule: someone registered it (it was taken over: given the demo's file,
        schedule and tasks, run in its name). A demo user whose password or email was
        changed by whoever uses it is still the demo's (skipped, the seed made the file
        and schedule a second time). A deactivated one is skipped too: it was given an
        enabled schedule and active tasks, which the workers ran in its name."""
        while True:
            i = next(numbers)
            user = User.objects.filter(username__iexact=username(i)).first()
            if user is None:
                user = User(username=username(i), email=f"{username(i)}@example.com")
                if (
                    User.objects.filter(email__iexact=user.email).exists()
                    or user.identity_conflicts()
                ):
                    continue
                user = User.objects.create_user(
                    username(i), user.email, password(i), name=f"Demo user {i}"
                )
                seeded.users_created.append((username(i), password(i)))
            elif (
                not user.is_active
                or user.username != username(i)
                or not (
                    (user.email or "").lower() == f"{username(i)}@example.com"
                    or _holds_the_seeds(user)
                    or user.check_password(password(i))
                )
            ):
                continue
            # Locked as a create locks its assignee, so that none takes a place counted here.
            User.objects.select_for_update(no_key=True).filter(pk=user.pk).exists()
            held[user.pk] = Task.objects.filter(assignee=user, status__in=ACTIVE_STATUSES).count()
            return user

    people = [another_person() for _ in range(count)]
    first = people[0]
    files: dict = {}

    def file_of(owner: User) -> File:
        """``owner``'s demo file, stored when missing."""
        if owner.pk not in files:
            found = File.objects.filter(owner=owner, name=FILE_NAME).first()
            if found is None:
                found = file_services.file_store(
                    owner_id=owner.pk,
                    name=FILE_NAME,
                    chunks=[FILE_CONTENT],
                    content_type="text/csv",
                )
                seeded.file_created = True
            files[owner.pk] = found
        return files[owner.pk]

    file_of(first)

    if not Schedule.objects.filter(owner=first, name=SCHEDULE_NAME).exists():
        # Refused when the demo user holds the most schedules allowed (a demo user renamed
        # or deleted this one and made others): the rest is seeded all the same.
        try:
            with transaction.atomic():
                schedule_services.schedule_create(
                    owner=first,
                    task_type="sum",
                    input_data={"numbers": [1, 2, 3]},
                    name=SCHEDULE_NAME,
                    # Hourly, unless SCHEDULE_MIN_INTERVAL asks for more (each firing of a
                    # shorter one was refused).
                    interval_seconds=max(3600, settings.SCHEDULE_MIN_INTERVAL),
                )
        except DomainError as exc:
            seeded.schedule_refused = f"{first.username}: {exc.detail}"
        else:
            seeded.schedule_created = True

    # Of every demo user, those beyond ``count`` too (given places an earlier run found taken).
    existing = set(
        Task.objects.filter(
            owner__username__regex=DEMO_USERNAMES, name__startswith=PREFIX
        ).values_list("name", flat=True)
    )
    new, other_given = [], 0
    for kind in registered:
        for row in _task_rows(kind, now):
            seeded.tasks += 1
            if row["name"] in existing:
                continue
            if row["status"] in ACTIVE_STATUSES:
                # The first with a place left under the limit, one kept free (a re-run finds
                # places taken by tasks made through the API meanwhile).
                owner = next((p for p in people if held[p.pk] < per_user), None)
                if owner is None:
                    owner = another_person()
                    people.append(owner)
                held[owner.pk] += 1
            else:
                owner = people[other_given % len(people)]
                other_given += 1
            file_id = file_of(owner).pk if kind.name == "data_processing" else None
            data = sample_input(kind, file_id)
            row["input_data"] = validated_input(kind, owner, row["name"], data)
            new.append(Task(owner=owner, assignee=owner, **row))
    seeded.users = len(people)
    Task.objects.bulk_create(new)
    # Created before they ran (the INSERT stamps every row with the time of the seed).
    Task.objects.filter(pk__in=[task.pk for task in new]).exclude(
        started_at=None, completed_at=None
    ).update(created_at=Coalesce("started_at", "completed_at") - CREATED_BEFORE_RUN)
    seeded.tasks_created = len(new)
    return seeded


def _holds_the_seeds(user: User) -> bool:
    """Whether ``user`` has the file an earlier seed stored (its name and bytes) or its
    schedule. (A task's name proves nothing: anyone may name one "demo: …".)"""
    return (
        File.objects.filter(
            owner=user, name=FILE_NAME, sha256=hashlib.sha256(FILE_CONTENT).hexdigest()
        ).exists()
        or Schedule.objects.filter(owner=user, name=SCHEDULE_NAME).exists()
    )
