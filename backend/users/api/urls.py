from django.urls import path

from backend.common.routing import with_format_suffixes

from . import views

# Each also with the format suffix every other route takes (/api/register.json, ...).
urlpatterns = with_format_suffixes(
    [
        path("register/", views.RegisterView.as_view(), name="register"),
        path("token/", views.TokenView.as_view(), name="token_obtain_pair"),
        path("token/refresh/", views.TokenRefresh.as_view(), name="token_refresh"),
        path("token/verify/", views.TokenVerify.as_view(), name="token_verify"),
        path("logout/", views.LogoutView.as_view(), name="logout"),
    ]
)
