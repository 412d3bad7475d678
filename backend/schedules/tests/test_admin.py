"""The admin: schedules with their runs inline; every change goes through the services, so
the periodic task stays in step."""

import html
import time

import pytest
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from backend.schedules import services
from backend.schedules.models import Schedule
from backend.users.tests.factories import UserFactory

from .factories import make_schedule

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/schedules/schedule/"
ADD = CHANGELIST + "add/"


@pytest.fixture
def admin_user(db):
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


def change_url(schedule) -> str:
    return f"{CHANGELIST}{schedule.pk}/change/"


def form_data(schedule=None, **fields) -> dict:
    """A complete admin form: the schedule's fields, and the runs inline as displayed."""
    data = {
        "task_type": "sum",
        "input_data": '{"numbers": [1, 2]}',
        "name": "from the admin",
        "description": "",
        "priority": "normal",
        "deadline_seconds": "",
        "interval_seconds": "120",
        "crontab": "",
        "timezone": "UTC",
        "enabled": "on",
    }
    runs = list(schedule.runs.order_by("-fired_at", "-id")[:50]) if schedule else []
    data.update(
        {
            "runs-TOTAL_FORMS": str(len(runs)),
            "runs-INITIAL_FORMS": str(len(runs)),
            "runs-MIN_NUM_FORMS": "0",
            "runs-MAX_NUM_FORMS": "0",
        }
    )
    for index, run in enumerate(runs):
        data[f"runs-{index}-id"] = str(run.pk)
        data[f"runs-{index}-schedule"] = str(schedule.pk)
    data.update(fields)
    return {key: value for key, value in data.items() if value is not None}


def test_add_creates_the_schedule_and_its_periodic_task(admin_client, admin_user):
    owner = UserFactory()
    response = admin_client.post(ADD, form_data(owner=str(owner.pk)))

    assert response.status_code == 302, response.content.decode()[:3000]
    schedule = Schedule.objects.get()
    assert schedule.owner == owner and schedule.interval_seconds == 120
    assert schedule.input_data == {"numbers": [1, 2]}
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert task.enabled and task.interval.every == 120


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"crontab": "0 25 * * *", "interval_seconds": ""}, "hour field"),
        ({"input_data": '{"numbers": []}'}, "numbers"),
        ({"interval_seconds": "5"}, "at least 60"),
        ({"crontab": "* * * * *"}, "not both"),
        ({"timezone": "Nowhere/City", "crontab": "* * * * *", "interval_seconds": ""}, "IANA"),
    ],
)
def test_add_refuses_what_the_api_refuses(admin_client, admin_user, fields, message):
    periodic_tasks = PeriodicTask.objects.count()
    response = admin_client.post(ADD, form_data(owner=str(admin_user.pk), **fields))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Schedule.objects.exists()
    assert PeriodicTask.objects.count() == periodic_tasks


