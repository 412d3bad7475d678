"""The admin's actions that change rows need the model's change permission, as Django's own
delete action needs delete: a staff member who may only view sees none of them, and posting
one changes nothing. And nobody deactivates their own account from the admin (the API
refuses it too)."""

import io
import logging

import pytest
from django.contrib.auth.models import Permission
from django.db import connection

from backend.notifications.models import Notification, NotificationStatus
from backend.schedules.tests.factories import make_schedule
from backend.tasks import services as task_services
from backend.tasks.models import Task, TaskStatus
from backend.tasks.tests.factories import TaskFactory
from backend.users.models import User
from backend.users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer(client):
    """Staff with every ``view_*`` permission and no other."""
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    client.force_login(viewer)
    return viewer


def _notification(owner) -> Notification:
    owner.notify_email = ["task.created"]
    owner.save()
    task = task_services.task_create(owner=owner, task_type="manual", input_data={})
    notification = Notification.objects.get(task_id=task.pk)
    Notification.objects.filter(pk=notification.pk).update(
        status=NotificationStatus.FAILED, attempts=8
    )
    return notification


def _cases(owner):
    """(changelist, action, the object, what the object looks like when untouched)."""
    task = TaskFactory(owner=owner)
    schedule = make_schedule(owner=owner)
    notification = _notification(owner)
    target = UserFactory()

    def status():
        return Task.objects.get(pk=task.pk).status

    return [
        ("/admin/tasks/task/", "cancel_tasks", task, status, TaskStatus.PENDING),
        ("/admin/tasks/task/", "retry_tasks", task, status, TaskStatus.PENDING),
        (
            "/admin/schedules/schedule/",
            "disable_schedules",
            schedule,
            lambda: type(schedule).objects.get(pk=schedule.pk).enabled,
            True,
        ),
        (
            "/admin/notifications/notification/",
            "resend",
            notification,
            lambda: Notification.objects.get(pk=notification.pk).status,
            NotificationStatus.FAILED,
        ),
        (
            "/admin/users/user/",
            "deactivate",
            target,
            lambda: User.objects.get(pk=target.pk).is_active,
            True,
        ),
    ]


def test_a_staff_member_who_may_only_view_is_offered_no_action_and_can_run_none(
    client, viewer, user
):
    """Before, a view-only staff member could cancel, retry and expire tasks, pause
    schedules, resend notifications and deactivate any user, a superuser included."""
    for changelist, action, obj, state, untouched in _cases(user):
        page = client.get(changelist)
        assert page.status_code == 200
        assert f'value="{action}"'.encode() not in page.content, action
        client.post(changelist, {"action": action, "_selected_action": [str(obj.pk)]})
        assert state() == untouched, action
    assert b'value="expire_tasks"' not in client.get("/admin/tasks/task/").content
    assert b'value="enable_schedules"' not in client.get("/admin/schedules/schedule/").content


def test_a_staff_member_who_may_only_view_periodic_tasks_cannot_fire_or_switch_them(
    client, viewer, user
):
    """django-celery-beat's actions ask for no permission: staff who could only view
    periodic tasks fired any user's schedule ("1 task was successfully run", a task in its
    owner's name per click) and turned periodic tasks on and off."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    schedule = make_schedule(owner=user)
    every = IntervalSchedule.objects.create(every=300, period=IntervalSchedule.SECONDS)
    other = PeriodicTask.objects.create(name="a job", task="celery.ping", interval=every)
    url = "/admin/django_celery_beat/periodictask/"
    page = client.get(url).content
    for action in ("run_tasks", "enable_tasks", "disable_tasks", "toggle_tasks"):
        assert f'value="{action}"'.encode() not in page, action
    for action, selected in (("run_tasks", schedule.periodic_task), ("disable_tasks", other)):
        answer = client.post(
            url, {"action": action, "_selected_action": [str(selected.pk)]}, follow=True
        )
        shown = [str(message) for message in answer.context["messages"]]
        assert not any("successfully" in message for message in shown), shown
    assert PeriodicTask.objects.get(pk=other.pk).enabled
    client.force_login(UserFactory(is_staff=True, is_superuser=True))  # who may change: all
    page = client.get(url).content
    assert all(f'value="{a}"'.encode() in page for a in ("run_tasks", "disable_tasks"))


def test_a_staff_member_who_may_change_runs_them(client, user):
    editor = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(editor)
    for changelist, action, obj, state, untouched in _cases(user):
        if action == "retry_tasks":
            continue  # a pending task has nothing to retry: refused by the service
        assert f'value="{action}"'.encode() in client.get(changelist).content, action
        client.post(changelist, {"action": action, "_selected_action": [str(obj.pk)]})
        assert state() != untouched, action


def deactivate(client, *users):
    """The users admin's deactivate action on ``users``."""
    return client.post(
        "/admin/users/user/",
        {"action": "deactivate", "_selected_action": [str(user.pk) for user in users]},
        follow=True,
    )


