import pytest

from backend.notifications.models import Notification
from backend.tasks import services as task_services

pytestmark = pytest.mark.django_db


def test_the_admin_lists_filters_and_resends(client, monkeypatch):
    from backend.notifications import services
    from backend.users.tests.factories import UserFactory

    monkeypatch.setattr(services.queue, "send_messages", lambda name, args, queue, rank: len(args))
    staff = UserFactory(is_staff=True, is_superuser=True)
    staff.notify_email = ["task.created"]
    staff.save()
    task = task_services.task_create(owner=staff, task_type="manual", input_data={})
    notification = Notification.objects.get(task_id=task.pk)
    Notification.objects.filter(pk=notification.pk).update(status="failed", attempts=8)
    client.force_login(staff)

    listing = client.get(
        "/admin/notifications/notification/?status__exact=failed&channel__exact=email"
    )
    assert listing.status_code == 200 and staff.email.encode() in listing.content
    assert (
        client.get(f"/admin/notifications/notification/{notification.pk}/change/").status_code
        == 200
    )

    response = client.post(
        "/admin/notifications/notification/",
        {"action": "resend", "_selected_action": [str(notification.pk)]},
        follow=True,
    )
    assert b"1 notification(s) will be sent again." in response.content
    notification.refresh_from_db()
    assert notification.status == "pending"


def test_a_notifications_page_saves_nothing(client):
    """Its ``unreachable`` box was left editable, and the page's save wrote the whole row
    back, whatever a delivery had changed meanwhile."""
    from backend.users.tests.factories import UserFactory

    staff = UserFactory(is_staff=True, is_superuser=True, notify_email=["task.created"])
    task = task_services.task_create(owner=staff, task_type="manual", input_data={})
    notification = Notification.objects.get(task_id=task.pk)
    client.force_login(staff)
    page = client.get(f"/admin/notifications/notification/{notification.pk}/change/")
    assert page.status_code == 200
    assert b'name="unreachable"' not in page.content and b'name="_save"' not in page.content
    Notification.objects.filter(pk=notification.pk).update(status="delivered")
    saved = client.post(
        f"/admin/notifications/notification/{notification.pk}/change/", {"unreachable": "on"}
    )
    assert saved.status_code == 403
    notification.refresh_from_db()
    assert notification.status == "delivered" and notification.unreachable is False
