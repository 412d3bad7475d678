import unicodedata

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend


class UsernameOrEmailBackend(ModelBackend):
    """Log in with the username (exact, or in the compatibility form it is stored in) or the
    email address (any case).

    ``email=`` matches email addresses only. ``username=`` may be either: the password is
    checked against the user with that username and against the user with that email, so
    nobody can shadow someone's email login by taking their address as a username.
    """

    def authenticate(self, request, username=None, password=None, email=None, **kwargs):
        if password is None or not (username or email):
            return None
        User = get_user_model()
        candidates = []
        if username:
            # As written, or as registering stored it: a username is kept in Unicode's
            # compatibility form (NFKC, Django's), so "K\u212a" (a Kelvin sign) is "KK",
            # and the name as typed at sign-up was refused at sign-in.
            written = {username, unicodedata.normalize("NFKC", username)}
            candidates += User.objects.filter(username__in=written)
        candidates += User.objects.filter(email__iexact=username or email)
        if not candidates:
            # Spend the time of a real check, so timing does not reveal who exists.
            User().set_password(password)
            return None
        for user in candidates:
            if user.check_password(password) and self.user_can_authenticate(user):
                return user
        return None