def test_the_change_page_reads_its_runs_in_one_query(admin_client, user):
    """Django asks the inline for its rows again for each form: a new slice each time made
    a query per run shown (263 on a change page, 12 s with 100,000 runs)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from backend.schedules.models import ScheduleRun

    schedule = make_schedule(user, interval_seconds=300)
    for _ in range(5):
        services.schedule_fire(schedule_id=schedule.pk)
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(change_url(schedule))
    assert page.status_code == 200
    table = ScheduleRun._meta.db_table
    reads = [q["sql"] for q in queries.captured_queries if f'FROM "{table}"' in q["sql"]]
    assert len(reads) <= 2, reads  # the rows, and at most a count


def test_add_past_the_limit_is_refused(admin_client, admin_user, settings):
    settings.MAX_SCHEDULES_PER_USER = 1
    make_schedule(admin_user)
    response = admin_client.post(ADD, form_data(owner=str(admin_user.pk)))
    assert response.status_code == 200 and "the most allowed" in response.content.decode()
    assert Schedule.objects.count() == 1


def test_change_page_shows_runs_and_saving_keeps_the_periodic_task_in_step(admin_client, user):
    schedule = make_schedule(user, interval_seconds=300)
    services.schedule_fire(schedule_id=schedule.pk)
    Schedule.objects.filter(pk=schedule.pk).update(input_data={"numbers": []})
    services.schedule_fire(schedule_id=schedule.pk)

    page = admin_client.get(change_url(schedule)).content.decode()
    assert "invalid_input" in page and "Runs (the latest 50)" in page

    response = admin_client.post(
        change_url(schedule),
        form_data(schedule, crontab="15 6 * * *", interval_seconds="", timezone="Europe/Paris"),
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    schedule.refresh_from_db()
    assert schedule.crontab == "15 6 * * *" and schedule.interval_seconds is None
    assert schedule.input_data == {"numbers": [1, 2]}
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert task.interval is None and task.crontab.hour == "6"
    assert str(task.crontab.timezone) == "Europe/Paris"
    assert schedule.runs.count() == 2


def test_actions_enable_and_disable(admin_client, user):
    schedules = [make_schedule(user), make_schedule(user)]
    selected = [str(s.pk) for s in schedules]

    admin_client.post(CHANGELIST, {"action": "disable_schedules", "_selected_action": selected})
    assert not PeriodicTask.objects.filter(
        pk__in=[s.periodic_task_id for s in schedules], enabled=True
    ).exists()
    assert not Schedule.objects.filter(enabled=True).exists()

    admin_client.post(CHANGELIST, {"action": "enable_schedules", "_selected_action": selected})
    assert Schedule.objects.filter(enabled=True).count() == 2
    assert (
        PeriodicTask.objects.filter(
            pk__in=[s.periodic_task_id for s in schedules], enabled=True
        ).count()
        == 2
    )


def test_a_periodic_task_turned_on_again_here_counts_from_then(client_for, user):
    """Turned off in the Periodic tasks admin (which clears its last run) and on again by
    the owner's PATCH, the schedule's old firing was written back to it: beat took the
    schedule for overdue and fired it at once, off its timetable."""
    from datetime import datetime, timedelta

    from django.utils import timezone

    from backend.schedules import services

    schedule = make_schedule(user, interval_seconds=300)
    services.schedule_fire(schedule_id=schedule.pk)
    Schedule.objects.filter(pk=schedule.pk).update(
        last_run_at=timezone.now() - timedelta(seconds=400)
    )
    periodic_task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    periodic_task.enabled = False
    periodic_task.save()  # as its admin does: django-celery-beat clears last_run_at
    before = timezone.now()
    response = client_for(user).patch(
        f"/api/schedules/{schedule.pk}/", {"enabled": True}, format="json"
    )
    periodic_task.refresh_from_db()
    assert periodic_task.enabled and periodic_task.last_run_at >= before  # starts now
    ahead = datetime.fromisoformat(response.json()["next_run_at"].replace("Z", "+00:00"))
    assert ahead > timezone.now() + timedelta(seconds=290)  # counted from now


def test_a_periodic_task_turned_off_in_its_own_admin_is_shown_and_repaired(
    admin_client, client_for, user
):
    """Disabled in the Periodic tasks admin (beat obeys it), the schedule still said when it
    would fire next, and 'Enable selected schedules' answered '1 already were', leaving it
    off."""
    schedule = make_schedule(user)
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(enabled=False)
    body = client_for(user).get(f"/api/schedules/{schedule.pk}/").json()
    assert body["enabled"] is True and body["next_run_at"] is None

    response = admin_client.post(
        CHANGELIST,
        {"action": "enable_schedules", "_selected_action": [str(schedule.pk)]},
        follow=True,
    )
    assert "1 schedule(s) enabled." in response.content.decode()
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled
    assert client_for(user).get(f"/api/schedules/{schedule.pk}/").json()["next_run_at"]
    # The owner's PATCH of enabled does the same.
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(enabled=False)
    response = client_for(user).patch(
        f"/api/schedules/{schedule.pk}/", {"enabled": True}, format="json"
    )
    assert response.status_code == 200 and response.json()["next_run_at"]
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled


def test_delete_one_and_delete_selected_remove_the_periodic_tasks(admin_client, user):
    one, two, three = (make_schedule(user) for _ in range(3))

    response = admin_client.post(f"{CHANGELIST}{one.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    admin_client.post(
        CHANGELIST,
        {
            "action": "delete_selected",
            "_selected_action": [str(two.pk), str(three.pk)],
            "post": "yes",
        },
    )

    assert not Schedule.objects.exists()
    assert not PeriodicTask.objects.filter(task=services.FIRE_TASK).exists()


def test_lists_show_schedules_and_their_periodic_tasks(admin_client, user):
    schedule = make_schedule(user, name="visible in the admin", crontab="0 9 * * 1-5")

    page = admin_client.get(CHANGELIST).content.decode()
    assert "visible in the admin" in page
    periodic = admin_client.get("/admin/django_celery_beat/periodictask/").content.decode()
    assert f"schedule {schedule.pk}" in periodic
    add_page = admin_client.get(ADD)
    assert add_page.status_code == 200


def test_the_actions_count_only_what_they_changed(admin_client, user):
    """ "3 schedule(s) disabled" counted the ones that already were."""
    paused = make_schedule(user, enabled=False)
    running = make_schedule(user)
    selected = [str(paused.pk), str(running.pk)]
    response = admin_client.post(
        CHANGELIST, {"action": "disable_schedules", "_selected_action": selected}, follow=True
    )
    assert b"1 schedule(s) disabled. (1 already were.)" in response.content
    assert not Schedule.objects.filter(enabled=True).exists()


@pytest.mark.parametrize("depth", [101, 1200])
def test_the_form_refuses_json_deeper_than_the_api_takes(admin_client, user, depth):
    """1,200 levels was a 500 (the form field's parser recursed too deep)."""
    response = admin_client.post(
        ADD,
        {
            "owner": str(user.pk),
            "task_type": "sum",
            "input_data": "[" * depth + "]" * depth,
            "interval_seconds": "600",
            "timezone": "UTC",
            "priority": "normal",
            "enabled": "on",
        },
    )
    assert response.status_code == 200
    assert b"JSON may nest at most 100 levels deep." in response.content
    assert not Schedule.objects.exists()


@pytest.mark.parametrize(
    ("task_type", "input_data"),
    [("uppercase", r'{"data": "a\ud800b"}'), ("sum", r'{"numbers": [1], "a": "\ud800"}')],
)
def test_a_lone_surrogate_in_the_input_is_a_form_error(admin_client, user, task_type, input_data):
    """A 500: in the type's checks, or in showing the form again with the type's error."""
    response = admin_client.post(
        ADD, form_data(owner=str(user.pk), task_type=task_type, input_data=input_data)
    )
    assert response.status_code == 200
    assert b"JSON strings may not contain NUL characters or unpaired surrogates." in (
        response.content
    )
    assert not Schedule.objects.exists()


def test_a_save_of_a_schedule_deleted_meanwhile_says_so_alone(admin_client, user, monkeypatch):
    """It said "Not found." and "… was changed successfully", and logged a change."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.messages import get_messages

    from backend.schedules.admin import ScheduleAdmin

    schedule = make_schedule(user)
    read_before = Schedule.objects.get(pk=schedule.pk)
    Schedule.objects.filter(pk=schedule.pk).delete()  # another request's, after this one read
    monkeypatch.setattr(ScheduleAdmin, "get_object", lambda *args, **kwargs: read_before)

    response = admin_client.post(change_url(schedule), form_data(schedule, priority="high"))

    assert response.status_code == 302 and response.url.startswith(CHANGELIST)
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert shown == ["This schedule was deleted meanwhile; nothing was saved."]
    assert not LogEntry.objects.exists()


def test_enable_refuses_a_stale_template_and_a_schedule_deleted_meanwhile(
    admin_client, user, monkeypatch
):
    """Enabling turned on a schedule whose template no longer validated (the API refuses
    it), and a schedule deleted while the action ran was a 500."""
    stale = make_schedule(user, enabled=False, name="stale")
    Schedule.objects.filter(pk=stale.pk).update(input_data={"numbers": []})
    gone = make_schedule(user, enabled=False, name="gone")
    fine = make_schedule(user, enabled=False, name="fine")
    set_enabled = services.schedule_set_enabled

    def racing_a_delete(*, schedule, **kwargs):
        if schedule.pk == gone.pk:
            Schedule.objects.filter(pk=gone.pk).delete()
        return set_enabled(schedule=schedule, **kwargs)

    monkeypatch.setattr(services, "schedule_set_enabled", racing_a_delete)
    selected = [str(stale.pk), str(gone.pk), str(fine.pk)]

    response = admin_client.post(
        CHANGELIST, {"action": "enable_schedules", "_selected_action": selected}, follow=True
    )

    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert shown[0] == "1 schedule(s) enabled."
    assert sorted(shown[1:]) == sorted(
        [
            f"“{stale}”: input_data: numbers: This list may not be empty.",
            f"“{gone}”: deleted meanwhile.",
        ]
    )
    assert list(Schedule.objects.filter(enabled=True).values_list("name", flat=True)) == ["fine"]
    assert PeriodicTask.objects.get(pk=stale.periodic_task_id).enabled is False


def test_a_deactivated_owners_schedule_cannot_be_enabled_here(admin_client, user):
    """The form and the enable action turned on a schedule of a deactivated user, which beat
    then only recorded as refused at its first firing and turned off again."""
    schedule = make_schedule(user, enabled=False, name="theirs")
    user.is_active = False
    user.save(update_fields=["is_active"])

    response = admin_client.post(
        CHANGELIST,
        {"action": "enable_schedules", "_selected_action": [str(schedule.pk)]},
        follow=True,
    )
    shown = [str(m) for m in response.context["messages"]]
    assert shown == [
        "0 schedule(s) enabled.",
        f"“{schedule}”: enabled: The schedule's owner is deactivated: it cannot be enabled.",
    ]

    response = admin_client.post(ADD, form_data(owner=str(user.pk)))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "enabled": ["The schedule's owner is deactivated: it cannot be enabled."]
    }
    # Kept off, it can still be made and edited.
    response = admin_client.post(ADD, form_data(owner=str(user.pk), enabled=""))
    assert response.status_code == 302
    assert not Schedule.objects.filter(enabled=True).exists()
    periodic = Schedule.objects.values("periodic_task_id")
    assert not PeriodicTask.objects.filter(pk__in=periodic, enabled=True).exists()
    # One left on (its owner deactivated since) can still be edited, left on.
    Schedule.objects.filter(pk=schedule.pk).update(enabled=True)
    schedule.refresh_from_db()
    response = admin_client.post(change_url(schedule), form_data(schedule, owner=str(user.pk)))
    assert response.status_code == 302
    assert Schedule.objects.get(pk=schedule.pk).name == "from the admin"


def test_a_schedules_periodic_task_is_shown_but_changed_only_through_its_schedule(
    admin_client, user
):
    """Turned off in the Periodic tasks admin, it stopped firing while its schedule still
    said enabled: true, and any edit of the schedule turned it back on; renamed there, it went
    out of step. It is view-only there now, its page points to its schedule, and the enable,
    disable and toggle actions leave it as it is; other periodic tasks are changed as ever."""
    schedule = make_schedule(user, name="nightly")
    own = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    sweep = PeriodicTask.objects.create(name="a sweep", task="tasks.expire", interval=own.interval)
    url = "/admin/django_celery_beat/periodictask/"

    page = admin_client.get(f"{url}{own.pk}/change/")
    assert page.status_code == 200
    content = page.content.decode()
    assert f'href="/admin/schedules/schedule/{schedule.pk}/change/"' in content
    assert 'name="_save"' not in content  # view only
    response = admin_client.post(f"{url}{own.pk}/change/", {"name": "renamed", "enabled": ""})
    assert response.status_code == 403
    assert admin_client.post(f"{url}{own.pk}/delete/", {"post": "yes"}).status_code == 403

    for action in ("disable_tasks", "toggle_tasks"):
        response = admin_client.post(
            url,
            {"action": action, "_selected_action": [str(own.pk), str(sweep.pk)]},
            follow=True,
        )
        shown = [str(m) for m in response.context["messages"]]
        assert "1 periodic task(s) of schedules left as they are" in " ".join(shown), shown
    own.refresh_from_db()
    sweep.refresh_from_db()
    assert own.enabled and own.name == f"schedule {schedule.pk}"
    assert sweep.enabled  # disabled, then toggled back
    assert admin_client.get(f"{url}{sweep.pk}/change/").content.count(b'name="_save"') == 1


@pytest.mark.parametrize("timing", ["interval", "crontab"])
def test_the_timing_a_schedule_fires_by_is_shown_but_not_changed_in_its_own_admin(
    admin_client, user, timing
):
    """An interval (or crontab) row is shared by every schedule of that timing: changed in
    its admin, it retimed them all while each schedule still said its own (an interval of
    2 s got round SCHEDULE_MIN_INTERVAL). One no schedule uses is changed as ever."""
    if timing == "interval":
        schedule = make_schedule(user, interval_seconds=3600)
        row = PeriodicTask.objects.get(pk=schedule.periodic_task_id).interval
        edit = {"every": "2", "period": "seconds"}
        unused = IntervalSchedule.objects.create(every=7, period="days")
    else:
        schedule = make_schedule(user, interval_seconds=None, crontab="30 4 * * *")
        row = PeriodicTask.objects.get(pk=schedule.periodic_task_id).crontab
        edit = {"minute": "*", "hour": "*", "day_of_month": "*", "month_of_year": "*",
                "day_of_week": "*", "timezone": "UTC"}  # fmt: skip
        unused = CrontabSchedule.objects.create(minute="5", hour="1")
    url = f"/admin/django_celery_beat/{timing}schedule/"
    before = type(row).objects.filter(pk=row.pk).values().get()

    page = admin_client.get(f"{url}{row.pk}/change/")
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert "1 schedule(s) or maintenance job(s) fire by this timing" in page.content.decode()
    assert admin_client.post(f"{url}{row.pk}/change/", edit).status_code == 403
    assert admin_client.post(f"{url}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert type(row).objects.filter(pk=row.pk).values().get() == before

    inline = {f"periodictask_set-{k}": "0" for k in ("TOTAL_FORMS", "INITIAL_FORMS")}
    changed = admin_client.post(f"{url}{unused.pk}/change/", {**edit, **inline})
    assert changed.status_code == 302, changed.content.decode()[:2000]


@pytest.mark.django_db(transaction=True)  # beat closes the database connection it starts on
def test_the_services_maintenance_jobs_are_shown_but_not_changed_or_turned_off(admin_client):
    """The dispatcher's periodic task (or expiry's, rescue's) turned off in the admin left
    every task created while the broker was down pending for ever, and beat kept it off
    across restarts. Shown, not changed, deleted or turned off there; beat turns on one
    turned off anyway (in the database) when it starts."""
    from django.conf import settings

    from backend.celery import app
    from backend.schedules.beat import Scheduler

    Scheduler(app=app, lazy=True).setup_schedule()  # writes the jobs' rows, as beat starts
    dispatch = PeriodicTask.objects.get(name="tasks.dispatch")
    assert set(settings.CELERY_BEAT_SCHEDULE) <= set(
        PeriodicTask.objects.values_list("name", flat=True)
    )
    url = "/admin/django_celery_beat/periodictask/"
    page = admin_client.get(f"{url}{dispatch.pk}/change/")
    assert page.status_code == 200
    assert "maintenance jobs: it is not changed or turned off here" in page.content.decode()
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.post(f"{url}{dispatch.pk}/change/", {"enabled": ""}).status_code == 403
    assert admin_client.post(f"{url}{dispatch.pk}/delete/", {"post": "yes"}).status_code == 403
    response = admin_client.post(
        url, {"action": "disable_tasks", "_selected_action": [str(dispatch.pk)]}, follow=True
    )
    shown = " ".join(str(m) for m in response.context["messages"])
    assert "1 maintenance job(s) of the service left as they are" in shown
    dispatch.refresh_from_db()
    assert dispatch.enabled
    for action in ("enable_tasks", "disable_tasks", "toggle_tasks"):
        # Nothing else selected: no "0 tasks were successfully ..." beside the warning.
        response = admin_client.post(
            url, {"action": action, "_selected_action": [str(dispatch.pk)]}, follow=True
        )
        shown = [str(m) for m in response.context["messages"]]
        assert len(shown) == 1 and "left as they are" in shown[0], shown

    PeriodicTask.objects.filter(name="tasks.dispatch").update(enabled=False)
    Scheduler(app=app, lazy=True).setup_schedule()
    dispatch.refresh_from_db()
    assert dispatch.enabled

    # Nor is its timing changed under Intervals (the row it shares with any schedule of 5 s).
    interval_url = f"/admin/django_celery_beat/intervalschedule/{dispatch.interval_id}/change/"
    page = admin_client.get(interval_url)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    edit = {"every": "3600", "period": "seconds"}
    assert admin_client.post(interval_url, edit).status_code == 403


PERIODIC_TASKS = "/admin/django_celery_beat/periodictask/"


def run_now(admin_client, *periodic_tasks) -> list[str]:
    selected = [str(periodic_task.pk) for periodic_task in periodic_tasks]
    response = admin_client.post(
        PERIODIC_TASKS, {"action": "run_tasks", "_selected_action": selected}, follow=True
    )
    return [str(message) for message in response.context["messages"]]


def test_running_a_schedules_periodic_task_fires_the_schedule_here(admin_client, user):
    """Its run recorded and its task created as beat's firing does, with no message through
    the broker; a disabled schedule's is not fired, and the page says so."""
    schedule, paused = make_schedule(user), make_schedule(user)
    services.schedule_set_enabled(schedule=paused, actor=user, enabled=False)
    own = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    paused_own = PeriodicTask.objects.get(pk=paused.periodic_task_id)

    shown = run_now(admin_client, own, paused_own)

    assert "1 periodic task(s) run." in shown, shown
    assert any("disabled or deleted: not fired" in message for message in shown), shown
    run = schedule.runs.get()
    assert run.task is not None and run.task.owner == user
    assert not paused.runs.exists()


@pytest.mark.django_db(transaction=True)
def test_running_many_schedules_sends_each_firings_task(admin_client, settings, monkeypatch):
    """In the web tier a request's sends share one BROKER_PUBLISH_TIMEOUT: each firing its
    own transaction and send, those after it was spent were left to the dispatcher, the
    page saying they ran."""
    from backend.tasks import queue
    from backend.tasks.models import Task

    monkeypatch.setattr(queue, "_whole_sends_bounded", True)  # as backend/wsgi.py sets it
    queue._request_began()
    settings.BROKER_PUBLISH_TIMEOUT = 0.05
    fire = services.schedule_fire

    def slow_fire(*args, **kwargs):
        time.sleep(0.03)  # the database's share of each firing, stretched
        return fire(*args, **kwargs)

    monkeypatch.setattr(services, "schedule_fire", slow_fire)
    schedules = [make_schedule(UserFactory()) for _ in range(4)]
    periodic_tasks = PeriodicTask.objects.filter(pk__in=[s.periodic_task_id for s in schedules])
    assert "4 periodic task(s) run." in run_now(admin_client, *periodic_tasks)
    assert Task.objects.count() == 4
    assert not Task.objects.filter(enqueued_at__isnull=True).exists()
    assert queue.accepting()


def test_running_a_periodic_task_with_the_broker_unreachable_says_so_at_once(admin_client):
    """django-celery-beat's sending waited on a hung broker until the web server killed the
    request; the service's producer is bounded, and here its breaker is open (as after a
    failed send): nothing waits, and the page says it was not sent."""
    from backend.tasks import queue

    every = IntervalSchedule.objects.create(every=300, period=IntervalSchedule.SECONDS)
    job = PeriodicTask.objects.create(
        name="counts", task="backend.ops.jobs.fold_task_counts", interval=every
    )
    queue.breaker.trip()
    try:
        shown = run_now(admin_client, job)
    finally:
        queue.breaker.reset()
    assert "0 periodic task(s) run." in shown, shown
    assert any("the broker did not take it" in message for message in shown), shown
    assert "1 periodic task(s) run." in run_now(admin_client, job)  # sent, the broker up


def test_a_periodic_task_of_the_firing_task_is_not_added_here(admin_client, user):
    """One added here fired a user's schedule every 5 s (past SCHEDULE_MIN_INTERVAL), and
    was then taken for a schedule's own: neither changed nor deleted, even by a superuser."""
    schedule = make_schedule(user)
    every = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.SECONDS)
    form = {
        "name": "rogue",
        "regtask": services.FIRE_TASK,
        "task": "",
        "interval": str(every.pk),
        "args": "[]",
        "kwargs": f'{{"schedule_id": "{schedule.pk}"}}',
        "enabled": "on",
        "priority": "",
        "queue": "",
        "exchange": "",
        "routing_key": "",
        "headers": "{}",
        "description": "",
        "expire_seconds": "",
    }
    response = admin_client.post(f"{PERIODIC_TASKS}add/", form)
    assert response.status_code == 200  # the form again, with the error
    assert "it is not added or turned on here" in response.content.decode()
    assert not PeriodicTask.objects.filter(name="rogue").exists()
    # One made before (with the ORM here) is no schedule's: deleted here like any other.
    rogue = PeriodicTask.objects.create(
        name="rogue", task=services.FIRE_TASK, interval=every, kwargs="{}"
    )
    turned_off = {**form, "kwargs": "{}", "enabled": ""}
    response = admin_client.post(f"{PERIODIC_TASKS}{rogue.pk}/change/", turned_off)
    assert response.status_code == 302  # turned off, as any other
    assert PeriodicTask.objects.get(pk=rogue.pk).enabled is False
    # Not turned on again: by its form, the enable or toggle action, nor run by hand.
    response = admin_client.post(f"{PERIODIC_TASKS}{rogue.pk}/change/", form)
    assert (
        response.status_code == 200 and "not added or turned on here" in response.content.decode()
    )
    for action in ("enable_tasks", "toggle_tasks"):
        admin_client.post(PERIODIC_TASKS, {"action": action, "_selected_action": [str(rogue.pk)]})
    assert PeriodicTask.objects.get(pk=rogue.pk).enabled is False
    assert any("run from its schedule" in message for message in run_now(admin_client, rogue))
    assert not schedule.runs.exists()
    assert admin_client.get(f"{PERIODIC_TASKS}{rogue.pk}/delete/").status_code == 200
    admin_client.post(f"{PERIODIC_TASKS}{rogue.pk}/delete/", {"post": "yes"})
    assert not PeriodicTask.objects.filter(pk=rogue.pk).exists()


