# The venue's services, installed from uv.lock (runtime dependencies only), as `make test` tested.
FROM python:3.11.7-slim-bookworm
WORKDIR /app
COPY requirements/uv.txt requirements/uv.txt
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements/uv.txt
COPY pyproject.toml uv.lock README.md ./
COPY protocol protocol
COPY eventlog eventlog
COPY matching_engine matching_engine
COPY gateway gateway
COPY ledger ledger
COPY settlement settlement
COPY sdk sdk
COPY wsapi wsapi
COPY runtime runtime
COPY harness harness
COPY gpux gpux
COPY web/dist web/dist
ENV GPUX_WEB_DIR=/app/web/dist UV_PROJECT_ENVIRONMENT=/app/.venv PATH=/app/.venv/bin:$PATH
RUN uv sync --locked --no-editable --no-cache
USER nobody
ENTRYPOINT []
