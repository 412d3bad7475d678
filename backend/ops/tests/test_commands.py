"""§8 manage.py commands: task_stats, purge_tasks, seed_demo_data (and their errors)."""

import json
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from backend.files.models import File
from backend.ops import broker, demo
from backend.schedules import services as schedule_services
from backend.schedules.models import Schedule
from backend.tasks import types
from backend.tasks.models import ACTIVE_STATUSES, Task, TaskStatus
from backend.tasks.tests.factories import TaskFactory
from backend.tasks.tests.processes import wait_for
from backend.users.models import User
from backend.users.tests.factories import UserFactory

from .conftest import counted

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --- task_stats -------------------------------------------------------------------------


def test_task_stats_table_and_json(patient_broker_reads):
    TaskFactory.create_batch(2, status="pending", task_type="sum")
    TaskFactory(status="failed", task_type="reverse", completed_at=timezone.now())

    def table_answered():  # the broker's figures read in time (see counted)
        broker.reset_cache()
        table = run("task_stats")
        return None if "unknown (the broker did not answer)" in table else table

    table = wait_for(table_answered, timeout=30, interval=0.5, what="the broker's figures")
    assert "Tasks by status" in table
    assert "pending    2" in table and "failed     1" in table
    assert "Last 60 minutes: 0 completed, 1 failed" in table
    assert "Workers online: 0" in table
    assert re.search(r"^Queue depth\nqueue +waiting", table, re.M)
    assert re.search(r"^maintenance +0 *$", table, re.M)

    figures = counted(lambda: json.loads(run("task_stats", "--json")))
    assert figures["by_status"]["pending"] == 2
    assert figures["by_type"]["reverse"] == 1
    assert figures["queue_depth"] == {"tasks": 0, "long": 0, "maintenance": 0}
    assert figures["workers_online"] == 0


# --- purge_tasks ------------------------------------------------------------------------


@pytest.fixture
def aged():
    now = timezone.now()
    old = now - timedelta(days=40)
    tasks = {
        "old_completed": TaskFactory(status="completed", completed_at=old),
        "old_failed": TaskFactory(status="failed", completed_at=old),
        "old_cancelled": TaskFactory(status="cancelled", completed_at=old),
        "recent_completed": TaskFactory(status="completed", completed_at=now),
    }
    for status in ACTIVE_STATUSES:  # old, but active: never purged
        task = TaskFactory(status=status)
        Task.objects.filter(pk=task.pk).update(created_at=old, updated_at=old)
        tasks[f"old_{status}"] = task
    return tasks


def test_purge_dry_run_changes_nothing_and_says_what(aged):
    before = Task.objects.count()
    out = run("purge_tasks", "--older-than", "30", "--dry-run")
    assert "would remove 3 task(s) (cancelled: 1, completed: 1, failed: 1)" in out
    assert "Nothing was changed" in out
    assert Task.objects.count() == before


def test_purge_removes_exactly_the_old_finished_tasks_in_batches(
    aged, django_assert_max_num_queries
):
    out = run("purge_tasks", "--older-than", "30", "--batch-size", "1")
    assert "Removed 3 task(s) (cancelled: 1, completed: 1, failed: 1)" in out
    left = set(Task.objects.values_list("pk", flat=True))
    assert left == {
        aged[key].pk for key in ("recent_completed", "old_scheduled", "old_pending", "old_running")
    }
    assert "Removed 0 task(s)" in run("purge_tasks", "--older-than", "30")


def test_purge_argument_errors():
    for args in (
        ["--older-than", "0"],
        ["--older-than", "x"],
        ["--batch-size", "5"],
        ["--older-than", "800000"],  # before the year 1: no cutoff date to compare with
        ["--older-than", "99999999999999999999"],
    ):
        with pytest.raises(CommandError):
            call_command("purge_tasks", *args)