def test_the_admin_does_not_deactivate_its_own_user(client):
    admin = UserFactory(is_staff=True, is_superuser=True)
    other = UserFactory()
    client.force_login(admin)
    response = deactivate(client, admin, other)
    assert b"You cannot deactivate your own account" in response.content
    assert b"1 user(s) deactivated." in response.content
    admin.refresh_from_db()
    other.refresh_from_db()
    assert admin.is_active and not other.is_active


@pytest.mark.parametrize(
    "url",
    [
        "/admin/schedules/schedule/?created_at__year=99999",
        "/admin/users/user/?date_joined__year=99999",
        "/admin/tasks/task/?task_type__exact=%00",
        "/admin/schedules/schedule/?task_type__exact=%00",
        "/admin/tasks/task/?name=x%00",
    ],
)
def test_a_hand_edited_admin_list_url_goes_back_to_the_list(client, url):
    """A year Python cannot hold, or a NUL (which PostgreSQL refuses in text; SQLite
    finds nothing), answered 500; now the list answers as it does to a filter it does not
    know."""
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    response = client.get(url)
    if "%00" in url and connection.vendor == "sqlite":
        assert response.status_code == 200
        return
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")
    assert client.get(response["Location"]).status_code == 200
    # Kept with ?e=1 (as the list sends it back), it goes to the bare list.
    again = client.get(f"{url}&e=1")
    assert again.status_code == 302 and "?" not in again["Location"]


def test_the_view_on_site_link_for_an_id_that_is_not_a_key_is_a_404(client, user):
    """Django's view catches ValueError only; every key here is a UUID, whose refusal is a
    ValidationError: a 500 with its traceback."""
    from django.contrib.contenttypes.models import ContentType

    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    users = ContentType.objects.get_for_model(User).pk
    assert client.get(f"/admin/r/{users}/1/").status_code == 404
    assert client.get(f"/admin/r/{users}/{user.pk}/").status_code == 404  # no page of its own


def test_an_admin_action_on_an_id_that_is_not_one_goes_back_to_the_list(client, user):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    response = client.post(
        "/admin/tasks/task/",
        {"action": "cancel_tasks", "_selected_action": ["not-a-uuid"]},
        follow=True,
    )
    assert response.status_code == 200
    assert b"The selection holds an id that is not valid." in response.content


def test_an_actions_own_error_is_not_passed_off_as_a_bad_selection(client, user, monkeypatch):
    """Only an id that is not one is answered with the list and a message: an action that
    fails on good ids is an error of its own (500, logged with its traceback)."""
    from backend.tasks import admin as task_admin

    def broken(self, request, queryset):
        raise ValueError("a bug in the action")

    monkeypatch.setattr(task_admin.TaskAdmin, "cancel_tasks", broken)
    client.raise_request_exception = False
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    task = TaskFactory(owner=user)
    # From the plain list, and from a filtered, searched or sorted one (as actions usually
    # are run), whose query is fine: the action's error is a 500.
    for query in ("", "?status__exact=pending", "?q=report", "?o=2"):
        response = client.post(
            f"/admin/tasks/task/{query}",
            {"action": "cancel_tasks", "_selected_action": [str(task.pk)]},
        )
        assert response.status_code == 500, query


def test_an_action_posted_to_a_list_url_it_cannot_query_goes_back_to_the_list(client, user):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    task = TaskFactory(owner=user)
    response = client.post(
        "/admin/users/user/?date_joined__year=99999",
        {"action": "deactivate", "_selected_action": [str(task.owner_id)], "index": 0},
    )
    assert response.status_code == 302 and response["Location"].endswith("?e=1")
    user.refresh_from_db()
    assert user.is_active


