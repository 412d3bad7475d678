import copy

from django.contrib.auth import authenticate
from django.contrib.auth.hashers import check_password
from django.contrib.auth.models import update_last_login
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models, transaction
from rest_framework import exceptions, serializers
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer
from rest_framework_simplejwt.serializers import (
    TokenRefreshSerializer as BaseTokenRefreshSerializer,
)
from rest_framework_simplejwt.serializers import TokenVerifySerializer as BaseTokenVerifySerializer
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import RefreshToken

from backend.common.email import address_refusal
from backend.common.serializers import (
    BoundedListField,
    RejectUnknownFieldsMixin,
    TextField,
    shown_text,
    unwritable_keys,
    validate_outbound_url,
)
from backend.notifications.models import Event
from backend.users.authentication import JWTAuthentication
from backend.users.models import NOTIFY_EVENTS, User, default_notify_email
from backend.users.services import username_from_email
from backend.users.tokens import (
    SingleUseRefreshToken,
    UntypedToken,
    deactivations_of,
    storable_id,
    token_user_locked,
    user_row_locked,
)

STAT_FIELDS = (
    "total_tasks_assigned",
    "total_tasks_pending",
    "total_tasks_running",
    "total_tasks_completed",
    "total_tasks_failed",
    "completion_percentage",
)


class TaskStatisticsMixin(serializers.Serializer):
    """Reads the counts annotated by ``selectors.with_task_statistics``."""

    total_tasks_assigned = serializers.IntegerField(read_only=True, default=0)
    total_tasks_pending = serializers.IntegerField(read_only=True, default=0)
    total_tasks_running = serializers.IntegerField(read_only=True, default=0)
    total_tasks_completed = serializers.IntegerField(read_only=True, default=0)
    total_tasks_failed = serializers.IntegerField(read_only=True, default=0)
    completion_percentage = serializers.SerializerMethodField()

    def get_completion_percentage(self, user) -> float:
        assigned = getattr(user, "total_tasks_assigned", 0)
        if not assigned:
            return 0.0
        # Tenths rounded half up, in whole numbers: round() rounds a half to the even tenth
        # (2 of 32, 6.25 %, read 6.2).
        tenths = (user.total_tasks_completed * 2000 + assigned) // (2 * assigned)
        return tenths / 10


def _others(instance: User | None):
    return User.objects.exclude(pk=instance.pk) if instance is not None else User.objects.all()


def validate_unique_email(value: str | None, *, instance: User | None = None) -> str | None:
    """Unique in any case, and not another user's username (either one logs in); at a
    domain name, not a domain literal, and without control characters (``address_refusal``)."""
    if not value:
        return None
    if refusal := address_refusal(value):
        raise serializers.ValidationError(refusal)
    if _others(instance).filter(email__iexact=value).exists():
        raise serializers.ValidationError("A user with this email already exists.")
    if conflict := _identity_conflict("email", value, instance):
        raise serializers.ValidationError(conflict)
    return value


def validate_unique_username(value: str, *, instance: User | None = None) -> str:
    """Unique in any case (``Alice`` beside ``alice`` would pass for her in a list of
    assignees), and not another user's email address (either one logs in)."""
    if _others(instance).filter(username__iexact=value).exists():
        raise serializers.ValidationError("A user with that username already exists.")
    if conflict := _identity_conflict("username", value, instance):
        raise serializers.ValidationError(conflict)
    return value


def _identity_conflict(field: str, value: str, instance: User | None) -> str | None:
    """The model's rule (``User.identity_conflicts``) for a new value of one field, checked
    here to answer beside the other fields' errors; the save checks it again."""
    candidate = copy.copy(instance) if instance is not None else User()
    setattr(candidate, field, value)
    return candidate.identity_conflicts().get(field)


class UserPublicSerializer(TaskStatisticsMixin, serializers.ModelSerializer):
    """What any signed-in user may see of another: no email, no flags."""

    class Meta:
        model = User
        fields = ("id", "username", "name", *STAT_FIELDS)
        read_only_fields = fields