def test_a_schedule_whose_template_went_stale_is_paused_or_renamed_here(admin_client, user):
    """The form checked the whole template at every save, so a schedule whose template no
    longer validated (its file deleted) could not even be paused there, while the API's
    PATCH paused it. Other changes are still checked whole, as the API checks them."""
    import json

    schedule = make_schedule(user, name="stale")
    Schedule.objects.filter(pk=schedule.pk).update(input_data={"numbers": []})
    schedule.refresh_from_db()
    as_it_is = {
        "task_type": schedule.task_type,
        "input_data": json.dumps(schedule.input_data),
        "name": schedule.name,
        "description": schedule.description,
        "priority": schedule.priority,
        "deadline_seconds": "",
        "interval_seconds": str(schedule.interval_seconds),
        "crontab": schedule.crontab,
        "timezone": schedule.timezone,
    }

    response = admin_client.post(
        change_url(schedule), form_data(schedule, **{**as_it_is, "enabled": None})
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    schedule.refresh_from_db()
    assert not schedule.enabled
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled is False

    Schedule.objects.filter(pk=schedule.pk).update(task_type="retired")  # its module removed
    as_it_is["task_type"] = "retired"
    response = admin_client.post(
        change_url(schedule), form_data(schedule, **{**as_it_is, "enabled": None, "name": "kept"})
    )
    assert response.status_code == 302
    schedule.refresh_from_db()
    assert (schedule.name, schedule.input_data) == ("kept", {"numbers": []})

    response = admin_client.post(
        change_url(schedule),
        form_data(schedule, **{**as_it_is, "name": "kept", "enabled": None, "priority": "high"}),
    )
    assert response.status_code == 200  # the form again: the template is checked whole
    assert '"retired" is not a valid choice.' in html.unescape(response.content.decode())
    schedule.refresh_from_db()
    assert schedule.priority != "high"


@pytest.mark.parametrize(
    ("every", "period", "kept"),
    [
        ("2147483647", "days", False),  # beat died of it at start
        ("999999999", "days", False),  # its next firing past the year 9999
        ("1", "microseconds", False),  # fired about 190 times a second
        ("999999", "microseconds", False),
        ("1000000", "microseconds", True),
        ("36525", "days", True),
        ("30", "seconds", True),
    ],
)
def test_an_interval_beat_cannot_keep_is_refused_in_its_admin(admin_client, every, period, kept):
    add = "/admin/django_celery_beat/intervalschedule/add/"
    inline = {"periodictask_set-TOTAL_FORMS": "0", "periodictask_set-INITIAL_FORMS": "0"}
    response = admin_client.post(add, {"every": every, "period": period, **inline})
    exists = IntervalSchedule.objects.filter(every=int(every), period=period).exists()
    if kept:
        assert response.status_code == 302 and exists
    else:
        assert response.status_code == 200 and not exists
        assert "An interval is at" in response.content.decode()


def test_no_solar_timing_is_made_in_the_admin(admin_client):
    """One stopped beat at every start (it needs a library the service does not install)."""
    assert admin_client.get("/admin/django_celery_beat/solarschedule/add/").status_code == 404


def test_an_interval_many_schedules_share_lists_the_first_by_name_in_constant_queries(
    admin_client, monkeypatch
):
    """django-celery-beat's inline listed every periodic task of the timing, each reading
    the timing again for its name: 313 queries and 2 s for an interval 300 schedules share."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from backend.schedules import admin as schedules_admin

    monkeypatch.setattr(schedules_admin.FirstUsersFormSet, "shown", 4)
    schedules = [make_schedule(UserFactory(), interval_seconds=3600) for _ in range(3)]
    row = PeriodicTask.objects.get(pk=schedules[0].periodic_task_id).interval
    url = f"/admin/django_celery_beat/intervalschedule/{row.pk}/change/"

    def shown() -> tuple[int, list[str]]:
        with CaptureQueriesContext(connection) as queries:
            page = admin_client.get(url).content.decode()
        names = sorted(PeriodicTask.objects.filter(interval=row).values_list("name", flat=True))
        return len(queries), [name for name in names if f">{name}<" in page]

    shown()  # the admin's content types are read once per process
    few, listed = shown()
    assert len(listed) == 3
    schedules += [make_schedule(UserFactory(), interval_seconds=3600) for _ in range(4)]
    many, listed = shown()
    assert many == few
    names = sorted(PeriodicTask.objects.filter(interval=row).values_list("name", flat=True))
    assert listed == names[:4]
