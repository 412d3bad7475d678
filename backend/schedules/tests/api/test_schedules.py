"""The schedule endpoints over HTTP: shapes, validation, limits, visibility, runs."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_celery_beat.models import PeriodicTask

from backend.schedules import services
from backend.schedules.api import views
from backend.schedules.models import Schedule, ScheduleRun
from backend.schedules.tests.factories import make_schedule
from backend.tasks.models import Task, TaskStatus
from backend.tasks.tests.factories import TaskFactory

pytestmark = pytest.mark.django_db

URL = "/api/schedules/"
SCHEDULE_FIELDS = {
    "id", "name", "description", "task_type", "input_data", "priority", "deadline_seconds",
    "interval_seconds", "crontab", "timezone", "enabled", "owner", "owner_username",
    "periodic_task", "next_run_at", "last_run_at", "total_runs", "created_at", "updated_at",
}  # fmt: skip
RUN_FIELDS = {"id", "fired_at", "outcome", "task", "task_status", "code", "detail"}
EVERY_5_MIN_SUM = {
    "task_type": "sum",
    "input_data": {"numbers": [1, 2, 3]},
    "name": "five-minute sum",
    "interval_seconds": 300,
}
WEEKDAY_REMINDER = {
    "task_type": "reminder",
    "input_data": {"message": "Stand-up in 15 minutes"},
    "crontab": "0 9 * * 1-5",
    "timezone": "Europe/Paris",
}


@pytest.fixture
def client(client_for, user):
    return client_for(user)


def detail(schedule, action=None) -> str:
    base = f"{URL}{schedule if isinstance(schedule, str) else schedule.pk}/"
    return f"{base}{action}/" if action else base


def fired_periodic_tasks() -> int:
    return PeriodicTask.objects.filter(task=services.FIRE_TASK).count()


# --- create -----------------------------------------------------------------------------


def test_create_an_interval_schedule(client, user):
    response = client.post(URL, {**EVERY_5_MIN_SUM, "deadline_seconds": 120}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == SCHEDULE_FIELDS
    assert body["interval_seconds"] == 300 and body["crontab"] is None
    assert body["timezone"] == "UTC" and body["enabled"] is True
    assert body["deadline_seconds"] == 120 and body["priority"] == "normal"
    assert body["owner"] == str(user.pk) and body["owner_username"] == user.username
    assert body["next_run_at"] and body["last_run_at"] is None and body["total_runs"] == 0
    schedule = Schedule.objects.get(pk=body["id"])
    assert schedule.input_data == {"numbers": [1, 2, 3]}
    assert PeriodicTask.objects.get(pk=body["periodic_task"]).interval.every == 300


def test_create_a_weekday_reminder_in_paris(client):
    response = client.post(URL, {**WEEKDAY_REMINDER, "crontab": " 0  9 * * 1-5"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["crontab"] == "0 9 * * 1-5" and body["interval_seconds"] is None
    assert body["timezone"] == "Europe/Paris"
    crontab = PeriodicTask.objects.get(pk=body["periodic_task"]).crontab
    assert (crontab.hour, crontab.day_of_week, str(crontab.timezone)) == (
        "9",
        "1-5",
        "Europe/Paris",
    )
    # 09:00 in Paris is 07:00 or 08:00 UTC, depending on the season.
    next_run = datetime.fromisoformat(body["next_run_at"].replace("Z", "+00:00"))
    local = next_run.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (9, 0) and local.isoweekday() <= 5


def test_next_run_at_across_the_dst_change(client):
    created = client.post(URL, WEEKDAY_REMINDER, format="json").json()
    friday_before_the_change = datetime(2026, 3, 27, 8, 0, tzinfo=UTC)  # 09:00 in Paris
    PeriodicTask.objects.filter(pk=created["periodic_task"]).update(
        last_run_at=friday_before_the_change
    )

    body = client.get(detail(created["id"])).json()

    # Monday 30 March, 09:00 summer time in Paris.
    assert body["next_run_at"] == "2026-03-30T07:00:00Z"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**EVERY_5_MIN_SUM, "input_data": {"numbers": []}}, "input_data"),
        ({**EVERY_5_MIN_SUM, "input_data": {"numbers": [1], "typo": 1}}, "input_data"),
        ({**EVERY_5_MIN_SUM, "input_data": [1, 2]}, "input_data"),
        ({**EVERY_5_MIN_SUM, "task_type": "nope"}, "task_type"),
        ({**EVERY_5_MIN_SUM, "priority": "meh"}, "priority"),
        ({**EVERY_5_MIN_SUM, "crontab": "*/5 * * * *"}, "crontab"),
        ({**EVERY_5_MIN_SUM, "crontab": "*/5 * * * *"}, "interval_seconds"),
        ({"task_type": "sum", "input_data": {"numbers": [1]}}, "interval_seconds"),
        ({"task_type": "sum", "input_data": {"numbers": [1]}, "crontab": ""}, "crontab"),
        ({**EVERY_5_MIN_SUM, "interval_seconds": 59}, "interval_seconds"),
        ({**EVERY_5_MIN_SUM, "interval_seconds": "300"}, "interval_seconds"),
        ({**EVERY_5_MIN_SUM, "interval_seconds": True}, "interval_seconds"),
        ({**WEEKDAY_REMINDER, "crontab": "0 25 * * 1-5"}, "crontab"),
        ({**WEEKDAY_REMINDER, "crontab": "0 9 * *"}, "crontab"),
        ({**WEEKDAY_REMINDER, "timezone": "Europe/Atlantis"}, "timezone"),
        ({**WEEKDAY_REMINDER, "input_data": {"message": ""}}, "input_data"),
        ({**EVERY_5_MIN_SUM, "deadline_seconds": 0}, "deadline_seconds"),
        ({**EVERY_5_MIN_SUM, "deadline": "2030-01-01T00:00:00Z"}, "deadline"),
        ({**EVERY_5_MIN_SUM, "run_at": "2030-01-01T00:00:00Z"}, "run_at"),
        ({**EVERY_5_MIN_SUM, "callback_url": "https://hooks.example.com/x"}, "callback_url"),
        ({**EVERY_5_MIN_SUM, "enabled": "maybe"}, "enabled"),
        ({**EVERY_5_MIN_SUM, "intervall_seconds": 600}, "intervall_seconds"),  # a typo
        (
            {
                "task_type": "email",
                "input_data": {
                    "to": ["ok@example.com", "not-an-address"],
                    "subject": "s",
                    "body": "b",
                },
                "interval_seconds": 300,
            },
            "input_data",
        ),
    ],
)
def test_bad_input_is_400_naming_the_field_and_writes_nothing(client, body, field):
    response = client.post(URL, body, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert not Schedule.objects.exists()
    assert fired_periodic_tasks() == 0


def test_a_bad_crontab_field_is_named(client):
    response = client.post(URL, {**WEEKDAY_REMINDER, "crontab": "0 25 * * 1-5"}, format="json")
    assert "hour field '25'" in response.json()["crontab"][0]


def test_a_bad_recipient_is_named(client):
    body = {
        "task_type": "email",
        "input_data": {"to": ["ok@example.com", "not-an-address"], "subject": "s", "body": "b"},
        "interval_seconds": 300,
    }
    response = client.post(URL, body, format="json")
    assert response.json()["input_data"]["to"] == ["'not-an-address' is not a valid email address."]


@pytest.mark.parametrize(
    "template",
    [
        {"task_type": "sum", "input_data": {"numbers": [True, "2"]}},
        {"task_type": "countdown", "input_data": {"seconds": 0}},
        {"task_type": "reverse", "input_data": {"data": 5, "extra": 1}},
        {"task_type": "email", "input_data": {"to": [], "subject": "a\nb"}},
        {"task_type": "nope", "input_data": {}},
        {"task_type": "sum", "input_data": {"numbers": [1]}, "name": "x" * 201},
    ],
)
def test_a_template_is_judged_exactly_as_a_task_create(client, template):
    as_task = client.post("/api/tasks/", template, format="json")
    as_schedule = client.post(URL, {**template, "interval_seconds": 300}, format="json")

    assert as_task.status_code == as_schedule.status_code == 400
    task_errors = as_task.json()
    schedule_errors = as_schedule.json()
    for field in ("task_type", "input_data", "name"):
        assert schedule_errors.get(field) == task_errors.get(field)
    assert not Task.objects.exists() and not Schedule.objects.exists()


def test_an_email_schedule_mails_its_owners_address_of_the_firing(client, user):
    """The template was stored with its defaults filled in at creation: every firing
    mailed the address the owner had then, with the subject of the schedule's first name,
    however often they changed them since (a reminder follows the owner's address)."""
    user.email = "first@example.com"
    user.save()
    body = {"task_type": "email", "input_data": {"body": "weekly numbers"}, "name": "weekly"}
    created = client.post(URL, {**body, "interval_seconds": 300}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["input_data"] == {"body": "weekly numbers"}  # as sent
    me = client.patch("/api/users/me/", {"email": "now@example.com"}, format="json")
    renamed = client.patch(f"{URL}{created.json()['id']}/", {"name": "renamed"}, format="json")
    assert (me.status_code, renamed.status_code) == (200, 200), renamed.content

    run = services.schedule_fire(schedule_id=created.json()["id"])
    task = Task.objects.get(pk=run.task_id)
    assert task.input_data == {
        "to": ["now@example.com"],
        "subject": "renamed",
        "body": "weekly numbers",
    }


def test_interval_minimum_follows_the_setting(client, settings):
    settings.SCHEDULE_MIN_INTERVAL = 5
    response = client.post(URL, {**EVERY_5_MIN_SUM, "interval_seconds": 5}, format="json")
    assert response.status_code == 201
    response = client.post(URL, {**EVERY_5_MIN_SUM, "interval_seconds": 4}, format="json")
    assert response.status_code == 400
    assert "at least 5" in response.json()["interval_seconds"][0]


@pytest.mark.parametrize("minimum", [60, 5])
def test_the_schema_gives_the_settings_minimum_interval(client, settings, minimum):
    settings.SCHEDULE_MIN_INTERVAL = minimum
    schema = client.get("/api/schema/", {"format": "json"}).json()
    for name in ("ScheduleWriteRequest", "PatchedScheduleWriteRequest"):
        field = schema["components"]["schemas"][name]["properties"]["interval_seconds"]
        assert field["minimum"] == minimum
    response = client.post(URL, {**EVERY_5_MIN_SUM, "interval_seconds": 0}, format="json")
    assert response.status_code == 400
    assert f"at least {minimum} (SCHEDULE_MIN_INTERVAL" in response.json()["interval_seconds"][0]


def test_the_schedule_past_the_limit_is_409_and_writes_nothing(client, user, settings):
    settings.MAX_SCHEDULES_PER_USER = 20
    for _ in range(20):
        make_schedule(user)
    periodic_tasks = PeriodicTask.objects.count()

    response = client.post(URL, EVERY_5_MIN_SUM, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "schedule_limit" and response.json()["detail"]
    assert Schedule.objects.filter(owner=user).count() == 20
    assert PeriodicTask.objects.count() == periodic_tasks


def test_create_needs_authentication(api_client):
    assert api_client.post(URL, EVERY_5_MIN_SUM, format="json").status_code == 401
    assert api_client.get(URL).status_code == 401


# --- read -------------------------------------------------------------------------------


def test_list_is_paginated_and_owner_scoped(client, user, other_user, client_for, staff):
    mine = [make_schedule(user) for _ in range(3)]
    theirs = make_schedule(other_user)

    body = client.get(URL, {"page_size": 2}).json()
    assert body["count"] == 3 and len(body["results"]) == 2 and body["next"]
    assert {s["id"] for s in client.get(URL).json()["results"]} == {str(s.pk) for s in mine}

    assert client.get(detail(theirs)).status_code == 404
    everyone = client_for(staff).get(URL).json()
    assert everyone["count"] == 4


def test_list_runs_a_constant_number_of_queries(client, user):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(URL, {"page_size": 100}).status_code == 200
        return len(captured)

    make_schedule(user)
    one = queries()
    for _ in range(6):
        make_schedule(user, crontab="*/5 * * * *", timezone="Europe/Paris")
    services.schedule_fire(schedule_id=Schedule.objects.first().pk)
    assert queries() == one


def test_another_users_schedule_is_404_for_every_verb(client, other_user):
    theirs = make_schedule(other_user)
    assert client.get(detail(theirs)).status_code == 404
    assert client.patch(detail(theirs), {"name": "x"}, format="json").status_code == 404
    assert client.put(detail(theirs), EVERY_5_MIN_SUM, format="json").status_code == 404
    assert client.delete(detail(theirs)).status_code == 404
    assert client.get(detail(theirs, "runs")).status_code == 404
    assert Schedule.objects.filter(pk=theirs.pk).exists()


def test_staff_act_on_any_schedule(client_for, staff, other_user):
    theirs = make_schedule(other_user)
    response = client_for(staff).patch(detail(theirs), {"enabled": False}, format="json")
    assert response.status_code == 200 and response.json()["enabled"] is False
    assert client_for(staff).delete(detail(theirs)).status_code == 204


def test_a_schedule_as_answered_can_be_put_back(client, user):
    """PUT of a GET's answer, one field changed: the keys of the answer are ignored (an
    unknown key is refused, naming the fields taken)."""
    schedule = client.post(URL, EVERY_5_MIN_SUM, format="json").json()
    response = client.put(detail(schedule["id"]), {**schedule, "name": "renamed"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["name"] == "renamed"
    response = client.put(detail(schedule["id"]), {**schedule, "nmae": "typo"}, format="json")
    assert response.status_code == 400
    assert response.json()["nmae"][0].startswith("Unknown field. The fields taken here: task_type")
    # As a form: a misspelt box ("enabeld") left the schedule switched off without a word.
    form = {"task_type": "sum", "input_data": '{"numbers": [5]}', "interval_seconds": "3600"}
    response = client.put(detail(schedule["id"]), {**form, "enabeld": "true"}, format="multipart")
    assert response.status_code == 400 and "enabeld" in response.json()
    assert Schedule.objects.get(pk=schedule["id"]).enabled is True


def test_staff_cannot_turn_on_a_deactivated_users_schedule(client_for, staff, other_user):
    """Staff turned on a schedule of a deactivated user (PATCH or PUT), which beat then only
    recorded as refused at its first firing and turned off again."""
    theirs = make_schedule(other_user, enabled=False)
    other_user.is_active = False
    other_user.save(update_fields=["is_active"])
    expected = ["The schedule's owner is deactivated: it cannot be enabled."]

    response = client_for(staff).patch(detail(theirs), {"enabled": True}, format="json")
    assert response.status_code == 400 and response.json()["enabled"] == expected
    replaced = {**EVERY_5_MIN_SUM, "enabled": True}
    response = client_for(staff).put(detail(theirs), replaced, format="json")
    assert response.status_code == 400 and response.json()["enabled"] == expected
    # Paused, it can still be edited.
    response = client_for(staff).put(detail(theirs), {**replaced, "enabled": False}, format="json")
    assert response.status_code == 200 and response.json()["name"] == "five-minute sum"
    assert Schedule.objects.get(pk=theirs.pk).enabled is False
    # One left on (its owner deactivated since) can be edited too; only turning one on is
    # refused (it was refused as if turned on).
    Schedule.objects.filter(pk=theirs.pk).update(enabled=True)
    response = client_for(staff).patch(detail(theirs), {"interval_seconds": 7200}, format="json")
    assert response.status_code == 200 and response.json()["interval_seconds"] == 7200


# --- runs -------------------------------------------------------------------------------


def test_runs_newest_first_with_the_task_or_the_refusal(client, user, settings):
    settings.MAX_ACTIVE_TASKS = 5
    schedule = make_schedule(user)
    created = services.schedule_fire(schedule_id=schedule.pk)
    TaskFactory.create_batch(4, owner=user)
    refused = services.schedule_fire(schedule_id=schedule.pk)

    body = client.get(detail(schedule, "runs")).json()

    assert body["count"] == 2
    newest, oldest = body["results"]
    assert set(newest) == RUN_FIELDS
    assert newest["id"] == refused.pk and newest["outcome"] == "refused"
    assert newest["task"] is None and newest["task_status"] is None
    assert newest["code"] == "active_task_limit" and newest["detail"]
    assert oldest["id"] == created.pk and oldest["outcome"] == "created"
    assert oldest["task"] == str(created.task_id) and oldest["task_status"] == "pending"
    assert oldest["code"] is None and oldest["detail"] is None

    listed = client.get(detail(schedule)).json()
    assert listed["total_runs"] == 2 and listed["last_run_at"]


def test_runs_are_paginated_in_constant_queries(client, user):
    schedule = make_schedule(user)

    def queries(page_size) -> tuple[int, dict]:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(detail(schedule, "runs"), {"page_size": page_size})
        return len(captured), response.json()

    services.schedule_fire(schedule_id=schedule.pk)
    few, _ = queries(1)
    for _ in range(4):
        Task.objects.update(status=TaskStatus.COMPLETED)
        services.schedule_fire(schedule_id=schedule.pk)
    many, body = queries(3)
    assert many == few
    assert body["count"] == 5 and len(body["results"]) == 3 and body["next"]
    fired = [run["fired_at"] for run in body["results"]]
    assert fired == sorted(fired, reverse=True)


# --- change and delete ------------------------------------------------------------------


def test_patch_changes_only_what_it_names(client, user):
    schedule = make_schedule(user, name="before", input_data={"numbers": [1]})

    response = client.patch(detail(schedule), {"name": "after"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["name"] == "after" and body["input_data"] == {"numbers": [1]}
    assert body["interval_seconds"] == 300


def test_patch_switches_from_interval_to_crontab(client, user):
    schedule = make_schedule(user, interval_seconds=300)

    response = client.patch(
        detail(schedule), {"crontab": "30 8 * * *", "timezone": "Asia/Tokyo"}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["crontab"] == "30 8 * * *" and body["interval_seconds"] is None
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert task.interval is None and str(task.crontab.timezone) == "Asia/Tokyo"


def test_patch_disable_stops_beat_and_clears_next_run(client, user):
    schedule = make_schedule(user)

    body = client.patch(detail(schedule), {"enabled": False}, format="json").json()

    assert body["enabled"] is False and body["next_run_at"] is None
    assert not PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled


def test_a_schedule_whose_template_no_longer_validates_can_be_paused(client, user):
    """Its file deleted (or a limit lowered), every firing is refused, and a PATCH of
    ``enabled`` alone answered 400 with the template's error: it could not be paused."""
    schedule = make_schedule(user, name="before")
    Schedule.objects.filter(pk=schedule.pk).update(input_data={"numbers": []})

    response = client.patch(detail(schedule), {"enabled": False, "name": "paused"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["enabled"] is False and response.json()["name"] == "paused"
    assert not PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled
    # Turning it on again checks the whole schedule: the template's error, nothing changed.
    response = client.patch(detail(schedule), {"enabled": True}, format="json")
    assert response.status_code == 400 and "input_data" in response.json()
    schedule.refresh_from_db()
    assert schedule.enabled is False
    # Each light change is still checked.
    response = client.patch(detail(schedule), {"enabled": "maybe"}, format="json")
    assert response.status_code == 400 and "enabled" in response.json()


def test_a_bad_patch_changes_nothing(client, user):
    schedule = make_schedule(user, interval_seconds=300)

    response = client.patch(
        detail(schedule), {"interval_seconds": 10, "input_data": {"numbers": []}}, format="json"
    )

    assert response.status_code == 400
    assert "interval_seconds" in response.json()
    schedule.refresh_from_db()
    assert schedule.interval_seconds == 300 and schedule.input_data == {"numbers": [1, 2, 3]}
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).interval.every == 300


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"owner": "someone", "name": "x"}, "This field cannot be changed."),
        ({"total_runs": 99, "name": "x"}, "This field cannot be changed."),
        ({"enabeld": False, "name": "x"}, "Unknown field."),
    ],
)
def test_a_patch_naming_what_it_cannot_change_is_400(client, user, body, message):
    schedule = make_schedule(user, name="kept")
    response = client.patch(detail(schedule), body, format="json")
    assert response.status_code == 400
    [key] = set(body) - {"name"}
    assert response.json()[key] == [message]
    schedule.refresh_from_db()
    assert schedule.name == "kept" and schedule.enabled


def test_a_patch_naming_a_task_only_field_keeps_its_message(client, user):
    response = client.patch(detail(make_schedule(user)), {"run_at": None}, format="json")
    assert (
        response.status_code == 400
        and "interval_seconds or crontab" in response.json()["run_at"][0]
    )


@pytest.mark.parametrize("body", ["[1, 2]", "null", '"text"'])
def test_a_patch_that_is_not_an_object_is_400(client, user, body):
    schedule = make_schedule(user)
    response = client.patch(detail(schedule), body, content_type="application/json")
    assert response.status_code == 400
    assert Schedule.objects.get(pk=schedule.pk).interval_seconds == 300


def test_put_replaces_the_schedule(client, user):
    schedule = make_schedule(user, name="old", deadline_seconds=60)

    response = client.put(detail(schedule), WEEKDAY_REMINDER, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["task_type"] == "reminder" and body["name"] == ""
    assert body["deadline_seconds"] is None and body["crontab"] == "0 9 * * 1-5"
    assert Schedule.objects.count() == 1


def test_delete_removes_the_periodic_task(client, user):
    schedule = make_schedule(user)
    services.schedule_fire(schedule_id=schedule.pk)

    response = client.delete(detail(schedule))

    assert response.status_code == 204
    assert not Schedule.objects.exists() and not ScheduleRun.objects.exists()
    assert fired_periodic_tasks() == 0
    assert Task.objects.count() == 1  # the tasks it created stay


# --- Idempotency-Key --------------------------------------------------------------------


def test_a_retried_create_with_the_same_key_creates_one_schedule(client):
    headers = {"Idempotency-Key": "create-the-five-minute-sum"}
    first = client.post(URL, EVERY_5_MIN_SUM, format="json", headers=headers)
    again = client.post(URL, EVERY_5_MIN_SUM, format="json", headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Schedule.objects.count() == 1 and fired_periodic_tasks() == 1

    other = client.post(
        URL, {**EVERY_5_MIN_SUM, "interval_seconds": 600}, format="json", headers=headers
    )
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert Schedule.objects.count() == 1


def test_a_refused_create_does_not_keep_its_key(client, user, settings):
    settings.MAX_SCHEDULES_PER_USER = 1
    existing = make_schedule(user)
    headers = {"Idempotency-Key": "k-1"}
    assert client.post(URL, EVERY_5_MIN_SUM, format="json", headers=headers).status_code == 409
    services.schedule_delete(schedule=existing, actor=user)
    assert client.post(URL, EVERY_5_MIN_SUM, format="json", headers=headers).status_code == 201


def test_a_patch_keeps_an_edit_committed_after_it_read_the_schedule(client, user, monkeypatch):
    """Two PATCHes at once: this one merged its changes with the row as it read it before
    the other committed, and wrote it all back; a pause that answered 200 was undone."""
    schedule = make_schedule(owner=user)
    read_before = Schedule.objects.get(pk=schedule.pk)
    services.schedule_set_enabled(schedule=schedule, actor=user, enabled=False)  # the other
    monkeypatch.setattr(views.ScheduleViewSet, "get_object", lambda self: read_before)

    response = client.patch(f"{URL}{schedule.pk}/", {"priority": "high"}, format="json")

    assert response.status_code == 200, response.json()
    stored = Schedule.objects.get(pk=schedule.pk)
    assert (stored.enabled, stored.priority) == (False, "high")
    assert PeriodicTask.objects.get(pk=stored.periodic_task_id).enabled is False
    assert response.json()["enabled"] is False


@pytest.mark.parametrize("method", ["patch", "put"])
def test_an_edit_of_a_schedule_deleted_meanwhile_is_404(client, user, monkeypatch, method):
    """It was a 500 (Schedule.DoesNotExist) when a DELETE committed between the edit's read
    of the schedule and its lock."""
    schedule = make_schedule(owner=user)
    read_before = Schedule.objects.get(pk=schedule.pk)
    services.schedule_delete(schedule=schedule, actor=user)
    monkeypatch.setattr(views.ScheduleViewSet, "get_object", lambda self: read_before)
    body = {"task_type": "sum", "input_data": {"numbers": [1]}, "interval_seconds": 600}

    response = getattr(client, method)(f"{URL}{schedule.pk}/", body, format="json")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}
    assert not Schedule.objects.exists()


def _examples(schema: dict, path: str, method: str) -> dict:
    content = schema["paths"][path][method]["requestBody"]["content"]["application/json"]
    return content["examples"]


def test_the_schemas_examples_work_as_they_are(client, user):
    """Swagger UI offered a body made up from the serializer, pairing api_integration with
    sum's input: 400 as it stood."""
    schema = client.get("/api/schema/", {"format": "json"}).json()
    detail = "/api/schedules/{id}/"
    created = []
    for example in _examples(schema, URL, "post").values():
        response = client.post(URL, example["value"], format="json")
        assert response.status_code == 201, response.json()
        created.append(response.json()["id"])
    for example in _examples(schema, detail, "put").values():
        response = client.put(f"{URL}{created[0]}/", example["value"], format="json")
        assert response.status_code == 200, response.json()
    for example in _examples(schema, detail, "patch").values():
        response = client.patch(f"{URL}{created[0]}/", example["value"], format="json")
        assert response.status_code == 200, response.json()


def test_after_a_put_the_pages_edit_form_keeps_its_fields(client, user):
    """The browsable API's PUT form came back empty after a PUT (built from the answer's
    read-only serializer): the schedule could not be paused or edited without a reload."""
    schedule = make_schedule(owner=user)
    body = {"task_type": "sum", "input_data": {"numbers": [1]}, "interval_seconds": 600}

    response = client.put(f"{URL}{schedule.pk}/", body, format="json", HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    page = response.content.decode()
    form = page[page.index('data-method="PUT"') :]
    form = form[: form.index("</form>")]
    for field in ("task_type", "input_data", "interval_seconds", "enabled"):
        assert f'name="{field}"' in form, field


@pytest.mark.parametrize("value", [0, 1, "true", "on", [], {}])
def test_enabled_in_json_is_true_or_false(client, user, value):
    """DRF's boolean took 0, 1, "true", "on" from a JSON body, which the schema offers no
    more than the API documents (a form's box is still read as a form's)."""
    schedule = make_schedule(owner=user)
    body = {"task_type": "sum", "input_data": {"numbers": [1]}, "interval_seconds": 600}
    answers = [
        client.post(URL, {**body, "enabled": value}, format="json"),
        client.put(f"{URL}{schedule.pk}/", {**body, "enabled": value}, format="json"),
        client.patch(f"{URL}{schedule.pk}/", {"enabled": value}, format="json"),
        client.patch(f"{URL}{schedule.pk}/", {"enabled": value, "priority": "high"}, format="json"),
    ]
    for response in answers:
        assert response.status_code == 400, response.json()
        assert response.json()["enabled"] == ["Must be true or false."]
    assert Schedule.objects.count() == 1 and Schedule.objects.get().enabled is True


def test_name_and_description_in_json_are_strings(client, user):
    """A number was taken as its text ("description": 0 became "0"), which the schema does
    not offer; so were a task's, on create and PATCH."""
    schedule = make_schedule(owner=user)
    task = client.post(
        "/api/tasks/", {"task_type": "sum", "input_data": {"numbers": [1]}}, format="json"
    )
    answers = [
        client.patch(f"{URL}{schedule.pk}/", {"description": 0}, format="json"),
        client.patch(f"{URL}{schedule.pk}/", {"name": 1.5, "priority": "high"}, format="json"),
        client.post(
            "/api/tasks/",
            {"task_type": "sum", "input_data": {"numbers": [1]}, "name": 7},
            format="json",
        ),
        client.patch(f"/api/tasks/{task.json()['id']}/", {"description": 0}, format="json"),
    ]
    for response in answers:
        assert response.status_code == 400, response.json()
        assert set(response.json()) & {"name", "description"}
        assert response.json().get("name", response.json().get("description")) == [
            "A string is required."
        ]
    assert Schedule.objects.get().description == ""


def test_the_schema_says_next_run_at_may_be_null(client, user):
    """A paused schedule answers next_run_at null, which the schema said was a string."""
    schema = client.get("/api/schema/", {"format": "json"}).json()
    documented = schema["components"]["schemas"]["Schedule"]["properties"]["next_run_at"]
    assert documented["nullable"] is True
    schedule = make_schedule(owner=user, enabled=False)
    assert client.get(f"{URL}{schedule.pk}/").json()["next_run_at"] is None