def test_purge_refuses_a_batch_beyond_a_short_transaction(user):
    """It was passed to the database, which refused it half-way with "bigint out of
    range" (PostgreSQL) or "datatype mismatch" (SQLite); now the argument itself is. Up to
    100,000 were allowed, but more than 65,535 ids are more parameters than PostgreSQL takes
    in one statement: the purge stopped and removed nothing."""
    for size in ("10001", "65536", "99999999999999999999"):
        with pytest.raises(CommandError, match="must be at most 10000"):
            call_command("purge_tasks", "--older-than", "1", "--batch-size", size)
    old = timezone.now() - timedelta(days=40)
    Task.objects.bulk_create(
        Task(owner=user, task_type="sum", status=status, completed_at=old)
        for status in ("completed", "failed", "failed")
    )
    out = run("purge_tasks", "--older-than", "1", "--batch-size", "10000")
    assert "Removed 3 task(s) (completed: 1, failed: 2)" in out


@pytest.mark.django_db(transaction=True)
def test_a_task_a_retry_makes_active_during_a_purge_stays(user):
    """The purge read its batch's ids, then deleted by id alone: a retry committed between
    the two (waited for by the DELETE) had its task, pending again, deleted under it (the
    retry answered 200, the task then 404). It fails without the fix on PostgreSQL only: on
    SQLite the purge's transaction waited for the retry's write lock before reading."""
    import threading

    from django.db import connections, transaction

    from backend.ops import services

    task = TaskFactory(
        owner=user, status="failed", completed_at=timezone.now() - timedelta(days=40)
    )
    updated, release = threading.Event(), threading.Event()

    def retry():
        try:
            with transaction.atomic():
                Task.objects.filter(pk=task.pk, status__in=["failed", "cancelled"]).update(
                    status="pending", completed_at=None, updated_at=timezone.now()
                )
                updated.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=retry)
    thread.start()
    assert updated.wait(10)
    # The purge waits for the retry's row (PostgreSQL) or its write lock (SQLite).
    threading.Timer(1.0, release.set).start()
    removed = services.tasks_purge(older_than=timedelta(days=30))
    thread.join(10)
    assert removed == {}
    assert Task.objects.get(pk=task.pk).status == TaskStatus.PENDING


# --- seed_demo_data ---------------------------------------------------------------------


def _snapshot():
    return (
        sorted(User.objects.values_list("username", flat=True)),
        sorted(Task.objects.values_list("name", "status", "task_type", "owner__username")),
        sorted(Schedule.objects.values_list("name", flat=True)),
        sorted(File.objects.values_list("name", "sha256")),
    )


