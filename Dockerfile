FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protocol protocol
COPY eventlog eventlog
COPY matching_engine matching_engine
COPY gateway gateway
COPY ledger ledger
COPY settlement settlement
COPY sdk sdk
COPY harness harness
COPY gpux gpux
COPY web/dist web/dist
ENV GPUX_WEB_DIR=/app/web/dist
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT []
