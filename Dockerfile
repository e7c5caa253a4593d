# The iotload image: one `iotload` binary; each component is started by its subcommand
# (`iotload loadgen`, `echo-ipaas`, `collector`, `plotter`) and configured only by
# IOTLOAD_* environment variables (compose/, deploy/).
#
#   docker build -t iotload .
#   docker run --rm iotload loadgen --help
#
# Build stage: the workspace with every broker family (MQTT, NATS, AMQP, Kafka, ZeroMQ).
FROM rust:1-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      cmake pkg-config libssl-dev libcurl4-openssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin iotload --features kafka \
 && strip target/release/iotload \
 && cp target/release/iotload /iotload

# Run stage: Debian slim with CA roots (TLS brokers) and libssl (librdkafka), non-root.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/iotload --create-home iotload
COPY --from=build /iotload /usr/local/bin/iotload
USER 10001:10001
WORKDIR /var/lib/iotload
# Prometheus metrics (--metrics-addr / plotter --serve) by convention.
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/iotload"]
CMD ["--help"]
