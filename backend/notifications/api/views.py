from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import mixins, permissions, viewsets

from backend.common.routing import UUID_PATTERN
from backend.notifications import selectors
from backend.notifications.filters import NotificationFilter
from backend.notifications.models import Notification

from .serializers import NotificationSerializer


class NotificationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Notifications made for you (staff: everyone's), newest first: each event's mail,
    webhook or callback, where it went, whether it was delivered, its attempts and why the
    last one failed (a receiver's answer, a webhook without a secret). Another user's is
    404."""

    lookup_value_regex = UUID_PATTERN
    serializer_class = NotificationSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = NotificationFilter
    permission_classes = [permissions.IsAuthenticated]
    http_method_names = ["get", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return Notification.objects.none()
        return selectors.notifications_visible_to(self.request.user)