class UserSerializer(RejectUnknownFieldsMixin, TaskStatisticsMixin, serializers.ModelSerializer):
    """A user's own profile, or any profile for staff. ``password`` is write-only."""

    email = serializers.EmailField(required=False, allow_blank=True, allow_null=True)
    password = TextField(
        write_only=True, required=False, style={"input_type": "password"}, trim_whitespace=False
    )
    notify_email = BoundedListField(
        # The events as a notification names them: one enum in the schema for both.
        child=serializers.ChoiceField(choices=Event.choices),
        max_length=len(NOTIFY_EVENTS),
        allow_empty=True,
        required=False,
        initial=default_notify_email,  # the raw-data form's start offered none
        help_text="The task events mailed to you (task.created, task.completed, task.failed, "
        'task.cancelled); default ["task.failed"].',
    )
    webhook_url = TextField(
        max_length=2048,
        required=False,
        allow_blank=True,
        allow_null=True,  # none, as empty is: a client clears a field with null
        help_text="An http(s) URL receiving every event of your tasks as a signed webhook "
        "(create the secret with POST /api/users/me/webhook-secret/); empty or null for none.",
    )
    webhook_secret_set = serializers.SerializerMethodField(
        help_text="Whether a webhook secret exists (it is shown only when created)."
    )
    # The model's text fields (username, name) take a string only: DRF's CharField made
    # {"name": 123} the name "123", and a form's JSON {"name": NaN} the name "nan".
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: TextField,
    }

    class Meta:
        model = User
        fields = (
            "id",
            "username",
            "email",
            "name",
            "password",
            "is_staff",
            "is_active",
            "date_joined",
            "last_login",
            "notify_email",
            "webhook_url",
            "webhook_secret_set",
            *STAT_FIELDS,
        )
        read_only_fields = ("id", "date_joined", "last_login")

    def get_webhook_secret_set(self, user) -> bool:
        return bool(user.webhook_secret)

    def validate_notify_email(self, value):
        return list(dict.fromkeys(value))

    def validate_webhook_url(self, value):
        return "" if value is None else validate_outbound_url(value)

    def validate_name(self, value):
        return shown_text(value)

    def get_fields(self):
        fields = super().get_fields()
        view = self.context.get("view")
        if getattr(view, "swagger_fake_view", False):
            # The schema documents what staff may send, and says so.
            for name in ("is_staff", "is_active"):
                fields[name].help_text = "Staff only (on another user's profile); else 400."
            return fields
        request = self.context.get("request")
        if request is None or not request.user.is_staff:
            fields["is_staff"].read_only = True
            fields["is_active"].read_only = True
        return fields

    def validate_email(self, value):
        return validate_unique_email(value, instance=self.instance)

    def validate_username(self, value):
        return validate_unique_username(value, instance=self.instance)

    def validate(self, attrs):
        password = attrs.get("password")
        if password:
            candidate = self.instance or User()
            for field in ("username", "email", "name"):
                if field in attrs:
                    setattr(candidate, field, attrs[field])
            try:
                validate_password(password, user=candidate)
            except DjangoValidationError as exc:
                raise serializers.ValidationError({"password": list(exc.messages)}) from exc
        return attrs


class UserCreateSerializer(UserSerializer):
    """Staff creating a user: a password is required; as on register, the username may be
    left out when an email is given (made from the email)."""

    password = TextField(write_only=True, style={"input_type": "password"}, trim_whitespace=False)

    def get_fields(self):
        fields = super().get_fields()
        fields["username"].required = False
        # The browsable API's form shows it ticked, as a create without it makes the user
        # (a form leaves an unticked box out, which reads as false).
        fields["is_active"].initial = True
        return fields

    def validate(self, attrs):
        if not attrs.get("username"):
            if not attrs.get("email"):
                raise serializers.ValidationError(
                    {"username": ["A username is required (or an email to make one from)."]}
                )
            attrs["username"] = username_from_email(attrs["email"])
            attrs["username_derived"] = True
        return super().validate(attrs)


