# Stand-in for prom/prometheus:v3.5.0: Debian bookworm's prometheus package (2.42) with the
# official image's layout: /bin/prometheus as entrypoint, the default config and storage
# flags, user nobody, /prometheus as the data volume, and a wget for the Compose healthcheck
# (BusyBox's in the official image). Not reproduced: Prometheus 3 itself (its UI, its newer
# configuration keys; the project's configuration and rules use none of them: promtool of the
# same Debian package checks them in tests/ops).
FROM readmission-standin/prometheus-rootfs:bookworm
RUN mkdir -p /prometheus /etc/prometheus \
    && chown 65534:65534 /prometheus
USER 65534:65534
WORKDIR /prometheus
VOLUME /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