def test_seed_demo_data_twice_is_the_same_as_once(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    first = run("seed_demo_data", "--users", "2")
    assert "demo1" in first and demo.password(1) in first
    once = _snapshot()

    second = run("seed_demo_data", "--users", "2")
    assert demo.password(1) not in second  # printed once, when created
    assert "0 new" in second and "already there" in second
    assert _snapshot() == once

    registered = types.all_types()
    statuses = {(t, s) for _, s, t, _ in once[1]}
    for kind in registered:
        for status in demo.statuses_of(kind):
            assert (kind.name, status) in statuses, (kind.name, status)
    assert demo.SCHEDULE_NAME in once[2]
    assert once[3][0][0] == demo.FILE_NAME
    # No demo user is past the limit of active tasks.
    for user in User.objects.filter(username__startswith="demo"):
        active = Task.objects.filter(assignee=user, status__in=ACTIVE_STATUSES).count()
        assert active < settings.MAX_ACTIVE_TASKS
    assert Task.objects.filter(status=TaskStatus.COMPLETED).count() >= len(registered)
    # Every input is what the API would have stored for that owner: a demo task that runs
    # (the active ones do) runs as a client's would, e.g. on a file of its own owner's.
    for task in Task.objects.filter(name__startswith=demo.PREFIX).select_related("owner"):
        kind = types.get(task.task_type)
        stored = demo.validated_input(kind, task.owner, task.name, task.input_data)
        assert stored == task.input_data, task.name


def test_seeded_tasks_were_created_before_they_ran(settings, tmp_path):
    """They started and finished up to an hour before the seed stamped them created."""
    settings.MEDIA_ROOT = tmp_path
    run("seed_demo_data", "--users", "2")
    seeded = Task.objects.filter(name__startswith=demo.PREFIX)
    for task in seeded.exclude(started_at=None):
        assert task.created_at < task.started_at <= (task.completed_at or task.started_at), task
    for task in seeded.exclude(completed_at=None):
        assert task.created_at < task.completed_at, task.name
    assert seeded.exclude(completed_at=None).exists()


@pytest.mark.django_db(transaction=True)
def test_two_seeds_at_once_make_what_one_makes(settings, tmp_path):
    """Each waits for the other: the second finds everything there."""
    from backend.common.tests.concurrency import at_once

    settings.MEDIA_ROOT = tmp_path
    outcomes = at_once(lambda i: demo.demo_data_seed(users=2), 2)
    errors = [repr(outcome) for outcome in outcomes if isinstance(outcome, Exception)]
    assert not errors, errors
    together = _snapshot()
    demo.demo_data_seed(users=2)  # nothing missing: creates nothing
    assert _snapshot() == together
    names = [name for name, *_ in together[1]]
    assert len(names) == len(set(names))
    for user in User.objects.filter(username__startswith="demo"):
        active = Task.objects.filter(assignee=user, status__in=ACTIVE_STATUSES).count()
        assert active < settings.MAX_ACTIVE_TASKS


def test_a_seed_again_gives_no_demo_user_more_than_the_limit(settings, tmp_path):
    """The demo's active tasks were handed out by position, not by the places left: after
    its finished tasks were purged and a demo user made tasks of their own, a second seed
    gave them 7 active tasks (the limit is 5)."""
    settings.MEDIA_ROOT = tmp_path
    run("seed_demo_data", "--users", "2")
    demo1 = User.objects.get(username="demo1")
    # Its active demo tasks ran meanwhile (they are real), and the user filled every place.
    gone = Task.objects.filter(name__startswith=demo.PREFIX, status__in=ACTIVE_STATUSES)
    gone.filter(assignee=demo1).delete()
    TaskFactory.create_batch(settings.MAX_ACTIVE_TASKS, owner=demo1, assignee=demo1)

    out = run("seed_demo_data", "--users", "2")
    assert "0 new" not in out
    for user in User.objects.filter(username__startswith="demo"):
        active = Task.objects.filter(assignee=user, status__in=ACTIVE_STATUSES).count()
        limit = settings.MAX_ACTIVE_TASKS if user == demo1 else settings.MAX_ACTIVE_TASKS - 1
        assert active <= limit, (user.username, active)
    # Every demo task is there once, on whichever user had a place.
    names = list(Task.objects.filter(name__startswith=demo.PREFIX).values_list("name", flat=True))
    assert len(names) == len(set(names))
    assert "0 new" in run("seed_demo_data", "--users", "2")


def test_a_seed_skips_a_demo_name_taken_in_another_case(settings, tmp_path):
    """Usernames are unique in any case: an account "Demo1" stopped the seed with an
    IntegrityError traceback. It is someone else's, and given nothing."""
    settings.MEDIA_ROOT = tmp_path
    someone = UserFactory(username="Demo1")
    out = run("seed_demo_data", "--users", "2")
    assert "demo2" in out and "demo3" in out
    assert not Task.objects.filter(owner=someone).exists()
    assert not User.objects.filter(username="demo1").exists()


@pytest.mark.parametrize(
    "someone",
    [
        {"username": "someone", "email": "DEMO1@example.com"},  # the demo email taken
        {"username": "demo1@example.com", "email": "x@example.com"},  # a username
    ],
    ids=["its email taken", "its email another user's username"],
)
def test_a_seed_skips_a_demo_user_whose_email_is_someone_elses(settings, tmp_path, someone):
    """A demo user's email another user had as email stopped the seed with an IntegrityError
    traceback; as username, the seed made a second account that one login name opened."""
    settings.MEDIA_ROOT = tmp_path
    other = UserFactory(**someone)
    out = run("seed_demo_data", "--users", "2")
    assert "demo2" in out and "demo3" in out
    assert not User.objects.filter(username__iexact="demo1").exists()
    assert not Task.objects.filter(owner=other).exists()
    for user in User.objects.exclude(pk=other.pk):
        assert user.identity_conflicts() == {}, user.username


@pytest.mark.parametrize(
    "registered",
    [
        {"email": "mallory@example.net", "password": "attacker-Secret-77"},
    ],
    ids=["its own email and password"],
)
def test_a_seed_gives_nothing_to_someone_who_registered_a_demo_name(settings, tmp_path, registered):
    """A stranger who registered "demo1" first was taken for the demo user: given the demo
    file, the schedule and tasks (run in their name)."""
    settings.MEDIA_ROOT = tmp_path
    someone = User.objects.create_user("demo1", **registered)
    # A task of theirs named as the seed names its own proves nothing.
    TaskFactory(owner=someone, task_type="manual", name="demo: my own notes")
    out = run("seed_demo_data", "--users", "2")
    assert "demo2" in out and "demo3" in out
    assert list(Task.objects.filter(owner=someone).values_list("name", flat=True)) == [
        "demo: my own notes"
    ]
    assert not Task.objects.filter(assignee=someone).exclude(owner=someone).exists()
    assert not File.objects.filter(owner=someone).exists()
    assert not Schedule.objects.filter(owner=someone).exists()
    assert "0 new" in run("seed_demo_data", "--users", "2")  # the seed's own are its own


def test_a_demo_user_who_changed_their_password_or_email_is_still_the_demos(settings, tmp_path):
    """The demo accounts are public (their passwords are printed): one whose password or
    email someone changed was taken for a stranger's, and a run made demo11, demo12, a
    second schedule and a second file."""
    settings.MEDIA_ROOT = tmp_path
    run("seed_demo_data")
    users, schedules, files = User.objects.count(), Schedule.objects.count(), File.objects.count()
    demo1 = User.objects.get(username="demo1")
    demo1.set_password("my-own-Secret-77")
    demo1.save()
    User.objects.filter(username="demo2").update(email="d2@mine.example")
    out = run("seed_demo_data")
    assert "0 new" in out
    assert (User.objects.count(), Schedule.objects.count(), File.objects.count()) == (
        users,
        schedules,
        files,
    )


def test_a_seed_finds_the_demo_users_schedules_full_and_seeds_the_rest(settings, tmp_path):
    """The demo user (its password is public) renamed the demo schedule and made others up
    to the most allowed: the seed stopped on the schedule's refusal with a traceback, and
    its transaction took everything else with it (a deleted demo task was not made again)."""
    settings.MEDIA_ROOT = tmp_path
    settings.MAX_SCHEDULES_PER_USER = 2
    run("seed_demo_data")
    demo1 = User.objects.get(username="demo1")
    Schedule.objects.filter(owner=demo1, name=demo.SCHEDULE_NAME).update(name="my hourly sum")
    schedule_services.schedule_create(
        owner=demo1, task_type="sum", input_data={"numbers": [1]}, interval_seconds=3600
    )
    gone = Task.objects.filter(name__startswith=demo.PREFIX, status=TaskStatus.FAILED).first()
    gone.delete()

    out = run("seed_demo_data")

    assert "schedule not created (demo1: " in out and "1 new" in out, out
    assert Task.objects.filter(name=gone.name).exists()
    assert Schedule.objects.filter(owner=demo1).count() == 2


def test_a_seed_leaves_a_deactivated_demo_user_alone(settings, tmp_path):
    """It gave a deactivated demo1 an enabled schedule and active tasks again, which the
    workers ran in its name."""
    settings.MEDIA_ROOT = tmp_path
    run("seed_demo_data")
    demo1 = User.objects.get(username="demo1")
    Schedule.objects.filter(owner=demo1).delete()
    Task.objects.filter(owner=demo1).delete()
    User.objects.filter(pk=demo1.pk).update(is_active=False)

    run("seed_demo_data")

    assert not Schedule.objects.filter(owner=demo1).exists()
    assert not Task.objects.filter(owner=demo1).exists()
    assert Schedule.objects.filter(name=demo.SCHEDULE_NAME).exclude(owner=demo1).exists()
    for kind in types.all_types():
        for status in demo.statuses_of(kind):
            assert Task.objects.filter(task_type=kind.name, status=status).exists()


def test_the_demo_schedule_fires_no_oftener_than_the_settings_allow(settings, tmp_path):
    """Its hourly interval was fixed: with SCHEDULE_MIN_INTERVAL at two hours, every firing
    was refused (invalid_input)."""
    settings.MEDIA_ROOT = tmp_path
    settings.SCHEDULE_MIN_INTERVAL = 7200
    run("seed_demo_data")
    assert Schedule.objects.get(name=demo.SCHEDULE_NAME).interval_seconds == 7200


def test_a_commands_refusal_by_a_rule_of_the_service_is_one_line():
    from backend.common.commands import ServiceCommand
    from backend.common.errors import Conflict

    class Refused(ServiceCommand):
        def handle(self, *args, **options):
            raise Conflict("demo1 already has 20 schedules (the most allowed).")

    with pytest.raises(CommandError, match=r"^demo1 already has 20 schedules"):
        call_command(Refused())


def test_seed_demo_data_bad_users():
    with pytest.raises(CommandError):
        call_command("seed_demo_data", "--users", "0")


def test_every_command_has_help(capsys):
    for name in ("task_stats", "purge_tasks", "seed_demo_data"):
        with pytest.raises(SystemExit) as exit_info:
            call_command(name, "--help")
        assert exit_info.value.code == 0
        assert "usage:" in capsys.readouterr().out


# --- createsuperuser (make superuser) ---------------------------------------------------


def test_createsuperuser_without_prompts_from_the_environment(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "boss")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "boss@example.com")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "boss-pass-123!")
    out = run("createsuperuser", "--noinput")
    assert "Superuser created successfully" in out
    boss = User.objects.get(username="boss")
    assert boss.is_staff and boss.is_superuser and boss.check_password("boss-pass-123!")
    with pytest.raises(CommandError, match="already taken"):
        run("createsuperuser", "--noinput")


