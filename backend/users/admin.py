from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import UserChangeForm, UserCreationForm
from django.contrib.auth.models import Group
from django.db import transaction
from rest_framework_simplejwt.token_blacklist import admin as simplejwt_admin
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from backend.common.admin import BoundedSearchMixin, SecretFieldsMixin, held, log_changed
from backend.common.email import address_refusal
from backend.ops.selectors import with_task_counts

from . import services
from .models import User


class DomainEmailMixin:
    """An email the API would take (``address_refusal``)."""

    def clean_email(self):
        email = self.cleaned_data.get("email")
        if email and (refusal := address_refusal(email)):
            raise forms.ValidationError(refusal)
        return email


class UserCreateForm(DomainEmailMixin, UserCreationForm):
    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email", "name")


class UserEditForm(DomainEmailMixin, UserChangeForm):
    class Meta(UserChangeForm.Meta):
        model = User
        fields = "__all__"


@admin.register(User)
class UserAdmin(BoundedSearchMixin, SecretFieldsMixin, DjangoUserAdmin):
    form = UserEditForm
    # The webhook signing secrets are shown once, to their owner (Django's own admin
    # already refuses a filter on the password).
    secret_fields = ("webhook_secret", "webhook_secret_previous")
    add_form = UserCreateForm
    # Fits a 1400 px screen beside the admin's menu and filters.
    list_display = (
        "username",
        "email",
        "is_staff",
        "is_active",
        "tasks_owned",
        "tasks_active",
        "tasks_completed",
        "tasks_failed",
    )
    list_filter = ("is_staff", "is_active", "is_superuser")
    search_fields = ("username", "email", "name")
    ordering = ("username",)
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Profile", {"fields": ("name", "email")}),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("username", "email", "name", "password1", "password2"),
            },
        ),
    )
    actions = ["deactivate"]

    def get_queryset(self, request):
        # Each user's task statistics as columns of the list's one query (no query per row).
        return with_task_counts(super().get_queryset(request))

    @admin.display(description="tasks", ordering="tasks_owned")
    def tasks_owned(self, obj) -> int:
        return obj.tasks_owned

    @admin.display(description="open", ordering="tasks_active")
    def tasks_active(self, obj) -> int:
        return obj.tasks_active

    @admin.display(description="done", ordering="tasks_completed")
    def tasks_completed(self, obj) -> int:
        return obj.tasks_completed

    @admin.display(description="failed", ordering="tasks_failed")
    def tasks_failed(self, obj) -> int:
        return obj.tasks_failed

    @admin.action(
        description="Deactivate selected users (nothing is deleted)", permissions=["change"]
    )
    def deactivate(self, request, queryset):
        if queryset.filter(pk=request.user.pk).exists():
            self.message_user(request, services.CANNOT_DEACTIVATE_SELF, messages.ERROR)
        others = queryset.exclude(pk=request.user.pk)
        if not request.user.is_superuser and others.filter(is_superuser=True).exists():
            self.message_user(request, services.ONLY_A_SUPERUSER, messages.ERROR)
        with transaction.atomic():
            # Those it deactivates, held until it commits: each is logged in its history.
            pks = held(User, queryset.filter(is_active=True))
            count = services.users_deactivate(queryset=queryset, actor=request.user)
            log_changed(request, User, pks, "Deactivated by an admin action.", is_active=False)
        self.message_user(request, f"{count} user(s) deactivated.")

    def has_change_permission(self, request, obj=None):
        # A superuser's account (its form, its password form) is changed by a superuser or
        # themselves, as the API rules (services.user_update); others may only view it.
        if obj is not None and services.account_rule_refuses(obj, request.user):
            return False
        return super().has_change_permission(request, obj)

    def get_readonly_fields(self, request, obj=None):
        # Nobody gives themselves (or anyone) more power than they have: superuser status,
        # groups and permissions are a superuser's to change. And nobody locks themselves
        # out (the API and the deactivate action refuse it too).
        fields = super().get_readonly_fields(request, obj)
        if not request.user.is_superuser:
            fields = (*fields, "is_superuser", "groups", "user_permissions")
        if obj is not None and obj.pk == request.user.pk:
            fields = (*fields, "is_active", "is_staff")
        return fields

    def has_delete_permission(self, request, obj=None):
        # Users are deactivated, never deleted: their tasks and history stay.
        return False


# simplejwt's admin for its token tables (registered when its module is imported, at the
# top of this one, so it can be replaced here): its change page showed each outstanding
# refresh token in full, so staff allowed only to view that table could sign in as anyone,
# a superuser included (POST /api/token/refresh/ with it); and deleting a blacklisted token
# brought a revoked refresh token (a logout, a password change, a deactivation) back to life.


class OutstandingTokenAdmin(
    BoundedSearchMixin, SecretFieldsMixin, simplejwt_admin.OutstandingTokenAdmin
):
    """Which refresh tokens were issued to whom, and until when: never the token itself."""

    fields = ("jti", "user", "created_at", "expires_at")
    secret_fields = ("token",)

    def get_readonly_fields(self, request, obj=None):
        return self.fields


class BlacklistedTokenAdmin(BoundedSearchMixin, simplejwt_admin.BlacklistedTokenAdmin):
    """Which refresh tokens were revoked: read only (a revocation is for good)."""

    actions = None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class GroupAdmin(BoundedSearchMixin, DjangoGroupAdmin):
    """Groups, whose permissions are a superuser's to give: staff allowed to change groups
    gave any permission to a group of their own, and so to themselves (a user's groups and
    permissions are a superuser's to change already)."""

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        if not request.user.is_superuser:
            fields = (*fields, "permissions")
        return fields


for _model, _admin in (
    (OutstandingToken, OutstandingTokenAdmin),
    (BlacklistedToken, BlacklistedTokenAdmin),
    (Group, GroupAdmin),
):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, _admin)
