"""Schedules in the admin, with their runs inline. Adding, changing, enabling, disabling and
deleting go through the services, so the periodic task beat reads stays in step, and the
form is checked by the same validation as the API."""

import json

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Exists, OuterRef, Q
from django.forms.fields import InvalidJSONInput
from django.forms.models import BaseInlineFormSet
from django.urls import reverse
from django.utils.html import format_html
from django_celery_beat.admin import CrontabScheduleAdmin as CeleryBeatCrontabAdmin
from django_celery_beat.admin import IntervalScheduleAdmin as CeleryBeatIntervalAdmin
from django_celery_beat.admin import PeriodicTaskAdmin as CeleryBeatPeriodicTaskAdmin
from django_celery_beat.admin import PeriodicTaskInline
from django_celery_beat.models import (
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from backend.celery import app as celery_app
from backend.common.admin import BoundedSearchMixin, ServiceSaveMixin
from backend.common.errors import DomainError, NotFound
from backend.common.storable import MAX_JSON_DEPTH, shallow, storable
from backend.tasks import queue, types

from . import selectors, services, timing
from .api.serializers import LIGHT_CHANGES, ScheduleWriteSerializer, each_checked
from .models import Schedule, ScheduleRun
from .validation import template_context

RUNS_SHOWN = 50
FORM_FIELDS = (
    "task_type",
    "input_data",
    "name",
    "description",
    "priority",
    "deadline_seconds",
    "interval_seconds",
    "crontab",
    "timezone",
    "enabled",
)


class ShallowJSONField(forms.JSONField):
    """JSON no deeper than the API takes (the parser's RecursionError was a 500), and with
    no NUL nor lone surrogate (``"\\ud800"`` typed in the box: a 500 in the type's checks,
    or in showing the form again with an error)."""

    def to_python(self, value):
        try:
            value = super().to_python(value)
        except RecursionError:
            value = None
            deep = True
        else:
            deep = not shallow(value)
        if deep:
            raise forms.ValidationError(
                f"JSON may nest at most {MAX_JSON_DEPTH} levels deep.", code="too_deep"
            )
        if not storable(value):
            raise forms.ValidationError(
                "JSON strings may not contain NUL characters or unpaired surrogates.",
                code="unstorable",
            )
        return value

    def bound_data(self, data, initial):
        # Shown again as typed, as Django shows JSON it cannot parse.
        try:
            value = super().bound_data(data, initial)
        except RecursionError:
            return InvalidJSONInput(data)
        return value if storable(value) else InvalidJSONInput(data)


class ScheduleForm(forms.ModelForm):
    task_type = forms.ChoiceField(choices=())
    input_data = ShallowJSONField(required=False, initial=dict)

    class Meta:
        model = Schedule
        fields = ("owner", *FORM_FIELDS)

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.request = request
        names = types.names()
        # A schedule of a type the service no longer runs is still shown as it is, and can
        # be paused or renamed (a light change).
        current = getattr(self.instance, "task_type", "")
        if current and current not in names:
            names.append(current)
        self.fields["task_type"].choices = [(name, name) for name in names]
        self.validated = None

    def clean(self):
        cleaned = super().clean()
        owner = cleaned.get("owner") or getattr(self.instance, "owner", None)
        if self._errors or owner is None:
            return cleaned
        limit = settings.MAX_SCHEDULES_PER_USER
        if self.instance._state.adding and Schedule.objects.filter(owner=owner).count() >= limit:
            raise forms.ValidationError(
                f"{owner.username} already has {limit} schedules (the most allowed)."
            )
        if not self.instance._state.adding and self._light_change(cleaned, owner):
            return cleaned
        data = {field: cleaned.get(field) for field in FORM_FIELDS}
        data["input_data"] = data["input_data"] if data["input_data"] is not None else {}
        data["crontab"] = data["crontab"] or None
        enabled_now = not self.instance._state.adding and self.instance.enabled
        context = {**template_context(owner), "enabled_now": enabled_now}
        serializer = ScheduleWriteSerializer(data=data, context=context)
        if serializer.is_valid():
            self.validated = dict(serializer.validated_data)
            return cleaned
        for field, problems in serializer.errors.items():
            target = field if field in self.fields else None
            for problem in _flatten(problems):
                self.add_error(target, problem if target else f"{field}: {problem}")
        return cleaned

    def _light_change(self, cleaned, owner) -> bool:
        """A change of the name, the description or a pause alone, each field checked by
        itself, as the API's PATCH does: the form refused every save of a schedule whose
        template no longer validated (its file deleted), a pause included. False for any
        other change (turning a paused schedule on is checked whole)."""
        changed = set(self.changed_data)
        if not changed <= LIGHT_CHANGES or (cleaned.get("enabled") and not self.instance.enabled):
            return False
        fields = ScheduleWriteSerializer(context=template_context(owner)).fields
        checked, errors = each_checked(fields, {name: cleaned.get(name) for name in changed})
        for name, problems in errors.items():
            for problem in _flatten(problems):
                self.add_error(name, problem)
        if not self._errors:
            self.validated = checked
        return True

    def _post_clean(self):
        # The model's own checks (the interval/crontab constraint) are the serializer's job
        # above; run them only once the form is valid, on what will be saved.
        if self.validated is not None:
            super()._post_clean()


def _check_whole(schedule: Schedule) -> None:
    """A schedule about to be turned on is checked whole, its template included (a file it
    names may be gone, a limit lowered since): DomainError naming the first problem."""
    data = {**services.schedule_as_written(schedule), "enabled": True}
    serializer = ScheduleWriteSerializer(data=data, context=template_context(schedule.owner))
    if not serializer.is_valid():
        raise DomainError(next(_flatten(serializer.errors)))


def _flatten(problems, prefix=""):
    if isinstance(problems, dict):
        for key, value in problems.items():
            yield from _flatten(value, f"{prefix}{key}: ")
    elif isinstance(problems, list):
        for value in problems:
            yield from _flatten(value, prefix)
    else:
        yield f"{prefix}{problems}"


class FirstOnlyFormSet(BaseInlineFormSet):
    """An inline's first ``shown`` rows only (by the inline's ordering), read once."""

    shown: int

    def get_queryset(self):
        # Read once: Django asks for it again for each form, and a new slice each time was
        # a query per run shown (263 on a change page).
        if not hasattr(self, "_first_rows"):
            self._first_rows = super().get_queryset()[: self.shown]
        return self._first_rows


class RecentRunsFormSet(FirstOnlyFormSet):
    shown = RUNS_SHOWN


class ScheduleRunInline(admin.TabularInline):
    model = ScheduleRun
    formset = RecentRunsFormSet
    verbose_name_plural = f"runs (the latest {RUNS_SHOWN})"
    fields = ("fired_at", "outcome", "task_link", "code", "detail")
    readonly_fields = fields
    ordering = ("-fired_at", "-id")
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("task")

    @admin.display(description="task")
    def task_link(self, run):
        if not run.task_id:
            return "-"
        if run.task is None:
            return f"{run.task_id} (deleted)"
        url = reverse("admin:tasks_task_change", args=[run.task_id])
        return format_html('<a href="{}">{}</a> ({})', url, run.task_id, run.task.status)

    def has_add_permission(self, request, obj=None):
        return False


class TimingFilter(admin.SimpleListFilter):
    title = "timing"
    parameter_name = "timing"

    def lookups(self, request, model_admin):
        return (("interval", "interval"), ("crontab", "crontab"))

    def queryset(self, request, queryset):
        if self.value() == "interval":
            return queryset.filter(interval_seconds__isnull=False)
        if self.value() == "crontab":
            return queryset.filter(~Q(crontab=""))
        return queryset


@admin.register(Schedule)
class ScheduleAdmin(BoundedSearchMixin, ServiceSaveMixin, admin.ModelAdmin):
    form = ScheduleForm
    inlines = [ScheduleRunInline]
    list_display = (
        "__str__",
        "task_type",
        "owner",
        "enabled",
        "next_run",
        "last_run_at",
        "total_runs",
        "created_at",
    )
    list_filter = ("enabled", TimingFilter, "task_type")
    search_fields = ("id", "name", "description", "owner__username")
    list_select_related = ("owner", "periodic_task")
    raw_id_fields = ("owner",)
    readonly_fields = ("periodic_task", "next_run", "last_run_at", "total_runs")
    actions = ["enable_schedules", "disable_schedules"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change=change, **kwargs)

        class RequestForm(form_class):
            def __init__(self, *args, **inner):
                super().__init__(*args, request=request, **inner)

        return RequestForm

    def get_readonly_fields(self, request, obj=None):
        # The owner is chosen once, when the schedule is added.
        return (*self.readonly_fields, "owner") if obj else self.readonly_fields

    def get_changeform_initial_data(self, request):
        return {"owner": request.user.pk, **super().get_changeform_initial_data(request)}

    @admin.display(description="next run")
    def next_run(self, schedule):
        return selectors.schedule_next_run_at(schedule) if schedule.pk else None

    def save_with_service(self, request, obj, form, change):
        data = form.validated
        if change:
            saved = services.schedule_update(schedule=obj, actor=request.user, data=data)
        else:
            saved = services.schedule_create(owner=form.cleaned_data["owner"], **data)
        obj.pk = saved.pk
        obj.periodic_task_id = saved.periodic_task_id
        obj._state.adding = False

    def delete_model(self, request, obj):
        services.schedule_delete(schedule=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for schedule in queryset:
            services.schedule_delete(schedule=schedule, actor=request.user)

    def _set_enabled(self, request, queryset, enabled: bool):
        changed, refused = 0, []
        # Also those whose periodic task says otherwise (turned off or on in the Periodic
        # tasks admin, which beat obeys): set in step again.
        differing = Q(enabled=not enabled) | Q(periodic_task__enabled=not enabled)
        for schedule in queryset.filter(differing):
            try:
                if enabled:
                    _check_whole(schedule)  # as the API's PATCH turning it on does
                services.schedule_set_enabled(
                    schedule=schedule, actor=request.user, enabled=enabled
                )
            except NotFound:
                refused.append(f"“{schedule}”: deleted meanwhile.")
            except DomainError as exc:  # its template no longer validates
                refused.append(f"“{schedule}”: {exc.detail}")
            else:
                changed += 1
        verb = "enabled" if enabled else "disabled"
        already = max(0, queryset.count() - changed - len(refused))
        self.message_user(
            request,
            f"{changed} schedule(s) {verb}." + (f" ({already} already were.)" if already else ""),
        )
        for reason in refused:
            self.message_user(request, reason, level=messages.WARNING)

    @admin.action(description="Enable selected schedules", permissions=["change"])
    def enable_schedules(self, request, queryset):
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected schedules", permissions=["change"])
    def disable_schedules(self, request, queryset):
        self._set_enabled(request, queryset, False)


class PeriodicTaskAdmin(BoundedSearchMixin, CeleryBeatPeriodicTaskAdmin):
    """django-celery-beat's Periodic tasks, with a schedule's own shown but not changed here:
    turned off here, it stopped firing while its schedule still said ``enabled: true`` (and
    any edit of the schedule turned it back on); renamed or retimed, it went out of step with
    the schedule. Its schedule changes it (API or the Schedules admin); running it now (the
    "Run selected tasks" action) stays.

    The service's own maintenance jobs (``CELERY_BEAT_SCHEDULE``: dispatch, expiry, rescue,
    the notifications' dispatch, the cleanups) are shown the same way: turned off here, the
    tasks waited, pending, for ever, with nothing to say why (beat keeps a job turned off
    across restarts). Their timing is their settings' (README, Configuration)."""

    # A periodic task is a schedule's when a schedule names it (one added here with the
    # firing task, say, is not: the form refuses that task, and one made before is changed
    # or deleted here like any other).
    def _is_a_schedules(self, obj) -> bool:
        return obj is not None and Schedule.objects.filter(periodic_task=obj).exists()

    @staticmethod
    def _is_the_services(obj) -> bool:
        return obj is not None and obj.name in settings.CELERY_BEAT_SCHEDULE

    def _kept(self, obj) -> bool:
        return self._is_a_schedules(obj) or self._is_the_services(obj)

    def has_change_permission(self, request, obj=None):
        return not self._kept(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return not self._kept(obj) and super().has_delete_permission(request, obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        if self._is_the_services(obj) and request.method == "GET":
            self.message_user(
                request,
                "This periodic task is one of the service's maintenance jobs: it is not "
                "changed or turned off here (its timing is set by the service's settings).",
                level=messages.INFO,
            )
        if self._is_a_schedules(obj) and request.method == "GET":
            schedule = Schedule.objects.filter(periodic_task=obj).first()
            if schedule is not None:
                url = reverse("admin:schedules_schedule_change", args=[schedule.pk])
                self.message_user(
                    request,
                    format_html(
                        'This periodic task belongs to the schedule <a href="{}">{}</a>: '
                        "change, pause or delete it there.",
                        url,
                        schedule,
                    ),
                    level=messages.INFO,
                )
        return super().change_view(request, object_id, form_url, extra_context)

    def _without_schedules(self, request, queryset, *, turning_on: bool = False):
        """The selection less the schedules' own and the service's, which the messages
        name; when it may turn periodic tasks on, less any of the firing task too (one made
        before the form refused them: on, it fired a user's schedule at its own pace)."""
        owned = Q(Exists(Schedule.objects.filter(periodic_task=OuterRef("pk"))))
        if turning_on:
            owned |= Q(task=services.FIRE_TASK)
        theirs = queryset.filter(owned).count()
        if theirs:
            self.message_user(
                request,
                f"{theirs} periodic task(s) of schedules left as they are: turn them on or off "
                "in Schedules.",
                level=messages.WARNING,
            )
        services_own = queryset.filter(name__in=list(settings.CELERY_BEAT_SCHEDULE)).count()
        if services_own:
            self.message_user(
                request,
                f"{services_own} maintenance job(s) of the service left as they are: they "
                "always run.",
                level=messages.WARNING,
            )
        return queryset.exclude(owned).exclude(name__in=list(settings.CELERY_BEAT_SCHEDULE))

    # Each for those who may change periodic tasks: django-celery-beat's asks nothing, so
    # staff who may only view them could fire any user's schedule (a task in their name,
    # as often as they clicked) and turn periodic tasks off.
    # When the messages above name the whole selection, django-celery-beat's own ("0 tasks
    # were successfully toggled") is left out: it read as if the action had failed.
    @admin.action(description="Enable selected tasks", permissions=["change"])
    def enable_tasks(self, request, queryset):
        left = self._without_schedules(request, queryset, turning_on=True)
        if left.exists():
            super().enable_tasks(request, left)

    @admin.action(description="Disable selected tasks", permissions=["change"])
    def disable_tasks(self, request, queryset):
        left = self._without_schedules(request, queryset)
        if left.exists():
            super().disable_tasks(request, left)

    @admin.action(description="Toggle activity of selected tasks", permissions=["change"])
    def toggle_tasks(self, request, queryset):
        left = self._without_schedules(request, queryset, turning_on=True)
        if left.exists():
            super().toggle_tasks(request, left)

    @admin.action(description="Run selected tasks", permissions=["change"])
    def run_tasks(self, request, queryset):
        """Each once, now. A schedule's fires here, as beat's message would have it fired
        (its task created, or the refusal recorded as a run), with no broker in between; any
        other is sent through the service's producer, bounded by BROKER_PUBLISH_TIMEOUT:
        django-celery-beat's own sending waited on a hung broker until the web server killed
        the request (a 500 after 120 s), and a firing it could not send was lost."""
        owners = dict(
            Schedule.objects.filter(periodic_task__in=queryset).values_list(
                "periodic_task_id", "pk"
            )
        )
        done, problems = 0, []
        with queue.sends_awaited():  # each firing its own send: the request's second is late
            for periodic_task in queryset:
                if periodic_task.pk in owners:
                    problem = _fire_now(owners[periodic_task.pk])
                else:
                    problem = _send_now(periodic_task)
                if problem:
                    problems.append(f"“{periodic_task}”: {problem}")
                else:
                    done += 1
        self.message_user(request, f"{done} periodic task(s) run.")
        for problem in problems:
            self.message_user(request, problem, level=messages.WARNING)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)

        class Form(form):
            def clean(self):
                data = super().clean()
                # Added, changed to it, or (one made before the form refused them) turned on:
                # one made before is turned off, renamed or deleted here.
                was = None if self.instance._state.adding else self.instance.task
                if data.get("task") == services.FIRE_TASK and (
                    was != services.FIRE_TASK or data.get("enabled")
                ):
                    raise forms.ValidationError(
                        "A schedule's firing is made by its schedule (Schedules, or "
                        "/api/schedules/), which keeps it in step and within "
                        "SCHEDULE_MIN_INTERVAL; it is not added or turned on here."
                    )
                return data

        return Form


def _fire_now(schedule_id) -> str:
    """Fire the schedule now; what stopped it, or "" when its task was created."""
    run = services.schedule_fire(schedule_id=schedule_id)
    if run is None:
        return "its schedule is disabled or deleted: not fired"
    if run.code:
        return f"its schedule fired and was refused ({run.code}): {run.detail}"
    return ""


def _send_now(periodic_task: PeriodicTask) -> str:
    """Send the periodic task's message now; what stopped it, or "" when it went."""
    celery_app.loader.import_default_modules()
    if periodic_task.task == services.FIRE_TASK:  # no schedule names it: made by hand
        return "a schedule's firing is run from its schedule (Schedules): not sent"
    if periodic_task.task not in celery_app.tasks:
        return f"no task named {periodic_task.task!r} is registered: not sent"
    try:
        args, kwargs = (
            json.loads(periodic_task.args or "[]"),
            json.loads(periodic_task.kwargs or "{}"),
        )
    except ValueError:
        return "its arguments are not JSON: not sent"
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        return "its arguments are not a list and an object: not sent"
    name = periodic_task.queue or celery_app.amqp.router.route({}, periodic_task.task)["queue"].name
    if name not in celery_app.amqp.queues:
        return f"the service has no queue {name!r}: not sent"
    with queue.sends_awaited():  # "not sent" must be true: a send given up may still go
        sent = queue.send_messages(periodic_task.task, [args], queue=name, kwargs=kwargs)
    if not sent:
        return "the broker did not take it (down or not answering: see /health/); not sent"
    return ""


# The periodic tasks an interval's or a crontab's page lists, by name.
USERS_OF_A_TIMING_SHOWN = 50


class FirstUsersFormSet(FirstOnlyFormSet):
    shown = USERS_OF_A_TIMING_SHOWN


class PeriodicTasksUsingInline(PeriodicTaskInline):
    """The periodic tasks that fire by a timing, the first few by name: django-celery-beat's
    inline listed every one, each reading its timing again for its name (313 queries and
    2 s for an interval 300 schedules share)."""

    formset = FirstUsersFormSet
    ordering = ("name",)
    verbose_name_plural = (
        f"periodic tasks using this schedule (the first {USERS_OF_A_TIMING_SHOWN} by name)"
    )

    def get_queryset(self, request):
        return (
            super().get_queryset(request).select_related("interval", "crontab", "solar", "clocked")
        )


class TimingOfSchedulesMixin:
    """An interval or a crontab that a schedule's periodic task fires by is shown but not
    changed here: it is shared by every schedule (and maintenance job) of the same timing,
    so an edit retimed them all while each schedule still said its own (and an interval of
    2 s got round SCHEDULE_MIN_INTERVAL). A schedule's timing is changed on the schedule."""

    timing_field = ""
    inlines = [PeriodicTasksUsingInline]

    def _schedules_using(self, obj) -> int:
        """The schedules' periodic tasks and the service's maintenance jobs (whose timing is
        their settings') that fire by this timing."""
        if obj is None:
            return 0
        kept = Q(task=services.FIRE_TASK) | Q(name__in=list(settings.CELERY_BEAT_SCHEDULE))
        return PeriodicTask.objects.filter(kept, **{self.timing_field: obj}).count()

    def has_change_permission(self, request, obj=None):
        return not self._schedules_using(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return not self._schedules_using(obj) and super().has_delete_permission(request, obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method == "GET" and (
            used := self._schedules_using(self.get_object(request, object_id))
        ):
            self.message_user(
                request,
                f"{used} schedule(s) or maintenance job(s) fire by this timing: change a "
                "schedule's timing in Schedules, a maintenance job's in the service's "
                "settings (it is left as it is here).",
                level=messages.INFO,
            )
        return super().change_view(request, object_id, form_url, extra_context)


class IntervalForm(forms.ModelForm):
    """An interval beat can keep (``timing.interval_refused``): the model takes any count
    of any period, and beat died of one, or fired one non-stop."""

    class Meta:
        model = IntervalSchedule
        fields = ("every", "period")

    def clean(self):
        cleaned = super().clean()
        every, period = cleaned.get("every"), cleaned.get("period")
        if every is not None and period and (refused := timing.interval_refused(every, period)):
            raise forms.ValidationError(refused, code="invalid_interval")
        return cleaned


class IntervalScheduleAdmin(TimingOfSchedulesMixin, CeleryBeatIntervalAdmin):
    form = IntervalForm
    timing_field = "interval"


class CrontabScheduleAdmin(TimingOfSchedulesMixin, CeleryBeatCrontabAdmin):
    timing_field = "crontab"


admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, PeriodicTaskAdmin)
admin.site.unregister(IntervalSchedule)
admin.site.register(IntervalSchedule, IntervalScheduleAdmin)
admin.site.unregister(CrontabSchedule)
admin.site.register(CrontabSchedule, CrontabScheduleAdmin)
# Solar timings need a library the service does not install (ephem): one made here stopped
# beat at every start. Nothing of the service fires by one.
admin.site.unregister(SolarSchedule)
