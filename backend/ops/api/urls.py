from django.urls import path

from . import views

urlpatterns = [
    path("admin/stats/", views.StatsView.as_view(), name="admin-stats"),
]
