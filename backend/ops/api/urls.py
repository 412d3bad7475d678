from django.urls import path

from backend.common.routing import with_format_suffixes

from . import views

# Also with the format suffix every other route takes (/api/admin/stats.json).
urlpatterns = with_format_suffixes(
    [path("admin/stats/", views.StatsView.as_view(), name="admin-stats")]
)
