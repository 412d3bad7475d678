"""Admin behaviour shared by the apps."""

from django.contrib import messages
from django.contrib.admin.actions import delete_selected as confirm_delete_selected
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.core.exceptions import FieldDoesNotExist
from django.db import transaction
from django.db.models import JSONField
from django.db.models.constants import LOOKUP_SEP
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.text import smart_split

from .errors import DomainError
from .filters import MAX_SEARCH_WORDS


class SecretFieldsMixin:
    """An admin whose model holds secrets (``secret_fields``) its pages never show. Django's
    change list takes a filter on any field of the model from the query string
    (``?token__startswith=…``) and says how many rows matched, so a secret could be read
    back a character at a time by anyone allowed to view the list. A filter on one of them
    is refused (Django's 400 for a lookup not allowed)."""

    secret_fields: tuple[str, ...] = ()

    def lookup_allowed(self, lookup, value, request):
        if lookup.split(LOOKUP_SEP, 1)[0] in self.secret_fields:
            return False
        return super().lookup_allowed(lookup, value, request)


# Lookups a list's query string may not use: a regular expression is run per row (on
# SQLite in Python, holding the web process: ``?name__regex=^(a{1,20}|a)+$`` froze it for
# minutes), and a path into a JSON field is a lookup SQLite cannot run (a 500).
REFUSED_LOOKUPS = frozenset({"regex", "iregex"})


# The most objects an admin action takes at once ("Select all N" across the pages): a
# cancel takes about 10 ms a task, so this many end well within a web worker's 120 s;
# "Delete selected" over 200,000 tasks ran 41 s, then failed on its 65,535 query parameters.
MAX_ACTION_SELECTION = 5000


class BoundedActionsMixin:
    """An admin whose actions take at most ``MAX_ACTION_SELECTION`` objects: a larger
    selection across the pages is refused at once, saying how to narrow it, instead of an
    action that outlives the request (the objects it did stay done; the page is lost)."""

    def response_action(self, request, queryset):
        if request.POST.get("select_across") == "1":
            count = queryset.count()
            if count > MAX_ACTION_SELECTION:
                self.message_user(
                    request,
                    f"An action takes at most {MAX_ACTION_SELECTION:,} "
                    f"{self.model._meta.verbose_name_plural} at once; this selection has "
                    f"{count:,}. Narrow it with the filters or the search (to delete many, "
                    "the purge_tasks and purge_files commands do it in batches).",
                    level=messages.ERROR,
                )
                return None
        return super().response_action(request, queryset)


class BoundedSearchMixin(BoundedActionsMixin):
    """An admin list's search with at most ``MAX_SEARCH_WORDS`` words, each once, as the
    API's: Django adds one OR over every searched field per word, and a search of a
    thousand words (a 5 KB address, within any server's limit) made one page of the tasks
    list four scans of 5,000 LIKE conditions, 98 s at 70,000 tasks, by anyone allowed to
    view it. Beyond the limit the first words are searched, and the page says so.

    Its filters from the query string are bounded too: Django takes a lookup on any field
    of the model, and one by regular expression, or into a JSON field, is refused (Django's
    400 for a lookup not allowed). Its actions take a bounded selection
    (``BoundedActionsMixin``)."""

    def lookup_allowed(self, lookup, value, request):
        parts = lookup.split(LOOKUP_SEP)
        if REFUSED_LOOKUPS.intersection(parts):
            return False
        try:
            first = self.model._meta.get_field(parts[0])
        except FieldDoesNotExist:
            first = None
        if isinstance(first, JSONField):
            return False
        return super().lookup_allowed(lookup, value, request)

    def get_search_results(self, request, queryset, search_term):
        words = list(dict.fromkeys(smart_split(search_term)))
        if len(words) > MAX_SEARCH_WORDS:
            search_term = " ".join(words[:MAX_SEARCH_WORDS])
            if not request.path.endswith("/autocomplete/"):  # its answer shows no messages
                self.message_user(
                    request,
                    f"A search has at most {MAX_SEARCH_WORDS} words: the first "
                    f"{MAX_SEARCH_WORDS} of these {len(words)} were searched.",
                    level=messages.WARNING,
                )
        return super().get_search_results(request, queryset, search_term)


# Refusals named one by one up to this many; beyond, one line per reason (its code).
REFUSALS_NAMED = 10


def each_with_service(admin, request, queryset, do, done: str, logged: str = "") -> None:
    """An admin action's body: ``do(obj)`` for each selected object; then how many it did
    ("3 task(s) cancelled"), and each the service refused, with the reason: one message
    each, or, past ``REFUSALS_NAMED``, one per kind of refusal with its count and an example
    (a selection of 50,000 made a page of 50,000 messages, 7 MB). With ``logged``, each
    object it did is given that entry in its admin history, as a change form's save is."""
    count, refused = 0, []
    for obj in queryset:
        try:
            do(obj)
        except DomainError as exc:
            refused.append((obj, exc))
        else:
            count += 1
            if logged:
                admin.log_change(request, obj, logged)
    admin.message_user(request, f"{count} {done}.")
    refusals_shown(admin, request, refused)


# The entries an action logs for the objects one bulk UPDATE changed: one INSERT per this many.
LOGGED_AT_ONCE = 500


