# Prometheus for the compose stack's `monitoring` profile: Debian bookworm's own package, on the
# bookworm base the gateway image already uses (so nothing else is pulled). Built by compose.yml
# (context ./config); the config is mounted from config/prometheus.yml.
#   docker compose --profile monitoring up -d --build
ARG BASE_IMAGE=docker.io/library/node:24-bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown prometheus:prometheus /prometheus
USER prometheus
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--storage.tsdb.retention.time=2d", "--web.listen-address=:9090"]
