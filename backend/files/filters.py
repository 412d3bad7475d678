import django_filters

from backend.common.filters import QueryReadingMixin

from .models import File


class FileFilter(QueryReadingMixin, django_filters.FilterSet):
    ordering = django_filters.OrderingFilter(
        fields=(("created_at", "created_at"), ("size", "size"), ("name", "name")),
        help_text="created_at, size or name; prefix - for descending",
    )

    class Meta:
        model = File
        fields = []

    def filter_queryset(self, queryset):
        # Ties (same size or name) are broken by newest first, then id: pages never overlap.
        queryset = super().filter_queryset(queryset)
        return queryset.order_by(*queryset.query.order_by, "-created_at", "id")
