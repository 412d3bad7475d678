from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.db.models import Case, IntegerField, Q, Value, When


class UsernameOrEmailBackend(ModelBackend):
    """Log in with the username (exact) or the email address (any case)."""

    def authenticate(self, request, username=None, password=None, email=None, **kwargs):
        login = username or email
        if not login or password is None:
            return None
        User = get_user_model()
        # An exact username match wins over another user's email that happens to equal it.
        exact_username_first = Case(
            When(username=login, then=Value(0)), default=Value(1), output_field=IntegerField()
        )
        user = (
            User.objects.filter(Q(username=login) | Q(email__iexact=login))
            .order_by(exact_username_first)
            .first()
        )
        if user is None:
            # Spend the time of a real check, so timing does not reveal who exists.
            User().set_password(password)
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None
