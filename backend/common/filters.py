"""List filters shared by the API's lists."""

import unicodedata

import django_filters
from rest_framework import exceptions, filters

# Each word of a search is a condition on every searched field: a thousand of them made a
# query SQLite refuses to build ("Expression tree is too large"), answered 503 as if the
# database were down.
MAX_SEARCH_WORDS = 20


class SearchFilter(filters.SearchFilter):
    """DRF's search, whose refusal (a NUL) names the parameter as every other does; a word
    given twice is searched once, and a search has at most ``MAX_SEARCH_WORDS`` words."""

    search_description = (
        f"Words to find, each in one of the searched fields (at most {MAX_SEARCH_WORDS})."
    )

    def get_search_terms(self, request):
        try:
            terms = list(dict.fromkeys(super().get_search_terms(request)))
        except exceptions.ValidationError as exc:
            raise exceptions.ValidationError({self.search_param: exc.detail}) from None
        if len(terms) > MAX_SEARCH_WORDS:
            raise exceptions.ValidationError(
                {
                    self.search_param: [
                        f"A search has at most {MAX_SEARCH_WORDS} words; this one has {len(terms)}."
                    ]
                }
            )
        return terms


class ComposedSearchFilter(SearchFilter):
    """For fields stored in Unicode's composed form (NFC, as file names are): the words
    searched in that form too, so ``é`` typed as ``e`` and a combining accent (as some
    keyboards and macOS send it) finds the name."""

    def get_search_terms(self, request):
        terms = super().get_search_terms(request)
        return list(dict.fromkeys(unicodedata.normalize("NFC", term) for term in terms))


class QueryReadingMixin:
    """For a django-filter FilterSet: the query as a client may write it."""

    def __init__(self, data=None, *args, **kwargs):
        if data is not None and hasattr(data, "getlist"):
            data = self.read_query(data)
        super().__init__(data, *args, **kwargs)

    @classmethod
    def read_query(cls, data):
        """The filters' values as they are read: blanks dropped; a list filter's repeated
        values combined (status=failed&status=completed = status=failed,completed, and
        status=pending,,running = status=pending,running; ordering=-priority&ordering=name
        = ordering=-priority,name, which kept only the last); another filter's last value
        kept. A filter left with nothing (status=, or status=&status=) is not given."""
        data = data.copy()
        for name, field in cls.base_filters.items():
            if name not in data:
                continue
            if isinstance(field, django_filters.filters.BaseCSVFilter):
                items = [
                    item.strip()
                    for value in data.getlist(name)
                    for item in value.split(",")
                    if item.strip()
                ]
                values = [",".join(items)] if items else []
            else:
                values = [value for value in data.getlist(name) if value.strip()][-1:]
            if values:
                data.setlist(name, values)
            else:
                data.pop(name)
        return data


class ChoiceInFilter(django_filters.BaseInFilter, django_filters.ChoiceFilter):
    """One value or several, comma-separated; each must be a known choice, and a wrong one
    is answered with the list of the right ones."""

    @property
    def field(self):
        field = super().field
        names = ", ".join(str(value) for value, _ in field.choices if value != "")
        field.error_messages["invalid_choice"] = (
            f"%(value)s is not one of the available choices: {names}."
        )
        return field
