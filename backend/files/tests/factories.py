from backend.files import services
from backend.files.models import File


def make_file(owner, content: bytes = b"a,b\n1,2\n", name: str = "data.csv", **fields) -> File:
    """A file with real bytes in the storage, stored as the services store any file."""
    chunk = 64 * 1024
    file = services.file_store(
        owner_id=owner.pk,
        name=name,
        chunks=(content[i : i + chunk] for i in range(0, len(content), chunk)),
        content_type=fields.pop("content_type", None),
    )
    if fields:
        File.objects.filter(pk=file.pk).update(**fields)
        file.refresh_from_db()
    return file
