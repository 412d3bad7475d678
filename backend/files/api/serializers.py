import re

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.reverse import reverse
from rest_framework.utils import html

from backend.common.serializers import RejectUnknownFieldsMixin
from backend.files.models import File


class FileSerializer(serializers.ModelSerializer):
    """A file's metadata, as every file endpoint answers."""

    owner_username = serializers.CharField(source="owner.username", read_only=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = File
        fields = (
            "id",
            "name",
            "size",
            "sha256",
            "content_type",
            "owner",
            "owner_username",
            "created_at",
            "download_url",
        )
        read_only_fields = fields

    def get_download_url(self, file: File) -> str:
        return reverse("file-download", args=[file.pk], request=self.context.get("request"))


class _Several:
    def __init__(self, count: int):
        self.count = count


class _FileBox(serializers.FileField):
    default_error_messages = {
        "several": "Send one file per upload; this request has {count} file parts.",
        "text": 'The file part has no file name (filename="" or none), so it was read as '
        "text, not as a file: give it a name (any: it is kept for display only).",
    }

    def get_value(self, dictionary):
        # Two parts named "file": the last was stored and the others dropped without a word.
        if html.is_html_input(dictionary) and len(dictionary.getlist(self.field_name)) > 1:
            return _Several(len(dictionary.getlist(self.field_name)))
        value = super().get_value(dictionary)
        # A browser sends an empty file box as a part without a file name, which Django
        # reads as an empty text field: no file given ("No file was submitted."), not "The
        # submitted data was not a file".
        return empty if isinstance(value, str) and value == "" else value

    def to_internal_value(self, data):
        if isinstance(data, _Several):
            self.fail("several", count=data.count)
        if isinstance(data, str):
            # A part with an empty file name (what a client library sends for a file given
            # none) is a text field to Django: "The submitted data was not a file. Check the
            # encoding type on the form." told the client nothing it could mend.
            self.fail("text")
        return super().to_internal_value(data)


SHA256 = re.compile(r"[0-9a-fA-F]{64}")


# An empty example, which the documented pattern admits (an empty form box is no SHA-256
# given): Swagger UI's "Try it out" filled the optional box with a random string matching
# the pattern, which the upload then refused as the wrong SHA-256.
@extend_schema_field({"type": "string", "pattern": r"^([0-9a-fA-F]{64})?$", "example": ""})
class _Sha256Field(serializers.Field):
    default_error_messages = {
        "invalid": "Give the SHA-256 as 64 hexadecimal digits.",
        "several": "Give one SHA-256; this request has {count} sha256 parts.",
    }

    def get_value(self, dictionary):
        # Two parts named "sha256": the last was checked and the others dropped, so a wrong
        # digest beside a right one passed.
        if html.is_html_input(dictionary) and len(dictionary.getlist(self.field_name)) > 1:
            return _Several(len(dictionary.getlist(self.field_name)))
        return super().get_value(dictionary)

    def to_internal_value(self, data):
        if isinstance(data, _Several):
            self.fail("several", count=data.count)
        if not isinstance(data, str) or not SHA256.fullmatch(data):
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


class FileUploadSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """Another field beside ``file`` and ``sha256`` is refused, naming it: a misspelt
    ``sha265`` skipped the check it was meant for."""

    file = _FileBox(
        allow_empty_file=True,
        use_url=False,
        help_text="the file (multipart); at most MAX_UPLOAD_SIZE bytes",
    )
    sha256 = _Sha256Field(
        required=False,
        help_text="optional SHA-256 of the file (64 hex digits): a mismatch is refused; "
        "an empty form box is not given",
    )
