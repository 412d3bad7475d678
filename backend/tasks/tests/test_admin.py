"""The admin: lists with filters and search, and the actions that call the services."""

import time
from datetime import timedelta

import pytest
from django.contrib import messages
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.messages import get_messages
from django.utils import timezone

from backend.tasks.models import Task, TaskStatus
from backend.users.tests.factories import UserFactory

from .factories import TaskFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/tasks/task/"


@pytest.fixture
def admin_client(client):
    admin = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(admin)
    return client


def act(admin_client, action, tasks):
    return admin_client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [str(t.pk) for t in tasks]},
        follow=True,
    )


def sent_messages(response) -> list[tuple[int, str]]:
    return [(m.level, m.message) for m in get_messages(response.wsgi_request)]


def delete_confirmed(admin_client, tasks):
    """The delete action's confirmation page, answered yes."""
    body = {"action": "delete_selected", "_selected_action": [str(t.pk) for t in tasks]}
    return admin_client.post(CHANGELIST, {**body, "post": "yes"})


def logged_deletions() -> list[str]:
    return list(LogEntry.objects.filter(action_flag=DELETION).values_list("object_id", flat=True))


def test_changelist_filters_and_search(admin_client, user):
    TaskFactory(owner=user, name="find me")
    TaskFactory(owner=user, name="other", status=TaskStatus.FAILED)
    response = admin_client.get(CHANGELIST, {"q": "find"})
    assert response.status_code == 200 and b"find me" in response.content
    assert b"other" not in response.content
    response = admin_client.get(CHANGELIST, {"status__exact": "failed"})
    assert b"other" in response.content and b"find me" not in response.content


def test_detail_page_renders(admin_client, user):
    task = TaskFactory(owner=user)
    assert admin_client.get(f"{CHANGELIST}{task.pk}/change/").status_code == 200


def test_cancel_action(admin_client, user):
    active = TaskFactory(owner=user)
    done = TaskFactory(owner=user, status=TaskStatus.COMPLETED)
    response = act(admin_client, "cancel_tasks", [active, done])
    assert b"1 task(s) cancelled" in response.content
    assert Task.objects.get(pk=active.pk).status == TaskStatus.CANCELLED
    assert Task.objects.get(pk=done.pk).status == TaskStatus.COMPLETED


def test_cancel_and_retry_by_an_action_are_in_each_tasks_admin_history(admin_client, user):
    """A change form's save was logged, a cancel or retry by an action was not: a task's
    History never said who cancelled or retried it."""
    active = TaskFactory(owner=user, status=TaskStatus.PENDING)
    done = TaskFactory(owner=user, status=TaskStatus.COMPLETED)
    act(admin_client, "cancel_tasks", [active, done])
    act(admin_client, "retry_tasks", [active])

    entries = LogEntry.objects.filter(object_id=str(active.pk)).order_by("action_time")
    assert [entry.get_change_message() for entry in entries] == [
        "Cancelled by an admin action.",
        "Queued again by an admin action.",
    ]
    assert all(entry.user.is_superuser for entry in entries)  # the admin who acted
    assert not LogEntry.objects.filter(object_id=str(done.pk)).exists()


def test_a_cancel_across_many_finished_tasks_counts_them_in_one_line(admin_client, user):
    """A selection of 50,000 (\"select all\") took two minutes of refusals, one message
    each (7 MB of page): the tasks an action does not apply to are now counted at once."""
    active = TaskFactory(owner=user)
    finished = [TaskFactory(owner=user, status=TaskStatus.COMPLETED) for _ in range(12)]
    response = act(admin_client, "cancel_tasks", [active, *finished])
    assert sent_messages(response) == [
        (
            messages.WARNING,
            "12 task(s) left as they are: only scheduled, pending or running tasks are cancelled.",
        ),
        (messages.INFO, "1 task(s) cancelled."),
    ]
    assert Task.objects.get(pk=active.pk).status == TaskStatus.CANCELLED


