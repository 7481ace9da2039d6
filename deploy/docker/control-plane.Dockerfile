# syntax=docker/dockerfile:1
# hearth-control-plane. Build from the repository root:
#   docker build -f deploy/docker/control-plane.Dockerfile -t hearth/control-plane .
# Targets: `runtime` (default; distroless, non-root, just the binary) and `tools` (the same
# binary on debian-slim with a shell and mosquitto's user id, for one-shot setup jobs:
# `pki init`, `broker-config`).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p hearth-control-plane \
 && install -D -m 0755 target/release/hearth-control-plane /out/hearth-control-plane

FROM debian:bookworm-slim AS tools
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates openssl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/hearth-control-plane /usr/local/bin/hearth-control-plane
ENTRYPOINT ["/usr/local/bin/hearth-control-plane"]

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/hearth-control-plane /usr/local/bin/hearth-control-plane
USER nonroot:nonroot
ENV HEARTH_HTTP__LISTEN=0.0.0.0:8443 \
    HEARTH_PKI__DIR=/etc/hearth/pki \
    HEARTH_LOG__FORMAT=json
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/hearth-control-plane"]
CMD ["serve"]
