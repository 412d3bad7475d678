from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination as DRFPageNumberPagination


class PageNumberPagination(DRFPageNumberPagination):
    """``page`` and ``page_size`` (default 10; values above 100 are reduced to 100).

    A ``page_size`` that is not a positive integer is a 400, not silently the default; so is
    a ``page`` that is not a page number (``abc``, ``0``, ``1.5``: it was a 404 "Invalid
    page.", as if the list had no such page). A page past the last is the 404. Either one
    left blank (``page_size=``) is not given, as a blank filter is (``QueryReadingMixin``).
    """

    page_size_query_param = "page_size"
    max_page_size = 100

    def get_page_size(self, request):
        raw = (request.query_params.get(self.page_size_query_param) or "").strip()
        if not raw:
            return self.page_size
        # ASCII digits only, as a page: int() also took "+5", "1_0" and full-width digits.
        size = int(raw) if raw.isascii() and raw.isdigit() else 0
        if size < 1:
            raise ValidationError({"page_size": ["A positive integer is required."]})
        return min(size, self.max_page_size)

    def get_page_number(self, request, paginator):
        raw = (request.query_params.get(self.page_query_param) or "").strip() or "1"
        if raw in self.last_page_strings:
            return paginator.num_pages
        if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
            raise ValidationError({"page": ["A page number (1 or more) is required, or 'last'."]})
        return int(raw)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"]["minimum"] = 1
                parameter["description"] = (
                    "Results per page (default 10); a value above 100 gives pages of 100."
                )
            elif parameter["name"] == self.page_query_param:
                parameter["schema"] = {
                    "oneOf": [
                        {"type": "integer", "minimum": 1},
                        {"type": "string", "enum": list(self.last_page_strings)},
                    ]
                }
                parameter["description"] = "A page number (1 or more), or `last`."
        return parameters