@pytest.mark.django_db(transaction=True)
def test_a_bulk_retry_sends_every_task_however_long_it_takes(admin_client, settings, monkeypatch):
    """In the web tier a request's sends share one BROKER_PUBLISH_TIMEOUT: a retry of 300
    tasks, each its own transaction and send, spent it on the database, left 206 tasks to
    the dispatcher and tripped the breaker, the broker healthy all along."""
    from backend.tasks import queue, services

    monkeypatch.setattr(queue, "_whole_sends_bounded", True)  # as backend/wsgi.py sets it
    queue._request_began()
    settings.BROKER_PUBLISH_TIMEOUT = 0.05
    retry = services.task_retry

    def slow_retry(**kwargs):
        time.sleep(0.03)  # the database's share of each task's retry, stretched
        return retry(**kwargs)

    monkeypatch.setattr(services, "task_retry", slow_retry)
    failed = [TaskFactory(owner=UserFactory(), status=TaskStatus.FAILED) for _ in range(4)]
    act(admin_client, "retry_tasks", failed)
    assert not Task.objects.filter(enqueued_at__isnull=True).exists()
    assert queue.accepting()


def test_many_refusals_alike_are_one_line_with_their_count(admin_client, user, settings):
    settings.MAX_ACTIVE_TASKS = 5
    failed = [TaskFactory(owner=user, status=TaskStatus.FAILED) for _ in range(16)]
    response = act(admin_client, "retry_tasks", failed)
    shown = sent_messages(response)
    assert shown[0] == (messages.INFO, "5 task(s) queued again.")
    assert len(shown) == 2 and shown[1][0] == messages.WARNING
    assert shown[1][1].startswith("11 refused (active_task_limit), such as “"), shown
    assert Task.objects.filter(status=TaskStatus.PENDING).count() == 5


def test_retry_action(admin_client, user):
    failed = TaskFactory(owner=user, status=TaskStatus.FAILED)
    act(admin_client, "retry_tasks", [failed])
    assert Task.objects.get(pk=failed.pk).status == TaskStatus.PENDING


def test_expire_action_only_touches_overdue_tasks(admin_client, user):
    overdue = TaskFactory(owner=user, deadline=timezone.now() - timedelta(seconds=1))
    on_time = TaskFactory(owner=user, deadline=timezone.now() + timedelta(hours=1))
    response = act(admin_client, "expire_tasks", [overdue, on_time])
    assert b"1 overdue task(s)" in response.content
    assert Task.objects.get(pk=overdue.pk).error == "deadline exceeded"
    assert Task.objects.get(pk=on_time.pk).status == TaskStatus.PENDING


def test_a_task_expired_by_the_action_has_it_in_its_admin_history(admin_client, user):
    """Cancel and retry by an action were logged, an expiry was not. Only the tasks it
    changed are logged: not one on time, nor one already finished."""
    past = timezone.now() - timedelta(seconds=1)
    overdue = TaskFactory(owner=user, deadline=past)
    finished = TaskFactory(owner=user, deadline=past, status=TaskStatus.COMPLETED)
    on_time = TaskFactory(owner=user, deadline=timezone.now() + timedelta(hours=1))
    act(admin_client, "expire_tasks", [overdue, finished, on_time])
    entries = LogEntry.objects.all()
    assert [(e.object_id, e.get_change_message()) for e in entries] == [
        (str(overdue.pk), "Expired by an admin action.")
    ]
    assert entries[0].user.is_superuser  # the admin who acted


def test_periodic_tasks_are_in_the_admin(admin_client):
    assert admin_client.get("/admin/django_celery_beat/periodictask/").status_code == 200


def test_a_save_of_a_task_deleted_meanwhile_says_so_alone(admin_client, user, monkeypatch):
    """A refused save said why and then "… was changed successfully" (and logged a change)."""
    from backend.tasks.admin import TaskAdmin

    task = TaskFactory(owner=user, name="before", status=TaskStatus.PENDING)
    read_before = Task.objects.get(pk=task.pk)
    Task.objects.filter(pk=task.pk).delete()  # another request's, after this one read it
    monkeypatch.setattr(TaskAdmin, "get_object", lambda *args, **kwargs: read_before)

    response = admin_client.post(
        f"{CHANGELIST}{task.pk}/change/", {"name": "after", "description": "", "priority": "high"}
    )

    assert response.status_code == 302 and response.url.startswith(CHANGELIST)
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert shown == ["This task was deleted meanwhile; nothing was saved."]
    assert not LogEntry.objects.exists()