class RegisterSerializer(serializers.Serializer):
    username = TextField(
        max_length=150,
        required=False,
        help_text="Optional when an email is given: then made from the email's local part.",
    )
    password = TextField(write_only=True, style={"input_type": "password"}, trim_whitespace=False)
    password2 = TextField(
        write_only=True, required=False, style={"input_type": "password"}, trim_whitespace=False
    )
    email = serializers.EmailField(required=False, allow_blank=True, allow_null=True)
    name = TextField(max_length=150, required=False, allow_blank=True)

    def to_internal_value(self, data):
        # A key it does not take is a 400 naming it, as for every other write: a misspelt
        # "mail" made an account without an email, and nobody was told.
        if hasattr(data, "keys"):
            errors = unwritable_keys(
                data.keys(),
                writable=self.fields,
                known=UserSerializer.Meta.fields,
                cannot="Not taken when registering: change it with PATCH /api/users/me/ "
                "once registered.",
            )
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)

    def validate_username(self, value):
        username_field = User._meta.get_field("username")
        for validator in username_field.validators:
            validator(value)
        return validate_unique_username(value)

    def validate_email(self, value):
        return validate_unique_email(value)

    def validate_name(self, value):
        return shown_text(value)

    def validate(self, attrs):
        password2 = attrs.pop("password2", None)
        if password2 is not None and password2 != attrs["password"]:
            raise serializers.ValidationError({"password2": ["Passwords do not match."]})
        if not attrs.get("username"):
            if not attrs.get("email"):
                raise serializers.ValidationError(
                    {"username": ["A username is required (or an email to make one from)."]}
                )
            attrs["username"] = username_from_email(attrs["email"])
            attrs["username_derived"] = True
        candidate = User(
            username=attrs.get("username", ""), email=attrs.get("email"), name=attrs.get("name", "")
        )
        try:
            validate_password(attrs["password"], user=candidate)
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"password": list(exc.messages)}) from exc
        return attrs


class RegisteredUserSerializer(serializers.ModelSerializer):
    """The new user and a token pair, so a client can start working at once."""

    access = serializers.SerializerMethodField()
    refresh = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = ("id", "username", "email", "name", "access", "refresh")

    def _tokens(self, user) -> RefreshToken:
        if not hasattr(self, "_token_pair"):
            self._token_pair = SingleUseRefreshToken.for_user(user)
        return self._token_pair

    def get_access(self, user) -> str:
        return str(self._tokens(user).access_token)

    def get_refresh(self, user) -> str:
        return str(self._tokens(user))


class TokenObtainSerializer(TokenObtainPairSerializer):
    """``{username, password}`` where username may be the email, or ``{email, password}``."""

    token_class = SingleUseRefreshToken  # its tokens carry the user's deactivations

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        username = self.fields[self.username_field]
        username.required = False
        username.help_text = "Username or email address."
        # As registration takes it: a password with spaces at either end is that password.
        self.fields["password"].trim_whitespace = False
        self.fields["email"] = TextField(required=False, write_only=True)
        # The one not used may be sent empty or null (a form, Swagger UI's example): it
        # was a 400 "This field may not be blank" beside a username that signs in.
        for field in (username, self.fields["email"]):
            field.allow_blank = field.allow_null = True

    def validate(self, attrs):
        username, email = attrs.get(self.username_field), attrs.get("email")
        if not username and not email:
            raise serializers.ValidationError(
                {self.username_field: ["Give a username or an email address."]}
            )
        credentials = {"username": username} if username else {"email": email}
        self.user = authenticate(
            request=self.context.get("request"), password=attrs["password"], **credentials
        )
        if not jwt_settings.USER_AUTHENTICATION_RULE(self.user):
            raise exceptions.AuthenticationFailed(
                self.error_messages["no_active_account"], "no_active_account"
            )
        with transaction.atomic():
            # Turns with a new password or a deactivation (tokens.token_user_locked): the
            # password was checked against the row as read before, a hash's time ago. A
            # change committed since then revoked the open tokens without this one.
            row = _still_signs_in(self.user, attrs["password"])
            if row is None:
                raise exceptions.AuthenticationFailed(
                    self.error_messages["no_active_account"], "no_active_account"
                )
            # As the locked row counts them: a deactivation and a reactivation committed
            # during the hash gave tokens of the count before, refused at every use.
            self.user.deactivations = row[2]
            refresh = self.get_token(self.user)
            if jwt_settings.UPDATE_LAST_LOGIN:
                update_last_login(None, self.user)
        return {"refresh": str(refresh), "access": str(refresh.access_token)}


