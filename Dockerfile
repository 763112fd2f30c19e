# syntax=docker/dockerfile:1
# One image for every Argus process; compose.yaml picks the process with `command:`
# (argus web | argus worker | argus beat | argus migrate --noinput).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ARGUS_DATA_DIR=/data \
    ARGUS_STATIC_ROOT=/app/staticfiles

RUN useradd --system --user-group --uid 10001 --create-home --home-dir /home/argus \
        --shell /usr/sbin/nologin argus \
 && install -d -o argus -g argus -m 0750 /data

WORKDIR /app

# Dependencies first, read from pyproject.toml alone, so a code change reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The project itself, installed in place: settings find templates/ and static/ next to
# the packages (BASE_DIR), so the code stays in /app rather than in site-packages.
COPY . .
RUN pip install --no-cache-dir --no-deps -e . \
 && python -m compileall -q argus orgs tools agents recordings tasks

# Static files are baked into the image (served by WhiteNoise). The settings below are
# build-only dummies that exist just for this RUN line; nothing is connected to.
RUN SECRET_KEY=build-only-not-a-secret-build-only-not-a-secret-0123 \
    ARGUS_ENCRYPTION_KEY=YnVpbGQtb25seS1ub3QtYS1zZWNyZXQtMzItYnl0ZXM \
    DATABASE_URL=sqlite:////tmp/argus-build/build.sqlite3 \
    REDIS_URL=redis://localhost:6379/0 \
    ALLOWED_HOSTS=localhost \
    ARGUS_DATA_DIR=/tmp/argus-build \
    argus collectstatic --noinput \
 && rm -rf /tmp/argus-build

USER argus
VOLUME ["/data"]
EXPOSE 8000

CMD ["argus", "web", "--host", "0.0.0.0", "--port", "8000"]
