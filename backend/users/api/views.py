import json
from collections.abc import Mapping

from django.db import transaction
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import generics, mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView, TokenVerifyView

from backend.common.idempotency import SCHEMA_PARAMETER as IDEMPOTENCY
from backend.common.idempotency import idempotent
from backend.common.models import IdempotencyKey
from backend.common.routing import UUID_PATTERN
from backend.common.views import requested_action
from backend.users import selectors, services
from backend.users.models import User
from backend.users.tokens import SingleUseRefreshToken, token_user_locked

from .serializers import (
    LogoutSerializer,
    RegisteredUserSerializer,
    RegisterSerializer,
    TokenObtainSerializer,
    TokenRefreshSerializer,
    TokenVerifySerializer,
    UserCreateSerializer,
    UserPublicSerializer,
    UserSerializer,
    WebhookSecretSerializer,
)
from .throttling import AuthRateThrottle, EmailChangeThrottle


class NotStored:
    """Answers that hand out credentials (a token pair, a webhook secret) are not to be kept
    by any cache on the way or in the client (RFC 6749 §5.1), a replay of an idempotent
    request's answer included. ``not_stored_actions``: on a viewset, only those actions."""

    not_stored_actions: tuple[str, ...] = ()

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if not self.not_stored_actions or getattr(self, "action", None) in self.not_stored_actions:
            response["Cache-Control"] = "no-store"
            response["Pragma"] = "no-cache"
        return response


# A body that works as it is: Swagger UI's "Try it out" otherwise offers "string" for
# every field, a password the validators refuse. The sign-in's example is its pair.
EXAMPLE_PASSWORD = "plum-kettle-4711"
REGISTER_EXAMPLE = OpenApiExample(
    "new account",
    value={
        "username": "alice",
        "email": "alice@example.com",
        "password": EXAMPLE_PASSWORD,
        "name": "Alice",
    },
    request_only=True,
)
TOKEN_EXAMPLE = OpenApiExample(
    "sign in", value={"username": "alice", "password": EXAMPLE_PASSWORD}, request_only=True
)


class RegisterView(NotStored, generics.GenericAPIView):
    """Create an account; answers with the user and a token pair."""

    permission_classes = [permissions.AllowAny]
    authentication_classes = []
    throttle_classes = [AuthRateThrottle]
    serializer_class = RegisterSerializer

    @extend_schema(responses={201: RegisteredUserSerializer}, examples=[REGISTER_EXAMPLE])
    @idempotent
    def post(self, request, format=None):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = services.user_create(**serializer.validated_data)
        return Response(RegisteredUserSerializer(user).data, status=status.HTTP_201_CREATED)


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


@extend_schema(responses={200: TokenPairSerializer}, examples=[TOKEN_EXAMPLE])
class TokenView(NotStored, TokenObtainPairView):
    """Token pair for a username or email address and a password."""

    serializer_class = TokenObtainSerializer
    throttle_classes = [AuthRateThrottle]


class TokenRefresh(NotStored, TokenRefreshView):
    """A new access token and a new refresh token; the old refresh token stops working."""

    serializer_class = TokenRefreshSerializer
    throttle_classes = [AuthRateThrottle]


@extend_schema(
    responses={
        200: OpenApiResponse(
            {"type": "object", "additionalProperties": False, "maxProperties": 0},
            description="The token is valid: an empty object, {}.",
        )
    }
)
class TokenVerify(TokenVerifyView):
    """200 for a valid token; 401 for an expired, malformed or blacklisted one."""

    serializer_class = TokenVerifySerializer
    throttle_classes = [AuthRateThrottle]


class LogoutView(generics.GenericAPIView):
    """Blacklist a refresh token of the signed-in user."""

    serializer_class = LogoutSerializer

    @extend_schema(responses={205: None})
    def post(self, request, format=None):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            token = SingleUseRefreshToken(serializer.validated_data["refresh"])
            if str(token.get(jwt_settings.USER_ID_CLAIM)) != str(request.user.pk):
                raise ValidationError({"refresh": ["This token belongs to another user."]})
            with transaction.atomic():
                token_user_locked(token)
                # Its insert decides: a refresh of the same token a moment before took it,
                # and the session goes on with the new one, so this logout did not end it.
                token.blacklist()
        except TokenError as exc:
            raise ValidationError({"refresh": [str(exc)]}, code="token_not_valid") from exc
        return Response(status=status.HTTP_205_RESET_CONTENT)


class IsSelfOrStaff(permissions.BasePermission):
    """Read: oneself or staff. Change: oneself or staff, and another staff member's or a
    superuser's account only as ``services.account_rule_refuses`` allows. Deactivate: staff,
    on the same terms."""

    message = "You may only view or change your own account."

    def has_object_permission(self, request, view, obj):
        viewer = request.user
        if obj.pk == viewer.pk and request.method != "DELETE":
            return True
        if not viewer.is_staff:
            if request.method == "DELETE":
                self.message = "Only staff can deactivate an account."
            return False
        changes = request.method not in permissions.SAFE_METHODS
        if changes and (refused := services.account_rule_refuses(obj, viewer)):
            self.message = refused
            return False
        return True


