from django.urls import path, re_path

from . import views

urlpatterns = [
    path("register/", views.RegisterView.as_view(), name="register"),
    path("token/", views.TokenView.as_view(), name="token_obtain_pair"),
    path("token/refresh/", views.TokenRefresh.as_view(), name="token_refresh"),
    path("token/verify/", views.TokenVerify.as_view(), name="token_verify"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
]
# The format suffix every other route takes (/api/register.json, /api/token.json, ...), in
# the router's form, which the OpenAPI schema leaves out as it leaves the router's out.
urlpatterns += [
    re_path(
        rf"^{str(pattern.pattern).rstrip('/')}\.(?P<format>[a-z0-9]+)/?$",
        pattern.callback,
        name=pattern.name,
    )
    for pattern in list(urlpatterns)
]
