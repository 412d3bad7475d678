"""Schedule rules: the periodic task kept in step, the per-user limit, and each firing."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks
from django_celery_beat.schedulers import DatabaseScheduler

from backend.celery import app as celery_app
from backend.common.errors import Conflict, PermissionDenied
from backend.schedules import selectors, services
from backend.schedules.beat import Scheduler
from backend.schedules.models import Schedule, ScheduleRun
from backend.tasks.models import Task, TaskStatus
from backend.tasks.tests.factories import TaskFactory
from backend.users.tests.factories import UserFactory

from .factories import make_schedule

pytestmark = pytest.mark.django_db


def beat_entries() -> dict:
    """What beat's DatabaseScheduler would run now, by entry name."""
    return DatabaseScheduler(app=celery_app, lazy=True).all_as_schedule()


def periodic_task(schedule) -> PeriodicTask:
    return PeriodicTask.objects.get(pk=schedule.periodic_task_id)


# --- the periodic task ------------------------------------------------------------------


def test_an_interval_schedule_is_one_periodic_task_beat_runs(user):
    schedule = make_schedule(user, interval_seconds=300, name="adds")

    task = periodic_task(schedule)
    assert task.task == "backend.schedules.jobs.fire_schedule"
    assert task.enabled and task.crontab is None
    assert (task.interval.every, task.interval.period) == (300, IntervalSchedule.SECONDS)
    entry = beat_entries()[task.name]
    assert entry.task == "backend.schedules.jobs.fire_schedule"
    assert entry.kwargs == {"schedule_id": str(schedule.pk)}
    assert entry.schedule.run_every == timedelta(seconds=300)
    assert "adds" in task.description and user.username in task.description


def test_firings_are_routed_to_the_maintenance_queue():
    route = celery_app.amqp.router.route({}, "backend.schedules.jobs.fire_schedule")
    assert route["queue"].name == "maintenance"


def test_a_crontab_schedule_carries_its_time_zone(user):
    schedule = make_schedule(user, crontab="0 * * * 1-5", timezone="Europe/Paris")

    task = periodic_task(schedule)
    assert task.interval is None
    cron = task.crontab
    assert (cron.minute, cron.hour, cron.day_of_month, cron.month_of_year, cron.day_of_week) == (
        "0",
        "*",
        "*",
        "*",
        "1-5",
    )
    assert str(cron.timezone) == "Europe/Paris"
    entry = beat_entries()[task.name]
    assert str(entry.schedule.tz) == "Europe/Paris"


def test_an_update_changes_the_same_periodic_task(user):
    schedule = make_schedule(user, interval_seconds=300)
    before = periodic_task(schedule)
    changed_at = PeriodicTasks.last_change()

    schedule = services.schedule_update(
        schedule=schedule,
        actor=user,
        data={"interval_seconds": None, "crontab": "*/5 * * * *", "timezone": "UTC"},
    )

    after = periodic_task(schedule)
    assert after.pk == before.pk
    assert after.interval is None and after.crontab.minute == "*/5"
    assert PeriodicTask.objects.filter(task=services.FIRE_TASK).count() == 1
    # Beat notices changes through this marker.
    assert PeriodicTasks.last_change() > changed_at


def test_an_update_keeps_the_last_run_beat_recorded(user):
    schedule = make_schedule(user, interval_seconds=300)
    recorded = timezone.now() - timedelta(minutes=3)
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(
        last_run_at=recorded, total_run_count=7
    )

    services.schedule_update(schedule=schedule, actor=user, data={"name": "renamed"})

    task = periodic_task(schedule)
    assert task.last_run_at == recorded and task.total_run_count == 7
    assert Schedule.objects.get(pk=schedule.pk).name == "renamed"


def test_disable_and_enable(user):
    schedule = make_schedule(user)
    name = periodic_task(schedule).name

    services.schedule_set_enabled(schedule=schedule, actor=user, enabled=False)
    assert not periodic_task(schedule).enabled
    assert not Schedule.objects.get(pk=schedule.pk).enabled
    assert name not in beat_entries()

    services.schedule_set_enabled(schedule=schedule, actor=user, enabled=True)
    assert periodic_task(schedule).enabled
    assert name in beat_entries()