def test_editing_in_the_admin_changes_only_the_edited_fields(admin_client, user):
    task = TaskFactory(owner=user, name="before", status=TaskStatus.PENDING)
    # A worker moves the task on while the admin's form is open.
    Task.objects.filter(pk=task.pk).update(status=TaskStatus.RUNNING, progress=40)
    response = admin_client.post(
        f"{CHANGELIST}{task.pk}/change/",
        {"name": "after", "description": "", "priority": "high"},
        follow=True,
    )
    assert response.status_code == 200
    task.refresh_from_db()
    assert (task.name, task.priority, task.priority_rank) == ("after", "high", 2)
    assert (task.status, task.progress) == (TaskStatus.RUNNING, 40)


def test_delete_selected_asks_first(admin_client, user):
    task = TaskFactory(owner=user)
    response = admin_client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [str(task.pk)]}
    )
    assert response.status_code == 200 and b"Are you sure" in response.content
    assert Task.objects.filter(pk=task.pk).exists()


def test_delete_selected_refuses_running_tasks_and_deletes_the_rest(admin_client, user):
    running = TaskFactory(owner=user, name="busy", status=TaskStatus.RUNNING)
    pending = TaskFactory(owner=user, name="idle")
    response = delete_confirmed(admin_client, [running, pending])
    assert response.status_code == 302
    assert list(Task.objects.values_list("pk", flat=True)) == [running.pk]
    assert sent_messages(response) == [
        (messages.INFO, "1 task(s) deleted."),
        (messages.WARNING, "“busy (running)”: A running task cannot be deleted; cancel it first."),
    ]
    assert logged_deletions() == [str(pending.pk)]


def test_delete_selected_of_many_tasks_goes_in_batches(admin_client, user, monkeypatch):
    """One at a time (a transaction and a log entry each), a selection of 30,000 tasks
    outlasted the web server's timeout half-way, and nobody was told how far it got."""
    from backend.tasks.services import lifecycle

    monkeypatch.setattr(lifecycle, "DELETE_BATCH", 3)
    running = TaskFactory(owner=user, name="busy", status=TaskStatus.RUNNING)
    others = [TaskFactory(owner=user, status=TaskStatus.COMPLETED) for _ in range(7)]
    response = delete_confirmed(admin_client, [*others, running])
    assert response.status_code == 302
    assert list(Task.objects.values_list("pk", flat=True)) == [running.pk]
    assert sent_messages(response) == [
        (messages.INFO, "7 task(s) deleted."),
        (messages.WARNING, "“busy (running)”: A running task cannot be deleted; cancel it first."),
    ]
    assert sorted(logged_deletions()) == sorted(str(t.pk) for t in others)