def _changes(data, field: str, user) -> bool:
    """``data`` gives ``field`` a value other than ``user``'s own (in any case). Only a
    non-staff caller's own account is ever changed by them."""
    if not (isinstance(data, Mapping) and field in data):
        return False
    value = data.get(field)
    if value is None:
        value = ""  # no email, as an account without one has (None)
    if not isinstance(value, str):
        return True  # refused by the serializer anyway
    return value.strip().lower() != (getattr(user, field) or "").lower()


SECRET_REPLACED = json.dumps(
    {
        "detail": "A later rotation replaced the secret this Idempotency-Key created; it is "
        "not shown again (it signs beside the new one only until WEBHOOK_SECRET_OVERLAP "
        "ends, or the next rotation). Rotate again with a new key to get the current one.",
        "code": "secret_replaced",
    }
)


class UserViewSet(
    NotStored,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Users. Staff see everyone and every field; others see active users without emails."""

    lookup_value_regex = UUID_PATTERN
    permission_classes = [permissions.IsAuthenticated, IsSelfOrStaff]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    not_stored_actions = ("webhook_secret",)

    @extend_schema(
        summary="Users: others' public fields; staff: every field of every user",
        description="Active users' id, username, name and task statistics, as documented "
        "here; staff get every user (active or not) with every field of a profile (User).",
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return User.objects.none()
        return selectors.user_list(viewer=self.request.user)

    def get_object(self):
        if self.action == "me":  # the signed-in user's own profile (the browsable API's forms)
            return selectors.user_with_statistics(pk=self.request.user.pk)
        return super().get_object()

    def get_serializer_class(self):
        action = requested_action(self)  # OPTIONS describes the write it asks about
        if action == "create":
            return UserCreateSerializer
        if action == "webhook_secret":  # nothing to send: its form has no field
            return WebhookSecretSerializer
        if action == "list" and (
            # The schema is the same whoever fetches it: the public fields, its description
            # saying what staff get (a staff reader's schema documented only theirs).
            getattr(self, "swagger_fake_view", False) or not self.request.user.is_staff
        ):
            return UserPublicSerializer
        return UserSerializer

    def get_permissions(self):
        # A create, and OPTIONS asking whether one may create: staff only, so the POST form
        # is offered only to those it serves.
        if requested_action(self) == "create":
            return [permissions.IsAdminUser()]
        return super().get_permissions()

    def get_throttles(self):
        throttles = super().get_throttles()
        # A new email, or a new username (refused when it is another user's email), tells
        # whether an address is registered. Staff see every email: not counted; nor a field
        # sent as it is (a whole profile sent back to change its name).
        # The body is read for a PATCH alone: read for any method, a body no parser takes
        # turned a GET's 200 or a PUT's 405 into a 400.
        user = self.request.user
        if (
            self.request.method == "PATCH"
            and not user.is_staff
            and (
                _changes(self.request.data, "email", user)
                or _changes(self.request.data, "username", user)
            )
        ):
            throttles.append(EmailChangeThrottle())
        return throttles

    @idempotent
    def create(self, request, *args, **kwargs):
        """Create a user (staff)."""
        return super().create(request, *args, **kwargs)

    def perform_create(self, serializer):
        user = services.user_create(**serializer.validated_data, actor=self.request.user)
        serializer.instance = selectors.user_with_statistics(pk=user.pk)

    def perform_update(self, serializer):
        user = services.user_update(
            user=serializer.instance, data=dict(serializer.validated_data), actor=self.request.user
        )
        serializer.instance = selectors.user_with_statistics(pk=user.pk)

    def destroy(self, request, *args, **kwargs):
        services.user_deactivate(user=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=UserSerializer)
    @action(detail=False, methods=["get", "patch"], serializer_class=UserSerializer)
    def me(self, request, format=None):
        """The signed-in user's own profile and task statistics."""
        user = self.get_object()
        context = self.get_serializer_context()
        if request.method == "PATCH":
            serializer = UserSerializer(user, data=request.data, partial=True, context=context)
            serializer.is_valid(raise_exception=True)
            services.user_update(
                user=user, data=dict(serializer.validated_data), actor=request.user
            )
            user = selectors.user_with_statistics(pk=user.pk)
        return Response(UserSerializer(user, context=context).data)

    @extend_schema(request=None, responses={201: WebhookSecretSerializer}, parameters=[IDEMPOTENCY])
    @action(
        detail=False,
        methods=["post"],
        url_path="me/webhook-secret",
        serializer_class=WebhookSecretSerializer,
    )
    @idempotent
    def webhook_secret(self, request, format=None):
        """Create or rotate the secret your webhooks are signed with; it is shown only in
        this answer (the previous one still signs beside it for WEBHOOK_SECRET_OVERLAP).
        With an ``Idempotency-Key`` header, a retry gets the same secret instead of rotating
        again; once a later rotation has replaced it, a 409 ``secret_replaced``, never the
        old secret, nor a new rotation."""
        WebhookSecretSerializer(data=request.data or {}).is_valid(raise_exception=True)
        secret = services.user_webhook_secret_rotate(user=request.user)
        # The answers kept for earlier keys hold secrets that are no longer the current: their
        # replay becomes a refusal (the table keeps no old secret, and a late retry does not
        # rotate again under another client). This request's own answer is written after it
        # returns.
        IdempotencyKey.objects.filter(
            user=request.user, response_body__startswith='{"webhook_secret"'
        ).update(status_code=status.HTTP_409_CONFLICT, response_body=SECRET_REPLACED)
        return Response({"webhook_secret": secret}, status=status.HTTP_201_CREATED)
