# Async Task Manager: one image for web (gunicorn), worker and beat (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VAR_DIR=/app/var \
    PORT=8000

WORKDIR /app

# A writable home: gunicorn puts its control socket (for gunicornc) in ~/.gunicorn/.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app

# Dependencies first, so a code change does not reinstall them.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# The code stays owned by root (read-only for the app); VAR_DIR is the one place it writes.
# var/media exists owned by the app, so the shared media volume mounted there is writable.
COPY . .
RUN mkdir -p "$VAR_DIR/media" && chown -R app:app "$VAR_DIR"

# Numeric, so platforms can verify the user is not root without reading /etc/passwd.
USER 10001:10001
ENV HOME=/home/app

# Settings refuse to load without a secret key and hosts when DEBUG is off: these values exist
# only for this step. A non-filesystem broker URL keeps broker folders out of the image.
RUN DJANGO_SECRET_KEY=build-only-collectstatic DEBUG=false ALLOWED_HOSTS=localhost \
    CELERY_BROKER_URL=redis://localhost:6379/0 \
    python manage.py collectstatic --noinput

EXPOSE 8000

# slim has no curl; urlopen raises (non-zero exit) on a 503 or no answer.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/' % os.environ.get('PORT', '8000'), timeout=8)"]

# Shell form for ${PORT}; exec so gunicorn is PID 1 and gets the stop signal. gunicorn reads
# WEB_CONCURRENCY itself (its number of workers) and fails on it set empty: given a value here.
# /dev/shm for worker heartbeat files: a container's /tmp may be on a slow overlay filesystem.
CMD ["sh", "-c", "WEB_CONCURRENCY=${WEB_CONCURRENCY:-3} exec gunicorn backend.wsgi:application --bind 0.0.0.0:${PORT:-8000} --worker-tmp-dir /dev/shm --access-logfile - --error-logfile -"]