def test_delete_removes_the_periodic_task_and_runs_but_not_the_tasks(user):
    schedule = make_schedule(user)
    run = services.schedule_fire(schedule_id=schedule.pk)
    changed_at = PeriodicTasks.last_change()

    services.schedule_delete(schedule=schedule, actor=user)

    assert not Schedule.objects.filter(pk=schedule.pk).exists()
    assert not PeriodicTask.objects.filter(pk=schedule.periodic_task_id).exists()
    assert not ScheduleRun.objects.filter(pk=run.pk).exists()
    assert Task.objects.filter(pk=run.task_id).exists()
    assert PeriodicTasks.last_change() > changed_at


def test_only_the_owner_or_staff_change_a_schedule(user, other_user, staff):
    schedule = make_schedule(user)
    with pytest.raises(PermissionDenied):
        services.schedule_update(schedule=schedule, actor=other_user, data={"name": "x"})
    with pytest.raises(PermissionDenied):
        services.schedule_delete(schedule=schedule, actor=other_user)
    services.schedule_update(schedule=schedule, actor=staff, data={"name": "by staff"})
    services.schedule_delete(schedule=schedule, actor=staff)
    assert not Schedule.objects.exists()


def test_the_per_user_limit_writes_nothing(user, other_user, settings):
    settings.MAX_SCHEDULES_PER_USER = 2
    make_schedule(user)
    make_schedule(user)
    periodic_tasks = PeriodicTask.objects.count()

    with pytest.raises(Conflict) as refused:
        make_schedule(user)

    assert refused.value.code == "schedule_limit"
    assert Schedule.objects.filter(owner=user).count() == 2
    assert PeriodicTask.objects.count() == periodic_tasks
    make_schedule(other_user)  # the limit is per user


# --- firing -----------------------------------------------------------------------------


def test_a_firing_creates_the_templates_task_and_records_it(
    user, django_capture_on_commit_callbacks
):
    schedule = make_schedule(
        user,
        task_type="sum",
        input_data={"numbers": [4, 5]},
        name="nightly sum",
        description="adds",
        priority="high",
        deadline_seconds=600,
    )

    before = timezone.now()
    with django_capture_on_commit_callbacks() as callbacks:
        run = services.schedule_fire(schedule_id=schedule.pk, message_id="m-1")

    task = Task.objects.get(pk=run.task_id)
    assert (task.owner, task.assignee, task.status) == (user, user, TaskStatus.PENDING)
    assert task.input_data == {"numbers": [4, 5]}
    assert (task.name, task.description, task.priority) == ("nightly sum", "adds", "high")
    assert (
        before + timedelta(seconds=600) <= task.deadline <= timezone.now() + timedelta(seconds=600)
    )
    assert callbacks, "the task is sent to the broker once committed"
    assert run.outcome == "created" and run.code == "" and run.fired_at >= before
    schedule.refresh_from_db()
    assert schedule.total_runs == 1 and schedule.last_run_at == run.fired_at


def test_every_firing_is_a_new_task_and_a_new_run(user):
    schedule = make_schedule(user)
    runs = [services.schedule_fire(schedule_id=schedule.pk) for _ in range(3)]

    assert len({run.task_id for run in runs}) == 3
    assert Task.objects.filter(owner=user).count() == 3
    schedule.refresh_from_db()
    assert schedule.total_runs == 3
    assert list(selectors.schedule_runs(schedule)) == runs[::-1]  # newest first


def test_a_firing_keeps_the_latest_runs_of_its_schedule_only(user, settings):
    settings.SCHEDULE_RUNS_KEPT = 2
    settings.MAX_ACTIVE_TASKS = 10
    schedule, other = make_schedule(user), make_schedule(user)
    others = [services.schedule_fire(schedule_id=other.pk) for _ in range(2)]
    runs = [services.schedule_fire(schedule_id=schedule.pk) for _ in range(4)]

    assert list(selectors.schedule_runs(schedule)) == runs[:1:-1]  # the latest two
    assert list(selectors.schedule_runs(other)) == others[::-1]
    assert Task.objects.filter(owner=user).count() == 6  # the tasks stay
    schedule.refresh_from_db()
    assert schedule.total_runs == 4


