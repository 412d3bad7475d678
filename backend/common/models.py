from django.conf import settings
from django.db import models


class IdempotencyKey(models.Model):
    """The first successful response to a POST sent with an ``Idempotency-Key`` header.

    The unique constraint is what makes a key single-use: two requests racing with one key
    cannot both insert it, so exactly one of them creates something.
    """

    # NULL for an anonymous create (registering): its body, password included, must match
    # for a replay, so only the client that sent it gets its answer back.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True)
    key = models.CharField(max_length=255)
    # HMAC-SHA256 (keyed by SECRET_KEY) of method, view and body: the same key with another
    # request is refused.
    fingerprint = models.CharField(max_length=64)
    # 0 while the first request is still running (never seen outside its transaction).
    status_code = models.PositiveSmallIntegerField(default=0)
    # The body as JSON text, so a replay gives the keys in their first order (a jsonb
    # column hands them back in its own).
    response_body = models.TextField(null=True)  # noqa: DJ001 - NULL: no answer yet, as before
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_per_user"),
            models.UniqueConstraint(
                fields=["key"],
                condition=models.Q(user__isnull=True),
                name="idempotency_key_anonymous",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.status_code})"