def test_staff_who_are_not_superusers_cannot_take_over_a_superuser_in_the_admin(client):
    """The API refused it; the admin let staff with the users' change permission deactivate
    a superuser, set their password (then sign in as them), or tick their own
    is_superuser."""
    staff = UserFactory(is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__in=["view_user", "change_user"]))
    root, other = UserFactory(is_staff=True, is_superuser=True), UserFactory()
    client.force_login(staff)

    response = deactivate(client, root, other)
    assert b"Only a superuser can change or deactivate" in response.content
    assert b"1 user(s) deactivated." in response.content
    root.refresh_from_db()
    other.refresh_from_db()
    assert root.is_active and not other.is_active

    old_hash = root.password
    url = f"/admin/users/user/{root.pk}/password/"
    new = {"password1": "Another-long-Secret-77", "password2": "Another-long-Secret-77"}
    assert client.post(url, new).status_code == 403
    assert client.get(f"/admin/users/user/{root.pk}/change/").status_code == 200  # viewed
    response = client.post(
        f"/admin/users/user/{root.pk}/change/",
        {"username": "taken", "email": root.email, "is_active": "on", "is_staff": "on"},
    )
    assert response.status_code == 403
    root.refresh_from_db()
    assert root.password == old_hash and root.username != "taken"

    page = client.get(f"/admin/users/user/{staff.pk}/change/").content.decode()
    # Shown, not editable: superuser status, groups and permissions (a staff member with
    # the users' change permission gave themselves every permission), and their own access.
    for field in ("is_superuser", "groups", "user_permissions", "is_active", "is_staff"):
        assert f'name="{field}"' not in page, field
    everything = list(Permission.objects.values_list("pk", flat=True))
    response = client.post(
        f"/admin/users/user/{staff.pk}/change/",
        {
            "username": staff.username,
            "email": staff.email,
            "name": "x",
            "user_permissions": everything,
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.content
    staff.refresh_from_db()
    assert staff.name == "x" and staff.is_active and staff.is_staff
    assert set(staff.user_permissions.values_list("codename", flat=True)) == {
        "view_user",
        "change_user",
    }


def test_the_services_keep_the_superuser_rule(user):
    from backend.common.errors import PermissionDenied
    from backend.users import services

    staff = UserFactory(is_staff=True)
    root = UserFactory(is_staff=True, is_superuser=True)
    with pytest.raises(PermissionDenied):
        services.user_update(user=root, data={"name": "x"}, actor=staff)
    with pytest.raises(PermissionDenied):
        services.user_deactivate(user=root, actor=staff)
    assert services.users_deactivate(queryset=User.objects.filter(pk=root.pk), actor=staff) == 0
    other_root = UserFactory(is_staff=True, is_superuser=True)
    services.user_update(user=root, data={"name": "y"}, actor=other_root)
    services.user_update(user=root, data={"name": "z"}, actor=root)
    services.user_deactivate(user=root, actor=other_root)


def test_the_deactivate_action_counts_only_who_it_changed(client):
    admin = UserFactory(is_staff=True, is_superuser=True)
    dormant, active = UserFactory(is_active=False), UserFactory()
    client.force_login(admin)
    response = deactivate(client, dormant, active)
    assert b"1 user(s) deactivated." in response.content


def test_a_user_deactivated_by_the_action_has_it_in_their_admin_history(client):
    """A change form's save was logged, a deactivation by the action was not: a user's
    History never said who deactivated them. Only those it changed are logged."""
    from django.contrib.admin.models import LogEntry

    admin = UserFactory(is_staff=True, is_superuser=True)
    dormant, active = UserFactory(is_active=False), UserFactory()
    client.force_login(admin)
    deactivate(client, admin, dormant, active)
    entries = LogEntry.objects.all()
    assert [(e.object_id, e.get_change_message(), e.user_id) for e in entries] == [
        (str(active.pk), "Deactivated by an admin action.", admin.pk)
    ]


def add_user_in_the_admin(client, username: str, email: str):
    """The admin's add-user form posted by a superuser, signed in here."""
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client.post(
        "/admin/users/user/add/",
        {
            "username": username,
            "email": email,
            "name": "",
            "password1": "a-long-Secret-4242",
            "password2": "a-long-Secret-4242",
            "usable_password": "true",
        },
    )


def test_the_admins_user_forms_refuse_a_username_that_is_another_users_email(client):
    """The API refused it; the admin's add form saved it, and one login name opened two
    accounts."""
    UserFactory(username="ann", email="ann@example.com")
    response = add_user_in_the_admin(client, "Ann@Example.com", "")
    assert response.status_code == 200
    assert b"This username is another user&#x27;s email address." in response.content
    assert not User.objects.filter(username__iexact="ann@example.com").exists()


def test_the_admin_refuses_an_email_at_a_domain_literal(client):
    """The API refused it; the admin's user form saved it."""
    response = add_user_in_the_admin(client, "lit", "lit@[10.1.2.3]")
    assert response.status_code == 200
    assert b"Give a domain name, not an address in brackets." in response.content
    assert not User.objects.filter(username="lit").exists()


@pytest.fixture
def console():
    """What the project's console handler (LOGGING) prints during the test."""
    [handler] = [h for h in logging.getLogger().handlers if h.name == "console"]
    printed = io.StringIO()
    previous = handler.setStream(printed)
    yield printed
    handler.setStream(previous)


def test_an_admin_403_is_one_warning_line_without_a_traceback(client, viewer, console):
    """Each one printed a PermissionDenied traceback of some 40 lines after its warning."""
    assert client.get("/admin/users/user/add/").status_code == 403
    root = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(root)
    assert client.get("/admin/tasks/task/add/").status_code == 403
    printed = console.getvalue()
    assert printed.count("WARNING django.request: Forbidden (Permission denied): ") == 2
    assert "Traceback" not in printed and "PermissionDenied" not in printed


def test_a_500_keeps_its_traceback(client, monkeypatch, console):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("django.contrib.admin.sites.AdminSite.get_app_list", broken)
    root = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(root)
    client.raise_request_exception = False
    assert client.get("/admin/").status_code == 500
    printed = console.getvalue()
    assert "ERROR django.request: Internal Server Error: /admin/" in printed
    assert "Traceback" in printed and "RuntimeError: boom" in printed


def test_a_query_too_large_for_the_database_is_a_400(client, monkeypatch):
    """SQLite refuses to build some queries too large (a thousand words' conditions did,
    before searches were bounded): that was answered 503, "the database is unavailable",
    which sent an operator looking for an outage."""
    from django.db import OperationalError

    from backend.tasks.admin import TaskAdmin

    def refused(*args, **kwargs):
        raise OperationalError("Expression tree is too large (maximum depth 1000)")

    monkeypatch.setattr(TaskAdmin, "get_search_results", refused)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    response = client.get("/admin/tasks/task/", {"q": "words"})
    assert response.status_code == 400
    assert b"too large for the database" in response.content


def test_every_admin_list_search_takes_at_most_the_apis_number_of_words():
    from django.contrib import admin

    from backend.common.admin import BoundedSearchMixin

    searched = [a for a in admin.site._registry.values() if a.search_fields]
    assert searched and all(isinstance(a, BoundedSearchMixin) for a in searched), [
        type(a).__name__ for a in searched if not isinstance(a, BoundedSearchMixin)
    ]


def test_a_search_of_many_words_searches_the_first_ones_and_says_so(client, viewer, user):
    """A thousand words made one page of the tasks list four scans of 5,000 LIKE
    conditions (98 s at 70,000 tasks), by staff who may only view it."""
    from backend.common.filters import MAX_SEARCH_WORDS

    words = [f"w{n}" for n in range(1000)]
    task = TaskFactory(owner=user, name=" ".join(words[:MAX_SEARCH_WORDS]))
    response = client.get("/admin/tasks/task/", {"q": " ".join(words)})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [task]  # the first 20 words: found
    shown = [str(message) for message in response.context["messages"]]
    assert any(f"the first {MAX_SEARCH_WORDS} of these 1000" in m for m in shown), shown


def test_a_list_refuses_filters_by_regular_expression_or_into_json(client, viewer):
    """Any staff member allowed to view a list could filter it by a regular expression
    (``?name__regex=^(a{1,20}|a)+$`` froze a web process on SQLite for minutes) or by a
    lookup into a JSON field (``?input_data__contains=a``: a 500 on SQLite)."""
    TaskFactory(name="a" * 24 + "!")
    refused = [
        "/admin/tasks/task/?name__regex=%5E(a%2B)%2B%24",
        "/admin/tasks/task/?description__iregex=x",
        "/admin/tasks/task/?input_data__contains=a",
        "/admin/tasks/task/?result__contained_by=%7B%7D",
        "/admin/users/user/?username__regex=%5B",
        "/admin/files/file/?name__regex=x",
        "/admin/schedules/schedule/?name__iregex=x",
        "/admin/notifications/notification/?target__regex=x",
        "/admin/tasks/task/?owner__username__regex=x",
    ]
    for url in refused:
        assert client.get(url).status_code == 400, url
    # What the lists offer still filters.
    for url in [
        "/admin/tasks/task/?status__exact=pending",
        "/admin/tasks/task/?name__startswith=aaa",
        "/admin/users/user/?is_staff__exact=1",
    ]:
        assert client.get(url).status_code == 200, url