def _still_signs_in(user, password: str) -> tuple[str, bool, int] | None:
    """The user's row, locked, when it is still active and still takes ``password``: its
    hash is the one checked, or another the same password matches (a sign-in beside this
    one upgraded it to a newer hasher, which Django does at sign-in, each with a salt of its
    own); else None."""
    row = user_row_locked(pk=user.pk)
    if row is None or not row[1]:
        return None
    if row[0] == user.password or check_password(password, row[0]):
        return row
    return None


class TokenRefreshSerializer(BaseTokenRefreshSerializer):
    """A refresh token, exchanged for a new access token and a new refresh token; each
    refresh token is taken once."""

    # simplejwt's rotation, with each refresh token exchanged once even when requests
    # carrying it arrive together (backend.users.tokens).

    token_class = SingleUseRefreshToken

    def validate(self, attrs):
        try:
            with transaction.atomic():
                # Turns with a new password or a deactivation of its user (tokens).
                token = self.token_class(attrs["refresh"])
                row = token_user_locked(token)
                if row is not None and deactivations_of(token) != row[2]:
                    # Issued before a deactivation (and somehow not revoked with the
                    # others): its access tokens would each be refused.
                    raise exceptions.AuthenticationFailed(
                        "The token was issued before the account was deactivated; sign in again.",
                        code="token_not_valid",
                    )
                return super().validate(attrs)
        except (User.DoesNotExist, DjangoValidationError):
            # A token (signed with the key) whose user is gone or whose user id is no id:
            # refused as every other endpoint refuses it, not a 500.
            raise exceptions.AuthenticationFailed("User not found", code="user_not_found") from None


class TokenVerifySerializer(BaseTokenVerifySerializer):
    """A token to check: valid, unexpired, not blacklisted, and its user still active."""

    # A blacklisted token is invalid like any other: 401, not 400. A token of a user who is
    # gone or deactivated is refused as every other endpoint refuses it.

    def validate(self, attrs):
        token = UntypedToken(attrs["token"])  # ours: a TokenError for an exp beyond Python's dates
        jti = token.payload.get(jwt_settings.JTI_CLAIM)
        if jti is not None and not storable_id(jti):
            # Looked up in the blacklist as it is: a NUL in it was a 500 (a token signed with
            # the key, by a tool, say), one too long passed here while a refresh refused it.
            raise TokenError("Token has no id")
        try:
            data = super().validate(attrs)
        except serializers.ValidationError as exc:
            raise TokenError(
                str(exc.detail[0]) if isinstance(exc.detail, list) else str(exc.detail)
            ) from exc
        # The API's own check of a token's user (gone: user_not_found, deactivated:
        # user_inactive), by the statement every request runs.
        JWTAuthentication().get_user(UntypedToken(attrs["token"]))
        return data


class WebhookSecretSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """The answer of a rotation; its request takes nothing (a body naming a key is refused:
    ``{"webhook_secret": "mine"}`` was ignored, and a secret the client did not choose made)."""

    webhook_secret = serializers.CharField(
        read_only=True,
        help_text="whsec_ followed by base64: the key of the Standard Webhooks signatures. "
        "Shown once; a new one replaces it.",
    )


class LogoutSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    refresh = serializers.CharField()
