# The iotload image: one `iotload` binary; each component is started by its subcommand
# (`iotload loadgen`, `echo-ipaas`, `collector`, `plotter`) and configured only by
# IOTLOAD_* environment variables (compose/, deploy/).
#
#   docker build -t iotload .                   compile in a Rust image, run on Debian slim
#   docker run --rm iotload loadgen --help
#
# Base images are build arguments, so the same file builds where a registry is at hand
# (the defaults) and where none is: scripts/docker-images builds the `prebuilt` target on
# a local Debian base with the release binary this checkout built (no compiler in Docker):
#
#   docker build --target prebuilt --build-arg RUNTIME_IMAGE=LOCAL_BASE -t iotload .
ARG BUILD_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# Run stage base: CA roots (TLS brokers) and libssl (librdkafka), a non-root user. The
# packages are installed only when the base lacks them (a local base may have no network).
FROM ${RUNTIME_IMAGE} AS runtime-base
RUN if ! dpkg-query -W ca-certificates libssl3 >/dev/null 2>&1; then \
      apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
           ca-certificates libssl3 \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && useradd --system --uid 10001 --home-dir /var/lib/iotload --create-home iotload
WORKDIR /var/lib/iotload
# Prometheus metrics (--metrics-addr / plotter --serve) by convention.
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/iotload"]
CMD ["--help"]

# The release binary built outside Docker (target/release/iotload, all features). It comes
# before the compile stage, so the classic builder stops here without needing BUILD_IMAGE.
FROM runtime-base AS prebuilt
COPY target/release/iotload /usr/local/bin/iotload
USER 10001:10001

# Build stage: the workspace with every broker family (MQTT, NATS, AMQP, Kafka, ZeroMQ).
FROM ${BUILD_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      cmake pkg-config libssl-dev libcurl4-openssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin iotload --features kafka \
 && strip target/release/iotload \
 && cp target/release/iotload /iotload

# The default target: the compiled binary on the run stage base.
FROM runtime-base AS runtime
COPY --from=build /iotload /usr/local/bin/iotload
USER 10001:10001