def test_at_the_active_task_limit_the_run_is_refused_and_recorded(user, settings):
    settings.MAX_ACTIVE_TASKS = 5
    held = TaskFactory.create_batch(5, owner=user)
    schedule = make_schedule(user)

    refused = services.schedule_fire(schedule_id=schedule.pk)

    assert refused.task_id is None and refused.outcome == "refused"
    assert refused.code == "active_task_limit"
    assert "5 active tasks" in refused.detail
    assert Task.objects.filter(owner=user).count() == 5

    # Refused firings are recorded, not retried; once a slot frees the next one fires.
    Task.objects.filter(pk=held[0].pk).update(status=TaskStatus.COMPLETED)
    created = services.schedule_fire(schedule_id=schedule.pk)
    assert created.task_id is not None and created.code == ""
    schedule.refresh_from_db()
    assert schedule.total_runs == 2
    assert ScheduleRun.objects.filter(schedule=schedule).count() == 2


def test_a_deactivated_owner_disables_the_schedule(user):
    schedule = make_schedule(user)
    user.is_active = False
    user.save()

    run = services.schedule_fire(schedule_id=schedule.pk)

    assert run.code == "owner_inactive" and run.task_id is None
    schedule.refresh_from_db()
    assert not schedule.enabled and not periodic_task(schedule).enabled
    assert not Task.objects.exists()
    # Nothing more is fired.
    assert services.schedule_fire(schedule_id=schedule.pk) is None
    assert ScheduleRun.objects.count() == 1


def test_a_message_delivered_twice_fires_once(user):
    schedule = make_schedule(user)

    first = services.schedule_fire(schedule_id=schedule.pk, message_id="beat-message-1")
    again = services.schedule_fire(schedule_id=schedule.pk, message_id="beat-message-1")

    assert again.pk == first.pk
    assert Task.objects.count() == 1 and ScheduleRun.objects.count() == 1


def test_a_disabled_or_deleted_schedule_does_not_fire(user):
    schedule = make_schedule(user, enabled=False)
    assert services.schedule_fire(schedule_id=schedule.pk) is None
    gone = make_schedule(user)
    services.schedule_delete(schedule=gone, actor=user)
    assert services.schedule_fire(schedule_id=gone.pk) is None
    assert not ScheduleRun.objects.exists() and not Task.objects.exists()


def test_a_template_gone_stale_is_a_refused_run(user):
    schedule = make_schedule(user)
    # Rules are checked again at each firing (e.g. a limit lowered, a file deleted).
    Schedule.objects.filter(pk=schedule.pk).update(input_data={"numbers": []})

    run = services.schedule_fire(schedule_id=schedule.pk)

    assert run.code == "invalid_input" and run.task_id is None
    assert "numbers" in run.detail
    assert not Task.objects.exists()


def test_an_interval_below_a_raised_minimum_is_a_refused_run(user, settings):
    """A schedule made under a lower SCHEDULE_MIN_INTERVAL kept firing at its pace after the
    minimum was raised: each firing is refused now, saying why."""
    settings.SCHEDULE_MIN_INTERVAL = 5
    schedule = make_schedule(user, interval_seconds=5)
    settings.SCHEDULE_MIN_INTERVAL = 60

    run = services.schedule_fire(schedule_id=schedule.pk)

    assert run.code == "invalid_input" and run.task_id is None
    assert "SCHEDULE_MIN_INTERVAL (60)" in run.detail
    assert not Task.objects.exists()
    settings.SCHEDULE_MIN_INTERVAL = 5
    assert services.schedule_fire(schedule_id=schedule.pk).task_id is not None


def test_a_run_keeps_the_task_id_after_the_task_is_deleted(user):
    schedule = make_schedule(user)
    run = services.schedule_fire(schedule_id=schedule.pk)
    task_id = run.task_id
    Task.objects.filter(pk=task_id).delete()

    run = selectors.schedule_runs(schedule).get()
    assert run.task_id == task_id and run.task is None


# --- next run ---------------------------------------------------------------------------


def test_next_run_of_an_interval(user):
    schedule = make_schedule(user, interval_seconds=300)
    schedule = selectors.schedules_visible_to(user).get(pk=schedule.pk)
    changed = schedule.periodic_task.last_run_at  # its start: when it was made
    assert changed is not None
    assert selectors.schedule_next_run_at(schedule) == changed + timedelta(seconds=300)

    # A firing made off beat's timetable (the periodic task run from its admin) moves
    # nothing: beat fires on its own.
    run = services.schedule_fire(schedule_id=schedule.pk)
    schedule = selectors.schedules_visible_to(user).get(pk=schedule.pk)
    assert selectors.schedule_next_run_at(schedule) == changed + timedelta(seconds=300)

    # Beat's firing, recorded by the worker 2 s after beat sent it (before beat wrote its
    # own record): the next one an interval after beat sent it, not after the worker.
    fired = changed + timedelta(seconds=302)
    Schedule.objects.filter(pk=schedule.pk).update(last_run_at=fired)
    schedule = selectors.schedules_visible_to(user).get(pk=schedule.pk)
    assert selectors.schedule_next_run_at(schedule) == changed + timedelta(seconds=600)

    # Beat's own record of its last sending wins when it is newer.
    sent = run.fired_at + timedelta(seconds=5)
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(last_run_at=sent)
    schedule = selectors.schedules_visible_to(user).get(pk=schedule.pk)
    assert selectors.schedule_next_run_at(schedule) == sent + timedelta(seconds=300)


