from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from backend.common.filters import SearchFilter
from backend.common.idempotency import SCHEMA_PARAMETER as IDEMPOTENCY
from backend.common.idempotency import idempotent
from backend.common.routing import UUID_PATTERN
from backend.common.views import requested_action
from backend.tasks import selectors, services, types
from backend.tasks.filters import TaskFilter
from backend.tasks.models import Task

from .schema import TaskSchema
from .serializers import (
    AssignSerializer,
    CompleteSerializer,
    NoInputSerializer,
    TaskCreateSerializer,
    TaskSerializer,
    TaskTypeSerializer,
    TaskUpdateSerializer,
)

# What each action reads, so the browsable API's forms (and OPTIONS) show its input.
INPUT_SERIALIZERS = {
    "create": TaskCreateSerializer,
    "create_alias": TaskCreateSerializer,
    "partial_update": TaskUpdateSerializer,
    "assign": AssignSerializer,
    "complete": CompleteSerializer,
    "decline": NoInputSerializer,
    "start": NoInputSerializer,
    "cancel": NoInputSerializer,
    "retry": NoInputSerializer,
}


class TaskActionsAllowed(permissions.BasePermission):
    """Who may do what to a task, as the services check it, with their words: said here
    too, so the browsable API (and OPTIONS) offers a form only to someone it would serve
    (an assignee was offered edit, assign, cancel and retry, an owner start and decline,
    and each answered 403). A check the services make first (a manual task's actions on a
    worker task: 409) is left to them, so each request is answered as before."""

    def has_object_permission(self, request, view, obj):
        action = requested_action(view)
        if request.method in ("PUT", "PATCH", "DELETE") or action in OWNER_OR_STAFF_ACTIONS:
            self.message = services.OWNER_OR_STAFF
            return services.owner_or_staff(obj, request.user)
        if action in ASSIGNEE_ACTIONS and not types.get(obj.task_type).runs_on_worker:
            refusal = services.manual_action_refusal(obj, request.user, action)
            self.message = refusal
            return refusal is None
        return True


OWNER_OR_STAFF_ACTIONS = frozenset({"assign", "cancel", "retry"})
ASSIGNEE_ACTIONS = frozenset({"start", "decline", "complete"})


class TaskViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Tasks you own or are assigned to (staff: all). Another user's task is 404."""

    lookup_value_regex = UUID_PATTERN
    serializer_class = TaskSerializer
    schema = TaskSchema()
    filter_backends = [DjangoFilterBackend, SearchFilter]
    filterset_class = TaskFilter
    search_fields = ["name", "description"]
    permission_classes = [permissions.IsAuthenticated, TaskActionsAllowed]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return Task.objects.none()
        return selectors.tasks_visible_to(self.request.user)

    def get_serializer_class(self):
        return INPUT_SERIALIZERS.get(requested_action(self), TaskSerializer)

    def list(self, request, *args, **kwargs):
        """Your tasks, newest first unless ``ordering`` says otherwise."""
        # Given as the filters read them (TaskFilter.read_query): blanks are not.
        given = set(TaskFilter.read_query(request.query_params)) & set(TaskFilter.base_filters)
        if request.query_params.get("search"):  # DRF's search reads the last value
            given.add("search")
        # No filter, search or ordering given: the filters would change nothing, and
        # building their form is a good part of a page's cost.
        apply_filters = self.filter_queryset if given else _unchanged
        page = self.paginate_queryset(
            selectors.task_list_source(
                request.user, apply_filters, unfiltered=not (given - {"ordering"})
            )
        )
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def _respond(self, task, code=status.HTTP_200_OK):
        return Response(
            TaskSerializer(task, context=self.get_serializer_context()).data, status=code
        )

    @extend_schema(request=TaskCreateSerializer, responses={201: TaskSerializer})
    @idempotent
    def create(self, request, *args, **kwargs):
        """Submit a task. Worker tasks are queued once the row is committed."""
        serializer = TaskCreateSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        task = services.task_create(owner=request.user, **serializer.validated_data)
        # The new row already holds its owner and assignee objects: no need to read it back.
        return self._respond(task, status.HTTP_201_CREATED)

    @extend_schema(
        request=TaskCreateSerializer, responses={201: TaskSerializer}, parameters=[IDEMPOTENCY]
    )
    @action(
        detail=False, methods=["post"], url_path="create", name="Create (the same as POST here)"
    )
    def create_alias(self, request, format=None):
        """The same as ``POST /api/tasks/``."""
        return self.create(request)

    @extend_schema(request=TaskUpdateSerializer, responses=TaskSerializer)
    def partial_update(self, request, *args, **kwargs):
        """Change name, description, priority or deadline (owner or staff)."""
        task = self.get_object()
        serializer = TaskUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        task = services.task_update(task=task, actor=request.user, data=serializer.validated_data)
        return self._respond(task)

    def destroy(self, request, *args, **kwargs):
        """Delete a task that is not running (owner or staff)."""
        services.task_delete(task=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=AssignSerializer, responses=TaskSerializer)
    @action(detail=True, methods=["post"])
    def assign(self, request, pk=None, format=None):
        """Give a scheduled or pending task to another user (owner or staff)."""
        task = self.get_object()
        serializer = AssignSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        task = services.task_assign(
            task=task, actor=request.user, assignee=serializer.validated_data["assignee"]
        )
        return self._respond(task)

    @extend_schema(request=None, responses=TaskSerializer)
    @action(detail=True, methods=["post"])
    def decline(self, request, pk=None, format=None):
        """The assignee hands back a pending manual task someone else gave them: it becomes
        unassigned, which frees their slot."""
        return self._respond(services.task_decline(task=self.get_object(), actor=request.user))

    @extend_schema(request=None, responses=TaskSerializer)
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None, format=None):
        """The assignee starts a pending manual task."""
        return self._respond(services.task_start(task=self.get_object(), actor=request.user))

    @extend_schema(request=CompleteSerializer, responses=TaskSerializer)
    @action(detail=True, methods=["post"])
    def complete(self, request, pk=None, format=None):
        """The assignee (or staff) completes a manual task, optionally with a result."""
        task = self.get_object()
        serializer = CompleteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        task = services.task_complete(
            task=task, actor=request.user, result=serializer.validated_data.get("result")
        )
        return self._respond(task)

    @extend_schema(request=None, responses=TaskSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None, format=None):
        """Cancel an active task (owner or staff); a running job stops within a second."""
        return self._respond(services.task_cancel(task=self.get_object(), actor=request.user))

    @extend_schema(request=None, responses=TaskSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None, format=None):
        """Run a failed or cancelled worker task again (owner or staff)."""
        return self._respond(services.task_retry(task=self.get_object(), actor=request.user))


def _unchanged(queryset):
    return queryset


class TaskTypeViewSet(viewsets.ViewSet):
    """The task types: names, descriptions and the JSON schema of their input."""

    permission_classes = [permissions.IsAuthenticated]
    serializer_class = TaskTypeSerializer

    @extend_schema(responses=TaskTypeSerializer(many=True))
    def list(self, request, format=None):
        data = [
            {
                "name": kind.name,
                "description": kind.description,
                "runs_on_worker": kind.runs_on_worker,
                "max_attempts": kind.max_attempts,
                "input_schema": kind.input_schema(),
            }
            for kind in types.all_types()
        ]
        return Response(TaskTypeSerializer(data, many=True).data)
