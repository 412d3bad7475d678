from django.utils.cache import get_conditional_response
from django.utils.http import http_date
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from backend.common.filters import ComposedSearchFilter
from backend.common.idempotency import idempotent
from backend.common.negotiation import FirstRenderer
from backend.common.routing import UUID_PATTERN
from backend.common.views import requested_action
from backend.files import selectors, services
from backend.files.filters import FileFilter
from backend.files.models import File
from backend.files.responses import file_response, last_modified
from backend.files.uploads import HashingUploadHandler, UploadParser

from .serializers import FileSerializer, FileUploadSerializer


class FileViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Your files (staff: all). Another user's file is 404."""

    lookup_value_regex = UUID_PATTERN
    serializer_class = FileSerializer
    filter_backends = [DjangoFilterBackend, ComposedSearchFilter]
    filterset_class = FileFilter
    search_fields = ["name"]
    parser_classes = [UploadParser]
    permission_classes = [permissions.IsAuthenticated]
    http_method_names = ["get", "post", "delete", "head", "options"]
    upload_handler: HashingUploadHandler | None = None

    def initialize_request(self, request, *args, **kwargs):
        # Before anything reads the body: this handler hashes and counts the upload as it
        # streams to a temporary file, and stops it past MAX_UPLOAD_SIZE.
        if request.method == "POST":
            self.upload_handler = HashingUploadHandler(request)
            request.upload_handlers = [self.upload_handler]
        return super().initialize_request(request, *args, **kwargs)

    def finalize_response(self, request, response, *args, **kwargs):
        if self.upload_handler is not None:
            # Whatever happened, no temporary file outlives the request: stored files were
            # moved or copied into the storage, refused ones are deleted here.
            self.upload_handler.discard()
        return super().finalize_response(request, response, *args, **kwargs)

    def get_serializer_class(self):
        # The browsable API builds its upload form from this: a file box and a sha256 box.
        # OPTIONS describes the upload too (its action is "metadata").
        return FileUploadSerializer if requested_action(self) == "create" else FileSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return File.objects.none()
        return selectors.files_visible_to(self.request.user)

    @extend_schema(
        request={"multipart/form-data": FileUploadSerializer},
        responses={201: FileSerializer},
    )
    @idempotent
    def create(self, request, *args, **kwargs):
        """Upload a file (multipart ``file``, optional ``sha256``). SHA-256 and size are
        computed while it streams; over MAX_UPLOAD_SIZE → 413 ``file_too_large``; a
        ``sha256`` that does not match → 400 ``sha256_mismatch``. Refused: nothing kept."""
        data = request.data
        if self.upload_handler is not None and self.upload_handler.too_large:
            services.file_refuse_too_large()
        serializer = FileUploadSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        file = services.file_upload(
            owner=request.user,
            upload=serializer.validated_data["file"],
            expected_sha256=serializer.validated_data.get("sha256"),
        )
        body = FileSerializer(file, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        """Delete the file and its bytes; 409 ``file_in_use`` while an active task uses it."""
        services.file_delete(file=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[
            OpenApiParameter(name, str, OpenApiParameter.HEADER, description=description)
            for name, description in (
                ("If-None-Match", 'An ETag (`"<sha256>"`) or `*`: 304 when it matches.'),
                ("If-Modified-Since", "An HTTP date: 304 when the upload is not later."),
                ("If-Match", 'An ETag (`"<sha256>"`) or `*`: 412 when it does not match.'),
                ("If-Unmodified-Since", "An HTTP date: 412 when the upload is later."),
            )
        ],
        responses={
            (200, "*/*"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description="the bytes, with the file's content type; ETag = SHA-256",
            ),
            304: OpenApiResponse(
                description="If-None-Match matched the ETag, or (without it) "
                "If-Modified-Since is not before Last-Modified (the upload)"
            ),
            412: OpenApiResponse(
                description="If-Match named another ETag, or (without it) "
                "If-Unmodified-Since is before the upload (code `precondition_failed`)."
            ),
            410: OpenApiResponse(
                description="The file's bytes are missing from the storage (code "
                "`file_missing`): upload it again."
            ),
        },
    )
    @action(detail=True, methods=["get"], content_negotiation_class=FirstRenderer)
    def download(self, request, pk=None, format=None):
        """The bytes, streamed, as an attachment; ``ETag`` is the SHA-256 and
        ``Last-Modified`` the upload's time, so a GET with ``If-None-Match`` (or
        ``If-Modified-Since``) answers 304 when unchanged."""
        file = self.get_object()
        etag = f'"{file.sha256}"'
        # A file's bytes never change: its upload time is when they were last modified, so
        # If-Unmodified-Since and If-Modified-Since are answered too (without a date,
        # If-Unmodified-Since failed whatever it said).
        not_modified = get_conditional_response(
            request, etag=etag, last_modified=last_modified(file)
        )
        if not_modified is not None:
            services.file_require_bytes(file)  # 410 when they are gone, as a plain GET
            # With the 200's validators and caching rule, and its length (Django's
            # middleware wrote 0, which a 304 may not say: RFC 9110 §8.6, §15.4.5).
            not_modified["ETag"] = etag
            not_modified["Last-Modified"] = http_date(last_modified(file))
            not_modified["Cache-Control"] = "private, no-cache"
            not_modified["Content-Length"] = str(file.size)
            return not_modified
        return file_response(file)
