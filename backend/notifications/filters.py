import django_filters

from backend.common.filters import ChoiceInFilter, QueryReadingMixin

from .models import Channel, Event, Notification, NotificationStatus

SEVERAL = "one or several, comma-separated or repeated"


class NotificationFilter(QueryReadingMixin, django_filters.FilterSet):
    status = ChoiceInFilter(choices=NotificationStatus.choices, help_text=SEVERAL)
    channel = ChoiceInFilter(choices=Channel.choices, help_text=SEVERAL)
    event = ChoiceInFilter(choices=Event.choices, help_text=SEVERAL)
    task = django_filters.UUIDFilter(field_name="task_id", help_text="a task's id: its events")

    class Meta:
        model = Notification
        fields = []
