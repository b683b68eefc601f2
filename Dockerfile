# Production image: runtime requirements only (requirements-dev.txt stays out), static files
# collected at build, a non-root user. The same image runs web (CMD), worker and scheduler.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN useradd --system --uid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# Settings need no secret to collect static files; DEBUG=true only for this build step.
RUN DEBUG=true python manage.py collectstatic --noinput
USER app
EXPOSE 8000
CMD ["gunicorn", "botplatform.wsgi", "-c", "gunicorn.conf.py", "--bind", "0.0.0.0:8000", "--workers", "3"]
