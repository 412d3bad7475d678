from django.urls import path

from . import views

urlpatterns = [
    path("register/", views.RegisterView.as_view(), name="register"),
    path("token/", views.TokenView.as_view(), name="token_obtain_pair"),
    path("token/refresh/", views.TokenRefresh.as_view(), name="token_refresh"),
    path("token/verify/", views.TokenVerify.as_view(), name="token_verify"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
]
