"""List filters shared by the API's lists."""

from rest_framework import exceptions, filters


class SearchFilter(filters.SearchFilter):
    """DRF's search, whose refusal (a NUL) names the parameter as every other does."""

    def get_search_terms(self, request):
        try:
            return super().get_search_terms(request)
        except exceptions.ValidationError as exc:
            raise exceptions.ValidationError({self.search_param: exc.detail}) from None
