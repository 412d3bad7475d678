from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils.html import format_html

from backend.common.admin import ServiceDeleteMixin
from backend.common.errors import DomainError

from . import services
from .models import File
from .responses import file_response


@admin.register(File)
class FileAdmin(ServiceDeleteMixin, admin.ModelAdmin):
    list_display = (
        "name",
        "owner",
        "human_size",
        "short_sha256",
        "content_type",
        "created_at",
        "download_link",
    )
    list_filter = (("owner", admin.RelatedOnlyFieldListFilter), "content_type", "created_at")
    search_fields = ("name", "sha256", "=id", "owner__username")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    fields = (
        "id",
        "name",
        "owner",
        "human_size",
        "size",
        "sha256",
        "content_type",
        "created_at",
        "download_link",
    )
    readonly_fields = fields
    actions = ["delete_files"]

    @admin.display(description="size", ordering="size")
    def human_size(self, obj: File) -> str:
        return filesizeformat(obj.size)

    @admin.display(description="SHA-256")
    def short_sha256(self, obj: File) -> str:
        return f"{obj.sha256[:12]}…"

    @admin.display(description="download")
    def download_link(self, obj: File) -> str:
        url = reverse("admin:files_file_download", args=[obj.pk])
        return format_html('<a href="{}">download</a>', url)

    def get_urls(self):
        download = self.admin_site.admin_view(self.download_view)
        return [
            path("<uuid:file_id>/download/", download, name="files_file_download"),
            *super().get_urls(),
        ]

    def download_view(self, request, file_id):
        if not self.has_view_permission(request):
            raise PermissionDenied
        return file_response(get_object_or_404(File, pk=file_id))

    def has_add_permission(self, request):
        # Files arrive through the API, which hashes and limits them.
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        # Deleting goes through the service (in-use check, bytes removed), not a bulk delete.
        actions.pop("delete_selected", None)
        return actions

    def delete_with_service(self, request, obj):
        services.file_delete(file=obj, actor=request.user)

    @admin.action(description="Delete selected files (and their bytes)", permissions=["delete"])
    def delete_files(self, request, queryset):
        deleted, refused = 0, []
        for file in queryset:
            try:
                services.file_delete(file=file, actor=request.user)
            except DomainError as exc:
                refused.append(f"{file}: {exc.detail}")
            else:
                deleted += 1
        self.message_user(request, f"{deleted} file(s) deleted.")
        for reason in refused:
            self.message_user(request, reason, level=messages.WARNING)
