import uuid

from django.conf import settings
from django.db import models

from .names import DEFAULT_CONTENT_TYPE, MAX_CONTENT_TYPE_LENGTH


class File(models.Model):
    """An uploaded (or generated) file. The bytes live in Django's default storage under
    ``storage_name``, a path the service generates; ``name`` is only shown and offered as
    the download name, never used as a path."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="files"
    )
    name = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField("SHA-256", max_length=64)
    content_type = models.CharField(
        max_length=MAX_CONTENT_TYPE_LENGTH, default=DEFAULT_CONTENT_TYPE
    )
    storage_name = models.CharField(max_length=255, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="file_owner_created"),
            models.Index(fields=["created_at"], name="file_created"),
            models.Index(fields=["sha256"], name="file_sha256"),
        ]

    def __str__(self) -> str:
        return self.name