def test_delete_selected_runs_as_many_statements_for_many_tasks_as_for_few(admin_client, user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def statements_to_delete(count: int) -> int:
        tasks = [TaskFactory(owner=user, status=TaskStatus.COMPLETED) for _ in range(count)]
        with CaptureQueriesContext(connection) as queries:
            delete_confirmed(admin_client, tasks)
        assert not Task.objects.exists()
        return len(queries)

    assert statements_to_delete(3) == statements_to_delete(30)


def test_delete_page_refuses_a_running_task(admin_client, user):
    running = TaskFactory(owner=user, name="busy", status=TaskStatus.RUNNING)
    response = admin_client.post(f"{CHANGELIST}{running.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert response["Location"] == f"{CHANGELIST}{running.pk}/change/"
    assert sent_messages(response) == [
        (messages.ERROR, "“busy (running)”: A running task cannot be deleted; cancel it first.")
    ]
    assert Task.objects.get(pk=running.pk).status == TaskStatus.RUNNING
    assert logged_deletions() == []
    page = admin_client.get(response["Location"])
    assert page.status_code == 200 and b"cancel it first" in page.content
    # The page capitalises a message's first letter: the name stays as written, in quotes.
    assert "“busy (running)”: A running task".encode() in page.content


def test_delete_page_deletes_a_task_that_is_not_running(admin_client, user):
    task = TaskFactory(owner=user, name="done", status=TaskStatus.COMPLETED)
    response = admin_client.post(f"{CHANGELIST}{task.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and response["Location"] == CHANGELIST
    assert not Task.objects.filter(pk=task.pk).exists()
    assert sent_messages(response) == [
        (messages.SUCCESS, "The task “done (completed)” was deleted successfully.")
    ]
    assert logged_deletions() == [str(task.pk)]


def test_a_task_failed_on_its_deadline_gets_a_new_one_and_is_retried_in_the_admin(
    admin_client, user
):
    """The deadline was read-only in the admin, while the retry action said "move the
    deadline before retrying": a dead end without the API."""
    task = TaskFactory(
        owner=user,
        status=TaskStatus.FAILED,
        error="deadline exceeded",
        deadline=timezone.now() - timedelta(minutes=5),
    )
    response = act(admin_client, "retry_tasks", [task])
    assert b"move the deadline" in response.content
    later = timezone.localtime() + timedelta(days=1)
    response = admin_client.post(
        f"{CHANGELIST}{task.pk}/change/",
        {
            "name": task.name,
            "description": task.description,
            "priority": task.priority,
            "deadline_0": later.strftime("%Y-%m-%d"),
            "deadline_1": later.strftime("%H:%M:%S"),
        },
    )
    assert response.status_code == 302, response.content
    task.refresh_from_db()
    assert abs(task.deadline - later) < timedelta(seconds=1)
    act(admin_client, "retry_tasks", [task])
    assert Task.objects.get(pk=task.pk).status == TaskStatus.PENDING

    # A deadline in the past is refused by the service's rule, named on the form.
    earlier = timezone.localtime() - timedelta(days=1)
    response = admin_client.post(
        f"{CHANGELIST}{task.pk}/change/",
        {
            "name": task.name,
            "description": task.description,
            "priority": task.priority,
            "deadline_0": earlier.strftime("%Y-%m-%d"),
            "deadline_1": earlier.strftime("%H:%M:%S"),
        },
        follow=True,
    )
    assert b"The deadline must be in the future." in response.content
    task.refresh_from_db()
    assert abs(task.deadline - later) < timedelta(seconds=1)


def test_the_change_form_holds_a_description_to_the_apis_limit(admin_client, user):
    """The model took a description of any length; PATCH takes 10,000 characters."""
    task = TaskFactory(owner=user, name="before", description="short")
    form = {"name": "before", "priority": task.priority}
    response = admin_client.post(
        f"{CHANGELIST}{task.pk}/change/", {**form, "description": "x" * 10_001}
    )
    assert response.status_code == 200
    assert b"Ensure this field has no more than 10000 characters." in response.content
    task.refresh_from_db()
    assert task.description == "short"
    response = admin_client.post(
        f"{CHANGELIST}{task.pk}/change/", {**form, "description": "y" * 10_000}
    )
    assert response.status_code == 302
    task.refresh_from_db()
    assert task.description == "y" * 10_000


@pytest.mark.parametrize("action", ["cancel_tasks", "delete_selected"])
def test_an_action_across_more_than_it_takes_at_once_is_refused_at_once(
    admin_client, user, monkeypatch, action
):
    """A "select all" over 200,000 tasks: a delete ran 41 s, then failed (a 503) on its
    65,535 query parameters; a retry ran 224 s, past a web worker's 120 s. A selection
    across the pages larger than an action takes is refused before anything is done."""
    from backend.common import admin as common_admin

    monkeypatch.setattr(common_admin, "MAX_ACTION_SELECTION", 3)
    tasks = TaskFactory.create_batch(4, owner=user)
    across = {"action": action, "select_across": "1", "index": "0"}
    body = {**across, "_selected_action": [str(tasks[0].pk)]}
    response = admin_client.post(CHANGELIST, body, follow=True)
    assert response.status_code == 200
    assert sent_messages(response) == [
        (
            messages.ERROR,
            "An action takes at most 3 tasks at once; this selection has 4. Narrow it with "
            "the filters or the search (to delete many, the purge_tasks and purge_files "
            "commands do it in batches).",
        )
    ]
    assert Task.objects.filter(status=TaskStatus.PENDING).count() == 4
    # Narrowed by a filter to what it takes, the same action goes on.
    Task.objects.filter(pk=tasks[3].pk).update(status=TaskStatus.COMPLETED)
    response = admin_client.post(f"{CHANGELIST}?status__exact=pending", body, follow=True)
    if action == "cancel_tasks":
        assert (messages.INFO, "3 task(s) cancelled.") in sent_messages(response)
        assert Task.objects.filter(status=TaskStatus.CANCELLED).count() == 3
    else:
        assert b"Are you sure" in response.content
