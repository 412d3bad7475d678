import django_filters

from .models import Channel, Event, Notification, NotificationStatus


class NotificationFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=NotificationStatus.choices)
    channel = django_filters.ChoiceFilter(choices=Channel.choices)
    event = django_filters.ChoiceFilter(choices=Event.choices)
    task = django_filters.UUIDFilter(field_name="task_id", help_text="a task's id: its events")

    class Meta:
        model = Notification
        fields = []
