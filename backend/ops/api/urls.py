from django.urls import path, re_path

from . import views

urlpatterns = [
    path("admin/stats/", views.StatsView.as_view(), name="admin-stats"),
    # The format suffix every other route takes, in the router's form (left out of the schema).
    re_path(
        r"^admin/stats\.(?P<format>[a-z0-9]+)/?$", views.StatsView.as_view(), name="admin-stats"
    ),
]
