from django.urls import re_path

# Detail routes take only a UUID, so ``/api/tasks/create/`` or a mistyped id is a plain 404.
UUID_PATTERN = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"


def with_format_suffixes(urlpatterns: list) -> list:
    """``urlpatterns`` and each one's ``.json`` (``.api``) spelling, in the router's form
    (``^name\\.(?P<format>…)/?$``), which the OpenAPI schema leaves out as it leaves the
    router's out; the views take ``format``."""
    return [
        *urlpatterns,
        *(
            re_path(
                rf"^{str(pattern.pattern).lstrip('^').rstrip('/')}\.(?P<format>[a-z0-9]+)/?$",
                pattern.callback,
                name=pattern.name,
            )
            for pattern in urlpatterns
        ),
    ]