def test_createsuperuser_names_an_email_address_in_use_in_one_line(monkeypatch):
    """It ended in the unique constraint's IntegrityError traceback."""
    UserFactory(email="boss@example.com")
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "other")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "BOSS@example.com")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "boss-pass-123!")
    with pytest.raises(CommandError, match=r"^Error: That email address is already in use\.$"):
        run("createsuperuser", "--noinput")
    assert not User.objects.filter(username="other").exists()


def test_createsuperuser_asks_again_at_once_for_an_email_address_in_use(monkeypatch):
    """At the prompt, a taken address was refused only after both passwords were typed,
    and everything had to be typed again."""
    import builtins

    from django.contrib.auth.management.commands import createsuperuser as stock

    UserFactory(email="boss@example.com")
    asked = []
    answers = iter(["boss2", "BOSS@example.com", "new@example.com"])

    def typed(prompt=""):
        asked.append(prompt)
        return next(answers)

    def password(prompt="Password: "):
        asked.append(prompt)
        return "typed-pass-4242!"

    monkeypatch.setattr(builtins, "input", typed)
    monkeypatch.setattr(stock.getpass, "getpass", password)
    stdin, stderr = StringIO(), StringIO()
    stdin.isatty = lambda: True
    call_command("createsuperuser", stdin=stdin, stdout=StringIO(), stderr=stderr)
    assert stderr.getvalue() == "Error: That email address is already in use.\n"
    assert [prompt.split(":")[0].split(" (")[0] for prompt in asked] == [
        "Username", "Email address", "Email address", "Password", "Password",
    ]  # fmt: skip
    assert User.objects.get(username="boss2").email == "new@example.com"


