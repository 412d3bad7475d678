# Detail routes take only a UUID, so ``/api/tasks/create/`` or a mistyped id is a plain 404.
UUID_PATTERN = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
