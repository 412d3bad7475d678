import unicodedata

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils.html import format_html

from backend.common.admin import BoundedSearchMixin, ServiceDeleteMixin

from . import services
from .models import File
from .responses import file_response


@admin.register(File)
class FileAdmin(BoundedSearchMixin, ServiceDeleteMixin, admin.ModelAdmin):
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
    actions = ["delete_selected"]

    def get_search_results(self, request, queryset, search_term):
        # Names are kept composed (NFC), as the API's search reads them.
        search_term = unicodedata.normalize("NFC", search_term)
        return super().get_search_results(request, queryset, search_term)

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
        file = get_object_or_404(File, pk=file_id)
        try:
            return file_response(file)
        except services.FileMissing as exc:  # its bytes are gone (the API answers 410)
            # The reason first: the admin capitalizes a message's first letter, a name's too.
            self.message_user(request, f"{exc.detail} ({file})", level=messages.ERROR)
            return redirect("admin:files_file_change", file.pk)

    def has_add_permission(self, request):
        # Files arrive through the API, which hashes and limits them.
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def delete_with_service(self, request, obj):
        services.file_delete(file=obj, actor=request.user)

    @admin.action(description="Delete selected files (and their bytes)", permissions=["delete"])
    def delete_selected(self, request, queryset):
        # Asks first and logs each deletion, as Django's own action does; each file goes
        # through the service (in use: refused; its bytes removed).
        return self.delete_selected_with_service(request, queryset, "file(s)")
