"""Reads of files."""

from django.db.models import QuerySet

from backend.users.models import User

from .models import File


def files_visible_to(user: User) -> QuerySet[File]:
    """Staff see every file; others their own."""
    queryset = File.objects.select_related("owner")
    if not user.is_staff:
        queryset = queryset.filter(owner=user)
    return queryset


def file_of_owner(file_id, owner_id) -> File | None:
    """The file if it exists and belongs to ``owner_id`` (what a task may use)."""
    return File.objects.filter(pk=file_id, owner_id=owner_id).first()