def test_an_edit_keeps_the_next_run_of_an_interval(user):
    """Renamed 6 s after a firing (beat had not yet written that firing to its row), the
    schedule said it fired next an interval after the edit; beat fired it an interval
    after the firing, as always. Turned off and on again, it counts from then (beat's rule)."""
    schedule = make_schedule(user, interval_seconds=300)
    changed = timezone.now() - timedelta(seconds=400)  # made 400 s ago
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(
        date_changed=changed, last_run_at=changed
    )
    # Beat's first firing, due at changed + 300 s, recorded by the worker 2 s after beat
    # sent it; the edit comes 98 s later.
    fired = changed + timedelta(seconds=302)
    Schedule.objects.filter(pk=schedule.pk).update(last_run_at=fired)

    services.schedule_update(schedule=schedule, actor=user, data={"name": "renamed"})
    schedule = selectors.schedules_visible_to(user).get(pk=schedule.pk)
    assert schedule.periodic_task.last_run_at == changed + timedelta(seconds=300)
    assert selectors.schedule_next_run_at(schedule) == changed + timedelta(seconds=600)

    services.schedule_set_enabled(schedule=schedule, actor=user, enabled=False)
    schedule = selectors.schedules_visible_to(user).get(pk=schedule.pk)
    assert schedule.periodic_task.last_run_at is None  # beat's rule for a disabled task
    before = timezone.now()
    services.schedule_set_enabled(schedule=schedule, actor=user, enabled=True)
    schedule = selectors.schedules_visible_to(user).get(pk=schedule.pk)
    again = schedule.periodic_task.last_run_at
    assert again >= before > fired
    assert selectors.schedule_next_run_at(schedule) == again + timedelta(seconds=300)


def test_an_edit_before_the_first_firing_does_not_postpone_it(user):
    """A schedule that had not fired yet counted its interval from its last edit (beat
    starts a task without a last run from when it reads it, again after each change): a
    rename 4 s into a 6 s interval moved the first firing to 10 s, and edits more often
    than the interval put it off for ever. Its timetable starts when it is made."""
    before = timezone.now()
    schedule = make_schedule(user, interval_seconds=300)
    start = PeriodicTask.objects.get(pk=schedule.periodic_task_id).last_run_at
    assert start is not None and start >= before  # its timetable's start, for beat too
    made = start - timedelta(seconds=200)  # as if made 200 s ago
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(
        date_changed=made, last_run_at=made
    )
    services.schedule_update(schedule=schedule, actor=user, data={"name": "renamed"})
    services.schedule_update(schedule=schedule, actor=user, data={"priority": "high"})
    schedule = selectors.schedules_visible_to(user).get(pk=schedule.pk)
    assert schedule.periodic_task.date_changed > made  # beat is told of the change
    assert schedule.periodic_task.last_run_at == made
    assert selectors.schedule_next_run_at(schedule) == made + timedelta(seconds=300)

    # Beat, reading the changed schedule, starts the entry from the same moment.
    entries = Scheduler(app=celery_app, lazy=True).all_as_schedule()
    entry = entries[services._periodic_task_name(schedule)]
    assert entry.last_run_at == made
    assert entry.is_due().next == pytest.approx(100, abs=3)  # seconds until it fires

    # A shorter interval counts from the same start: due now, 200 s > 120 s.
    services.schedule_update(schedule=schedule, actor=user, data={"interval_seconds": 120})
    entries = Scheduler(app=celery_app, lazy=True).all_as_schedule()
    assert entries[services._periodic_task_name(schedule)].is_due().is_due


def test_next_run_of_a_disabled_schedule_is_none(user):
    schedule = make_schedule(user, enabled=False)
    assert selectors.schedule_next_run_at(schedule) is None