def createsuperuser_at_the_prompt(monkeypatch, *typed: str) -> str:
    """``createsuperuser`` at a terminal, answered ``typed`` in turn (then a good password
    twice); what it wrote to stderr."""
    import builtins

    from django.contrib.auth.management.commands import createsuperuser as stock

    answers = iter(typed)
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(answers))
    monkeypatch.setattr(stock.getpass, "getpass", lambda prompt="": "typed-pass-4242!")
    stdin, stderr = StringIO(), StringIO()
    stdin.isatty = lambda: True
    call_command("createsuperuser", stdin=stdin, stdout=StringIO(), stderr=stderr)
    return stderr.getvalue()


def test_createsuperuser_refuses_a_username_that_is_another_users_email(monkeypatch):
    """The API refused it; the command made a second account that the login name
    ann@example.com opened as well as ann's own (either one logs in)."""

    UserFactory(username="ann", email="ann@example.com")
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "ANN@example.com")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "ops@example.com")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "boss-pass-123!")
    with pytest.raises(CommandError, match=r"^Error: This username is another user's email"):
        run("createsuperuser", "--noinput")
    UserFactory(username="carl@example.com", email=None)
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "ops")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "Carl@example.com")
    with pytest.raises(CommandError, match=r"^Error: This email is another user's username"):
        run("createsuperuser", "--noinput")
    assert not User.objects.filter(username__in=["ANN@example.com", "ops"]).exists()

    # At the prompt: asked again.
    errors = createsuperuser_at_the_prompt(monkeypatch, "ann@example.com", "ops", "ops@example.com")
    assert errors == "Error: This username is another user's email address.\n"
    assert User.objects.get(username="ops").email == "ops@example.com"