def held(model, queryset) -> list:
    """The keys of ``queryset``'s objects, their rows locked until the transaction ends: an
    action's selection, before the bulk UPDATE that changes it (see ``log_changed``)."""
    return list(
        model.objects.select_for_update()
        .filter(pk__in=queryset.values("pk"))
        .values_list("pk", flat=True)
    )


def log_changed(request, model, pks, message: str, **still) -> None:
    """``message`` in the admin history of each object of ``model`` among ``pks`` that
    still matches ``still``: for an action that changes its selection in one bulk UPDATE
    (``pks`` from ``held`` before it, so these are the objects it changed), as a change
    form's save is logged."""
    pks = list(pks)
    for start in range(0, len(pks), LOGGED_AT_ONCE):
        part = pks[start : start + LOGGED_AT_ONCE]
        LogEntry.objects.log_actions(
            user_id=request.user.pk,
            queryset=model.objects.filter(pk__in=part, **still),
            action_flag=CHANGE,
            change_message=message,
        )


def refusals_shown(admin, request, refused: list) -> None:
    """``(obj, DomainError)`` pairs as the page's warnings (see ``each_with_service``)."""
    if len(refused) <= REFUSALS_NAMED:
        for obj, exc in refused:
            admin.message_user(request, f"“{obj}”: {exc.detail}", level=messages.WARNING)
        return
    kinds: dict[str, list] = {}
    for obj, exc in refused:
        kinds.setdefault(exc.code, []).append((obj, exc))
    for code, alike in kinds.items():
        obj, exc = alike[0]
        admin.message_user(
            request,
            f"{len(alike)} refused ({code}), such as “{obj}”: {exc.detail}",
            level=messages.WARNING,
        )


class DeleteRefused(Exception):
    """The service refused to delete the object (the message says why)."""


class ServiceDeleteMixin:
    """An admin whose single-object delete goes through the app's service (the API's rules):
    ``delete_model`` calls ``delete_with_service``, and when the service refuses, the delete
    page answers with that reason alone and goes back to the object, which is still there.

    The refusal is raised out of ``delete_model``, so ``delete_view``'s transaction drops
    the log entry Django wrote for it and no success message follows.

    ``delete_selected_with_service`` is the bulk action's body: Django's confirmation page
    first (its form posts back to an action named ``delete_selected``), then each object
    through the service, logged as Django logs a deletion; those refused are named. An
    admin may define ``delete_many_with_service(request, queryset)`` doing it in batches
    instead, returning how many it deleted and the ``(obj, DomainError)`` it refused."""

    def delete_selected_with_service(self, request, queryset, plural: str):
        if request.POST.get("post"):
            _, _, perms_needed, protected = self.get_deleted_objects(queryset, request)
            if not (perms_needed or protected):

                def delete(obj):
                    with transaction.atomic():  # a refusal rolls its log entry back
                        self.log_deletions(request, [obj])
                        self.delete_with_service(request, obj)

                many = getattr(self, "delete_many_with_service", None)
                if many is not None:
                    deleted, refused = many(request, queryset)
                    self.message_user(request, f"{deleted} {plural} deleted.")
                    refusals_shown(self, request, refused)
                else:
                    each_with_service(self, request, queryset, delete, f"{plural} deleted")
                return None
        return confirm_delete_selected(self, request, queryset)

    def delete_with_service(self, request, obj) -> None:
        raise NotImplementedError

    def delete_model(self, request, obj):
        try:
            self.delete_with_service(request, obj)
        except DomainError as exc:
            raise DeleteRefused(f"“{obj}”: {exc.detail}") from exc

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except DeleteRefused as exc:
            self.message_user(request, str(exc), level=messages.ERROR)
            if not self.has_view_or_change_permission(request):
                return redirect("admin:index")
            return _back_to(self, request, "change", object_id)


def _back_to(admin, request, page: str, *args):
    """A redirect to one of ``admin``'s pages (change, add, changelist), filters kept."""
    opts = admin.opts
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_{page}", args=args)
    filters = {"preserved_filters": admin.get_preserved_filters(request), "opts": opts}
    return redirect(add_preserved_filters(filters, url))


class SaveRefused(Exception):
    """The service refused the save (the message says why)."""


class ServiceSaveMixin:
    """An admin whose add and change forms save through the app's service:
    ``save_model`` calls ``save_with_service``, and when the service refuses (a rule, or the
    object deleted since the form was shown) the page says why alone and goes back to the
    object, or to the list when it is gone. The refusal is raised out of ``save_model``, so
    the save view's transaction drops the history entry Django wrote for it and no success
    message follows (it said both)."""

    def save_with_service(self, request, obj, form, change) -> None:
        raise NotImplementedError

    def save_model(self, request, obj, form, change):
        try:
            self.save_with_service(request, obj, form, change)
        except DomainError as exc:
            raise SaveRefused(exc.detail) from exc

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except SaveRefused as exc:
            if object_id is None:
                self.message_user(request, str(exc), level=messages.ERROR)
                return _back_to(self, request, "add")
            if self.model._default_manager.filter(pk=object_id).exists():
                self.message_user(request, str(exc), level=messages.ERROR)
                return _back_to(self, request, "change", object_id)
            gone = f"This {self.opts.verbose_name} was deleted meanwhile; nothing was saved."
            self.message_user(request, gone, level=messages.ERROR)
            return _back_to(self, request, "changelist")