def test_visibility(user, other_user, staff):
    mine = make_schedule(user)
    theirs = make_schedule(other_user)
    assert list(selectors.schedules_visible_to(user)) == [mine]
    assert set(selectors.schedules_visible_to(staff)) == {mine, theirs}
    assert not selectors.schedules_visible_to(UserFactory()).exists()


@pytest.mark.django_db(transaction=True)
def test_a_delete_waits_for_a_firing_under_way_and_takes_its_run_too():
    """A firing holds the schedule's row (as _fire does) and records its run; a delete
    sent meanwhile waits for it, then deletes the schedule with that run, instead of
    failing on the run it could not see (PostgreSQL: a 500 and a schedule left firing)."""
    import threading

    from django.db import connection, connections, transaction

    from backend.common.tests.concurrency import wait_until_a_session_waits_on_a_lock

    if connection.vendor != "postgresql":
        pytest.skip("SQLite: one writer at a time, so a firing and a delete never overlap")
    owner = UserFactory()
    schedule = make_schedule(owner)
    locked, release, outcome = threading.Event(), threading.Event(), {}

    def firing():
        try:
            with transaction.atomic():
                Schedule.objects.select_for_update().get(pk=schedule.pk)
                ScheduleRun.objects.create(schedule_id=schedule.pk, fired_at=timezone.now())
                locked.set()
                release.wait(10)
        finally:
            connections.close_all()

    def deleting():
        try:
            services.schedule_delete(schedule=schedule, actor=owner)
            outcome["deleted"] = True
        except Exception as exc:
            outcome["error"] = repr(exc)
        finally:
            connections.close_all()

    fire = threading.Thread(target=firing)
    fire.start()
    assert locked.wait(10)
    delete = threading.Thread(target=deleting)
    delete.start()
    assert wait_until_a_session_waits_on_a_lock(unless=lambda: not delete.is_alive()), outcome
    release.set()
    fire.join(10)
    delete.join(10)
    assert outcome == {"deleted": True}
    assert not Schedule.objects.filter(pk=schedule.pk).exists()
    assert not ScheduleRun.objects.filter(schedule_id=schedule.pk).exists()
    assert not PeriodicTask.objects.filter(pk=schedule.periodic_task_id).exists()


@pytest.mark.django_db(transaction=True)
def test_the_migration_starts_the_timetable_of_a_schedule_made_before(user):
    """A schedule made before its periodic task got a start (no last run) starts from its
    last change, as beat counted it; a disabled one is left without a last run."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    on, off = make_schedule(user), make_schedule(user, enabled=False)
    PeriodicTask.objects.filter(pk=on.periodic_task_id).update(last_run_at=None)
    changed = PeriodicTask.objects.get(pk=on.periodic_task_id).date_changed
    executor = MigrationExecutor(connection)
    executor.migrate([("schedules", "0001_initial")])
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes("schedules"))
    assert PeriodicTask.objects.get(pk=on.periodic_task_id).last_run_at == changed
    assert PeriodicTask.objects.get(pk=off.periodic_task_id).last_run_at is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("timing", ["interval", "crontab"])
def test_schedules_given_one_new_timing_at_once_share_its_row(timing):
    """Beat's timing tables have no unique constraint: two creates at once each found no
    row for a new period or crontab and made one (19 rounds of 20 on PostgreSQL), left for
    good in the Periodic tasks admin. The lookup and the insert take turns per timing."""
    from django_celery_beat.models import CrontabSchedule

    from backend.common.tests.concurrency import at_once

    for round_ in range(6):
        owners = UserFactory.create_batch(4)
        if timing == "interval":
            given = {"interval_seconds": 3600 + round_}
        else:
            given = {"crontab": f"{round_} 3 * * *", "timezone": "UTC"}

        def create(i, given=given, owners=owners):
            return services.schedule_create(
                owner=owners[i], task_type="sum", input_data={"numbers": [1]}, **given
            )

        made = at_once(create, 4)
        assert all(isinstance(schedule, Schedule) for schedule in made), made
        if timing == "interval":
            rows = IntervalSchedule.objects.filter(every=3600 + round_, period="seconds")
        else:
            rows = CrontabSchedule.objects.filter(minute=str(round_), hour="3", timezone="UTC")
        assert rows.count() == 1, f"round {round_}: {rows.count()} rows"
