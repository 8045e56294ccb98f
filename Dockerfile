# ReviewDesk image for web, worker and beat (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY requirements.txt ./
RUN pip install -r requirements.txt

# Only what the application needs at run time (no .venv, var/, tests or .git in the image).
COPY manage.py ./
COPY reviewdesk/ reviewdesk/
COPY workflows/ workflows/
COPY templates/ templates/
COPY static/ static/

# collectstatic imports the production settings, which refuse to start without a secret key
# (32+ characters) and allowed hosts. These values exist only for this build step; the running
# containers get theirs from docker-compose.yml. The URLs are never connected to here; setting
# them keeps the settings from creating the SQLite/filesystem-broker directories under var/.
RUN DJANGO_SECRET_KEY=build-time-only-collectstatic-key-never-used-at-runtime-7f3c9a1e5b \
    DJANGO_DEBUG=false \
    DJANGO_ALLOWED_HOSTS=localhost \
    DATABASE_URL=postgres://build:build@build-only.invalid:5432/build \
    REDIS_URL=redis://build-only.invalid:6379/0 \
    python manage.py collectstatic --noinput

RUN useradd --create-home --uid 10001 reviewdesk && chown -R reviewdesk:reviewdesk /app
# Audit export jobs write here (a volume shared by web and worker in docker-compose.yml); a new
# named volume takes this directory's owner.
RUN mkdir -p /srv/exports && chown reviewdesk:reviewdesk /srv/exports
USER reviewdesk

EXPOSE 8000

CMD ["gunicorn", "reviewdesk.asgi:application", "--worker-class", "uvicorn.workers.UvicornWorker", "--bind", "0.0.0.0:8000", "--access-logfile", "-"]