def test_createsuperuser_refuses_an_email_at_an_address_in_brackets(monkeypatch):
    """The API and the admin refuse it; the command made the account, whose admin page then
    refused every save ("Give a domain name")."""

    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "ops")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "ops@[127.0.0.1]")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "boss-pass-123!")
    with pytest.raises(CommandError, match=r"^Error: Give a domain name, not an address in"):
        run("createsuperuser", "--noinput")
    assert not User.objects.exists()

    errors = createsuperuser_at_the_prompt(monkeypatch, "ops", "ops@[127.0.0.1]", "ops@example.com")
    assert errors == "Error: Give a domain name, not an address in brackets.\n"
    assert User.objects.get(username="ops").email == "ops@example.com"


@pytest.mark.parametrize("password", ["123", "password", "boss-the-boss"])
def test_createsuperuser_checks_the_password_from_the_environment(monkeypatch, password):
    """Without prompts, Django creates the account with any password; the validators the
    API and the prompt apply (SPEC §4) now apply here too."""
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "boss-the-boss")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "boss@example.com")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", password)
    with pytest.raises(CommandError, match=r"^Error: DJANGO_SUPERUSER_PASSWORD: "):
        run("createsuperuser", "--noinput")
    assert not User.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_seed_that_fails_leaves_nothing_behind(settings, tmp_path, monkeypatch):
    """All or nothing: demo users whose passwords were never printed are not kept."""
    settings.MEDIA_ROOT = tmp_path

    def refuse(**kwargs):
        raise RuntimeError("the schedule could not be made")

    monkeypatch.setattr(demo.schedule_services, "schedule_create", refuse)
    with pytest.raises(RuntimeError):
        demo.demo_data_seed(users=2)
    assert not User.objects.filter(username__startswith="demo").exists()
    assert not Task.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_createsuperuser_holds_no_transaction_while_it_prompts(monkeypatch):
    """On SQLite a transaction holds the write lock: one open around the prompts made
    every other process wait on a person typing (and then fail, database is locked)."""
    from django.contrib.auth.management.commands import createsuperuser as stock
    from django.db import connection

    seen = []

    def answer(field, message, default=None):
        seen.append(connection.in_atomic_block)
        return {"username": "typed", "email": "typed@example.com"}[field.name]

    def password(prompt="Password: "):
        seen.append(connection.in_atomic_block)
        return "typed-pass-4242!"

    monkeypatch.setattr(stock.getpass, "getpass", password)
    monkeypatch.setattr(stock.Command, "get_input_data", lambda self, *a, **k: answer(*a, **k))
    stdin = StringIO()
    stdin.isatty = lambda: True
    call_command("createsuperuser", stdin=stdin, stdout=StringIO(), stderr=StringIO())
    assert User.objects.get(username="typed").is_superuser
    assert seen and not any(seen)


@pytest.mark.own_stores
@pytest.mark.parametrize(
    "command", ["task_stats", "expire_tasks", "purge_files", "createsuperuser"]
)
def test_a_command_on_a_database_never_migrated_says_what_to_do(tmp_path, command):
    """It ended in a traceback ("no such table"), as when a VAR_DIR given to `make run`
    was not given to the command."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {
        "PATH": os.environ.get("PATH", ""),
        "ENV_FILE": "",
        "DEBUG": "true",
        "VAR_DIR": str(tmp_path),
    }
    args = {
        "purge_files": ["--older-than", "1"],
        "createsuperuser": ["--noinput", "--username", "boss", "--email", "b@example.com"],
    }.get(command, [])
    result = subprocess.run(
        [sys.executable, "manage.py", command, *args],
        cwd=Path(__file__).resolve().parents[3],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "is not migrated: run `make migrate`" in result.stderr
    assert "Traceback" not in result.stderr
