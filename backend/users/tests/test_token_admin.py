"""The admin's pages of simplejwt's token tables: who holds a refresh token, never the
token; a revoked token stays revoked."""

import pytest
from django.contrib.auth.models import Permission
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from backend.users.tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def _signed_in(api_client, user) -> str:
    response = api_client.post(
        "/api/token/", {"username": user.username, "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()["refresh"]


def _staff_with(client, *codenames: str):
    staff = UserFactory(is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(staff)
    return staff


def test_a_refresh_token_is_never_shown_in_the_admin(client, api_client):
    """Staff allowed only to view the outstanding tokens read a superuser's refresh token on
    its change page, then signed in as the superuser with it."""
    root = UserFactory(is_staff=True, is_superuser=True)
    refresh = _signed_in(api_client, root)
    outstanding = OutstandingToken.objects.get(user=root)
    _staff_with(client, "view_outstandingtoken")

    listed = client.get("/admin/token_blacklist/outstandingtoken/")
    page = client.get(f"/admin/token_blacklist/outstandingtoken/{outstanding.pk}/change/")

    assert (listed.status_code, page.status_code) == (200, 200)
    assert outstanding.jti in page.content.decode()  # which token, and whose
    for response in (listed, page):
        html = response.content.decode()
        assert refresh not in html and refresh.split(".")[2] not in html
    client.force_login(root)  # nor to a superuser
    page = client.get(f"/admin/token_blacklist/outstandingtoken/{outstanding.pk}/change/")
    assert page.status_code == 200 and refresh.split(".")[2] not in page.content.decode()


def test_a_blacklisted_token_cannot_be_deleted_from_the_admin(client, api_client):
    """Deleting a blacklist row brought a revoked refresh token back."""
    user = UserFactory()
    refresh = _signed_in(api_client, user)
    api_client.force_authenticate(user)
    assert api_client.post("/api/logout/", {"refresh": refresh}, format="json").status_code == 205
    api_client.force_authenticate(None)
    revoked = BlacklistedToken.objects.get(token__user=user)
    root = UserFactory(is_staff=True, is_superuser=True)

    for staff in (_staff_with(client, "delete_blacklistedtoken", "view_blacklistedtoken"), root):
        client.force_login(staff)
        assert client.get("/admin/token_blacklist/blacklistedtoken/").status_code == 200
        url = f"/admin/token_blacklist/blacklistedtoken/{revoked.pk}/delete/"
        assert client.post(url, {"post": "yes"}).status_code == 403
        changelist = "/admin/token_blacklist/blacklistedtoken/"
        action = {"action": "delete_selected", "_selected_action": [revoked.pk], "post": "yes"}
        client.post(changelist, action)

    assert BlacklistedToken.objects.filter(pk=revoked.pk).exists()
    again = api_client.post("/api/token/refresh/", {"refresh": refresh}, format="json")
    assert again.status_code == 401


def test_a_secret_cannot_be_read_back_through_the_lists_filters(client, api_client):
    """A change list takes a filter on any field of its model from the query string and
    says how many rows matched: staff allowed only to view the tokens (or the users) read a
    superuser's refresh token (or a user's webhook secret) back a character at a time."""
    from backend.users import services

    root = UserFactory(is_staff=True, is_superuser=True)
    refresh = _signed_in(api_client, root)
    owner = UserFactory()
    secret = services.user_webhook_secret_rotate(user=owner)
    services.user_webhook_secret_rotate(user=owner)  # the first one is now the previous
    _staff_with(client, "view_outstandingtoken", "view_blacklistedtoken", "view_user")

    assert client.get("/admin/token_blacklist/outstandingtoken/?jti=x").status_code == 200
    probes = [
        f"/admin/token_blacklist/outstandingtoken/?token={refresh}",
        f"/admin/token_blacklist/outstandingtoken/?token__startswith={refresh[:5]}",
        f"/admin/token_blacklist/outstandingtoken/?token__gte={refresh[:5]}",
        f"/admin/token_blacklist/blacklistedtoken/?token__token__startswith={refresh[:5]}",
        f"/admin/users/user/?webhook_secret__startswith={secret[:8]}",
        f"/admin/users/user/?webhook_secret_previous={secret}",
        "/admin/users/user/?password__startswith=pbkdf2",
    ]
    for probe in probes:
        assert client.get(probe).status_code == 400, probe


def test_staff_who_change_groups_do_not_give_permissions(client):
    """Staff allowed to change groups gave their own group any permission, and so
    themselves (a user's groups and permissions are a superuser's to change)."""
    from django.contrib.auth.models import Group

    group = Group.objects.create(name="helpdesk")
    group.permissions.set(Permission.objects.filter(codename="view_task"))
    staff = _staff_with(client, "view_group", "change_group", "add_group", "view_task")
    staff.groups.add(group)
    wanted = Permission.objects.filter(codename__in=["view_user", "change_user"])

    page = client.get(f"/admin/auth/group/{group.pk}/change/")
    assert page.status_code == 200 and 'name="permissions"' not in page.content.decode()
    saved = client.post(
        f"/admin/auth/group/{group.pk}/change/",
        {"name": "helpdesk", "permissions": [p.pk for p in wanted]},
    )
    assert saved.status_code == 302
    added = client.post("/admin/auth/group/add/", {"name": "mine", "permissions": [wanted[0].pk]})
    assert added.status_code == 302
    assert list(group.permissions.values_list("codename", flat=True)) == ["view_task"]
    assert not Group.objects.get(name="mine").permissions.exists()
    staff.refresh_from_db()
    assert not staff.has_perm("users.change_user")
    assert client.get("/admin/users/user/").status_code == 403

    root = UserFactory(is_staff=True, is_superuser=True)  # a superuser gives them
    client.force_login(root)
    client.post(
        f"/admin/auth/group/{group.pk}/change/",
        {"name": "helpdesk", "permissions": [p.pk for p in wanted]},
    )
    assert set(group.permissions.values_list("codename", flat=True)) == {"view_user", "change_user"}
