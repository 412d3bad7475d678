"""OPTIONS answers: DRF's, with a detail route's POST (a task's ``cancel``, ``start``…)
described only to whom the object's permissions let do it, as the browsable API's forms
(backend/common/renderers.py). DRF checks the object for PUT alone, and described every
action to anyone who could see the object, to be refused 403."""

from django.http import Http404
from rest_framework import exceptions
from rest_framework.metadata import SimpleMetadata
from rest_framework.request import override_method


class Metadata(SimpleMetadata):
    def determine_actions(self, request, view):
        actions = super().determine_actions(request, view)
        if "POST" in actions and getattr(view, "detail", False) and hasattr(view, "get_object"):
            with override_method(view, request, "POST"):
                try:
                    view.get_object()
                except (exceptions.APIException, Http404):
                    del actions["POST"]
        return actions
