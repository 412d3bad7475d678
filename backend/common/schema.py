"""OpenAPI additions shared by every endpoint: the error responses each operation can give,
all with the one error shape (``{"detail", "code"}``, plus field lists for 400s). An error
response a view declares itself with only a description (``410: OpenApiResponse(
description=...)``) gets that shape too."""

from __future__ import annotations

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error answers with this shape. Validation errors (400) also carry "
    "a list of messages per invalid field, keyed by the field's name.",
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, for a person."},
        "code": {"type": "string", "description": "A stable, machine-readable code."},
        "request_id": {"type": "string", "description": "500 and 503: quote it when reporting."},
    },
    "required": ["detail", "code"],
    "additionalProperties": True,
}

DESCRIPTIONS = {
    "400": "Invalid input: field errors, bad query parameters or a rule of the operation.",
    "401": "Not authenticated, or the token is invalid or expired.",
    "403": "Authenticated, but not allowed to do this.",
    "404": "No such object visible to you (another user's objects are 404 too).",
    "405": "Method not allowed on this path.",
    "406": "None of the media types in Accept can be served.",
    "409": "The object is not in a state that allows this (or a limit is reached).",
    "411": "The body was sent in chunks (Transfer-Encoding: chunked), which is not read: "
    "send it with a Content-Length (code `length_required`).",
    "413": "The request body is larger than the server accepts.",
    "415": "The request body's media type is not supported.",
    "422": "The Idempotency-Key was already used with a different request.",
    "429": "Too many requests; retry later.",
    "500": "Unexpected server error; the body carries a request id.",
    "503": "The database is unavailable (code `database_unavailable`); try again after the "
    "seconds in Retry-After. The body carries a request id.",
    "507": "The service's storage is full (code `insufficient_storage`); nothing was kept.",
}
# Operations that write bytes to the storage (an upload), which a full disk refuses.
STORING = {("/api/files/", "post")}

# Headers of an error response, by status.
HEADERS = {
    "503": {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "schema": {"type": "integer"},
        }
    },
}

# A body is checked whatever the method (a GET sent with one too): 411, 413 and 415.
READ = ("400", "401", "403", "404", "405", "406", "411", "413", "415", "429", "500", "503")
WRITE = (*READ, "409")


# Operations grouped by resource in Swagger UI and ReDoc (first path segment after /api/).
TAGS = {
    "register": "auth",
    "token": "auth",
    "logout": "auth",
    "users": "users",
    "tasks": "tasks",
    "task-types": "task types",
    "files": "files",
    "schedules": "schedules",
    "notifications": "notifications",
    "admin": "admin",
}


def _tag(path: str) -> str | None:
    if path.startswith("/health"):
        return "health"
    parts = path.strip("/").split("/")
    return TAGS.get(parts[1]) if len(parts) > 1 and parts[0] == "api" else None


def _summary(operation: dict) -> str | None:
    """The first sentence of the operation's description, as a title (plain text: the
    docstrings' ``literal`` marks are dropped)."""
    text = (operation.get("description") or "").strip()
    if not text:
        return None
    first = text.split("\n\n", 1)[0].replace("\n", " ")
    sentence = first.split(". ", 1)[0].rstrip(".").replace("``", "")
    return sentence[:120] or None


def _nullable_alternatives(field: dict) -> None:
    """``nullable`` with ``oneOf`` alternatives of one type (an email, or blank): OpenAPI
    3.0 lets null through only where ``type`` is beside ``nullable``, so a strict reader
    refused the null the service answers. The type moves up beside it, the alternatives
    keep their constraints (``anyOf``: "" is no email, but a blank one)."""
    branches = field.get("oneOf")
    if not field.get("nullable") or "type" in field or not branches:
        return
    types = {branch.get("type") for branch in branches}
    if len(types) != 1 or None in types or any("$ref" in branch for branch in branches):
        return
    field["type"] = types.pop()
    field["anyOf"] = [{k: v for k, v in branch.items() if k != "type"} for branch in branches]
    del field["oneOf"]


def document_errors(result, generator, request, public):
    """Postprocessing hook: every operation documents its error responses, is tagged by its
    resource and titled by the first sentence of its description; fields read as the
    service answers (``_nullable_alternatives``; no defaults in a PATCH's body)."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Error", ERROR_SCHEMA)
    for name, component in schemas.items():
        if isinstance(component.get("description"), str):
            component["description"] = component["description"].replace("``", "`")
        for field in component.get("properties", {}).values():
            _nullable_alternatives(field)
            if name.startswith("Patched"):
                # A PATCH keeps what it leaves out: a default there would say the opposite
                # (a client filling defaults in would re-enable a paused schedule).
                field.pop("default", None)
    reference = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            for parameter in operation.get("parameters", []):
                # Every list parameter sent empty means "not given" (as HTML filter forms
                # send them): filters, search, ordering, page and page_size alike.
                if parameter["in"] == "query":
                    parameter["allowEmptyValue"] = True
            tag = _tag(path)
            if tag:
                operation["tags"] = [tag]
            if "summary" not in operation and _summary(operation):
                operation["summary"] = _summary(operation)
            if operation.get("description"):
                # Docstrings mark code as ``this``; the description is Markdown: `this`.
                operation["description"] = operation["description"].replace("``", "`")
            statuses = list(READ if method == "get" else WRITE)
            headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
            if "Idempotency-Key" in headers:
                statuses.append("422")
            if (path, method) in STORING:
                statuses.append("507")
            responses = operation.setdefault("responses", {})
            for status in statuses:
                response = {"description": DESCRIPTIONS[status]}
                if status in HEADERS:
                    response["headers"] = HEADERS[status]
                responses.setdefault(status, response)
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400 and "content" not in response:
                    response["content"] = {"application/json": {"schema": reference}}
    return result
