# syntax=docker/dockerfile:1
# hearth-agent in a container (a simulated appliance, or an appliance OS built from
# containers). Build from the repository root:
#   docker build -f deploy/docker/agent.Dockerfile -t hearth/agent .
# The runtime image carries ansible-core and the ansible/ content the agent runs; on real
# appliances use the Debian package (`cargo deb -p hearth-agent`) and its systemd unit.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile release-agent -p hearth-agent \
 && install -D -m 0755 target/release-agent/hearth-agent /out/hearth-agent

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ansible-core ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/hearth-agent /usr/bin/hearth-agent
COPY ansible/ansible.cfg ansible/catalog.json ansible/site.yml /usr/share/hearth/ansible/
COPY ansible/inventory/localhost.yml /usr/share/hearth/ansible/inventory/
COPY ansible/callback_plugins/ /usr/share/hearth/ansible/callback_plugins/
COPY ansible/playbooks/ /usr/share/hearth/ansible/playbooks/
COPY ansible/roles/ /usr/share/hearth/ansible/roles/
COPY deploy/systemd/agent.toml /etc/hearth/agent.toml
VOLUME ["/var/lib/hearth-agent"]
# Enroll first: docker run … hearth/agent enroll --server … --ca-file … --token …
ENTRYPOINT ["/usr/bin/hearth-agent"]
CMD ["run"]
