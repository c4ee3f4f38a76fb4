# One image for the web, worker, scheduler and migrate services of docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Requirements first, so that a change to the code does not reinstall them.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# uid and gid 10001: docker-compose.yml gives this user the tmpfs of its metrics folder.
RUN groupadd --system --gid 10001 wallet \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app wallet \
    && mkdir -p exports && chown wallet exports
USER wallet

# 8088: the API (and its /metrics); 9191: METRICS_PORT of the worker and the scheduler.
EXPOSE 8088 9191
CMD ["sh", "-c", "exec gunicorn --workers ${WEB_WORKERS:-2} --threads ${WEB_THREADS:-8} --bind 0.0.0.0:${PORT:-8088} 'api:create_app()'"]
