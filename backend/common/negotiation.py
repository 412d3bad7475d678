"""Content negotiation for answers whose readers are machines that say little of what they
accept (scrapers, probes) or whose body is bytes (downloads)."""

from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation


class FirstRenderer(BaseContentNegotiation):
    """The view's first renderer whatever the client accepts: a download answers bytes, and
    /metrics JSON errors, whatever Accept says (Prometheus sends its own)."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class FirstRendererWhenNoneAccepted(DefaultContentNegotiation):
    """Negotiated as usual (a browser gets the page), but a client that accepts none of the
    renderers gets the first rather than a 406: a probe sending ``Accept: text/plain`` saw a
    healthy service as down."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            if format_suffix or request.query_params.get(self.settings.URL_FORMAT_OVERRIDE):
                raise  # a format asked for by name that does not exist stays a 404/406
            return renderers[0], renderers[0].media_type
