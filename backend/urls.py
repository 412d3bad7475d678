from django.contrib import admin
from django.contrib.auth.views import LoginView, LogoutView
from django.urls import include, path, re_path
from django.views.generic import RedirectView, TemplateView
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from backend.common.health import health
from backend.common.views import ApiRootView, RedocView, SwaggerView
from backend.files.api.views import FileViewSet
from backend.notifications.api.views import NotificationViewSet
from backend.ops.dashboard import dashboard
from backend.ops.metrics import MetricsView
from backend.schedules.api.views import ScheduleViewSet
from backend.tasks.api.views import TaskTypeViewSet, TaskViewSet
from backend.users.api.throttling import throttled_login
from backend.users.api.views import UserViewSet

admin.site.site_header = admin.site.site_title = "Async Task Manager"
admin.site.index_title = "Administration"
admin.site.site_url = "/"

router = DefaultRouter()
router.APIRootView = ApiRootView
router.register("users", UserViewSet, basename="user")
router.register("tasks", TaskViewSet, basename="task")
router.register("task-types", TaskTypeViewSet, basename="task-type")
router.register("schedules", ScheduleViewSet, basename="schedule")
router.register("files", FileViewSet, basename="file")
router.register("notifications", NotificationViewSet, basename="notification")

urlpatterns = [
    path("", TemplateView.as_view(template_name="common/home.html"), name="home"),
    path("health/", health, name="health"),
    re_path(r"^metrics/?$", MetricsView.as_view(), name="metrics"),
    path("admin/dashboard/", admin.site.admin_view(dashboard), name="ops-dashboard"),
    # The two session sign-in forms, throttled as the auth endpoints are (the names stay
    # those of the admin's and DRF's own, reversed to these same paths).
    path("admin/login/", throttled_login(admin.site.login)),
    path("admin/", admin.site.urls),
    path("api/", include("backend.users.api.urls")),
    path("api/", include("backend.ops.api.urls")),
    path("api/", include(router.urls)),
    path(
        "api-auth/login/",
        throttled_login(LoginView.as_view(template_name="rest_framework/login.html")),
    ),
    # Signed out without a next page (an address typed by hand), to the API root, not to
    # the admin's "Logged out" page, whose "Log in again" leads where only staff get in.
    path("api-auth/logout/", LogoutView.as_view(next_page="/api/")),
    path("api-auth/", include("rest_framework.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path(
        "api/redoc/",
        RedocView.as_view(url_name="schema", template_name="common/redoc.html"),
        name="redoc",
    ),
    path("docs", RedirectView.as_view(pattern_name="swagger-ui", permanent=False)),
    path("docs/", RedirectView.as_view(pattern_name="swagger-ui", permanent=False)),
]

handler400 = "backend.common.views.bad_request"
handler404 = "backend.common.views.not_found"
handler500 = "backend.common.views.server_error"
