# syntax=docker/dockerfile:1
#
# One image per RealChat service, all from one build:
#
#   docker build --target auth -t realchat-auth .      (auth, messaging, profile, delivery, gateway)
#
# Stages: `chef` (the pinned toolchain and the C toolchain librdkafka needs), `planner` (the
# dependency recipe), `build` (dependencies in a layer of their own, then the five binaries),
# `runtime` (distroless, non-root, CA certificates) and one small stage per service on top of it.
# Editing a .rs file rebuilds only the last step of `build`; editing Cargo.toml or Cargo.lock
# rebuilds the dependencies too.
#
# docker-compose.yml builds every target; compose/check.sh lints this file (hadolint) and checks
# each service stage's ports, listen addresses and health check against the local topology.

# The toolchain of rust-toolchain.toml (compose/check.sh fails when they differ).
ARG RUST_VERSION=1.95.0
# The build and runtime images share a Debian release, so the binaries find the glibc they
# were linked against.
ARG DEBIAN_RELEASE=bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# rdkafka builds librdkafka from its vendored sources (rdkafka-sys's default build): mklove's
# `./configure` (bash, already in the image) and `make libs`, which needs a C and a C++ compiler
# (src-cpp is part of it) and python3 (the version string, the linker script). zlib1g-dev lets
# configure's zlib probe pass; the zlib actually linked is libz-sys's own static build
# (LIBZ_SYS_STATIC=1), so the runtime image needs no libz. librdkafka's TLS and SASL/SCRAM use the
# system OpenSSL (libssl-dev, found with pkg-config); the runtime image carries the same
# Debian release's libssl3.
# DL3008: the Debian release in the base image's tag is the pin; exact package versions leave the
# mirror at each point release and would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ gcc libssl-dev make pkg-config python3 zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}" \
    && rm -rf "${CARGO_HOME}/registry"
WORKDIR /src
# rustup reads the channel (and components) from this file, as on a developer's machine.
COPY rust-toolchain.toml ./
RUN rustup toolchain install && rustc --version
ENV LIBZ_SYS_STATIC=1 \
    CARGO_TERM_COLOR=never

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only (librdkafka included): this layer stays cached until Cargo.toml/Cargo.lock change.
RUN cargo chef cook --release --locked --recipe-path recipe.json \
    -p realchat-auth -p realchat-messaging -p realchat-profile -p realchat-delivery -p realchat-gateway
COPY . .
# Build the binaries, refuse any that still loads libz dynamically, and collect them in /out.
RUN cargo build --release --locked --bins \
    -p realchat-auth -p realchat-messaging -p realchat-profile -p realchat-delivery -p realchat-gateway \
    && mkdir -p /out \
    && for service in auth messaging profile delivery gateway; do \
         if ldd "target/release/${service}" | grep libz >/dev/null; then \
           echo "${service} links libz dynamically" >&2; exit 1; \
         fi; \
         cp "target/release/${service}" /out/; \
       done

FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
# The repository's URL (docker-compose.yml passes REALCHAT_SOURCE_URL); empty when not given.
ARG SOURCE=""
LABEL org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="RealChat"
# distroless's `nonroot` user; the image carries CA certificates and time zone data.
USER 65532:65532
WORKDIR /home/nonroot

# Each service listens on 0.0.0.0 in its container (the binaries' defaults are 127.0.0.1, which
# nothing outside the container could reach). The health check asks the service's own admin
# server for /readyz; the image has no shell and no curl.

FROM runtime AS auth
LABEL org.opencontainers.image.title="realchat-auth" \
      org.opencontainers.image.description="The RealChat auth service"
COPY --from=build /out/auth /usr/local/bin/auth
ENV REALCHAT_AUTH_GRPC_ADDR=0.0.0.0:7051 \
    REALCHAT_AUTH_ADMIN_ADDR=0.0.0.0:9181
EXPOSE 7051 9181
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/auth", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/auth"]

FROM runtime AS messaging
LABEL org.opencontainers.image.title="realchat-messaging" \
      org.opencontainers.image.description="The RealChat messaging service"
COPY --from=build /out/messaging /usr/local/bin/messaging
ENV REALCHAT_MESSAGING_GRPC_ADDR=0.0.0.0:7052 \
    REALCHAT_MESSAGING_ADMIN_ADDR=0.0.0.0:9182
EXPOSE 7052 9182
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/messaging", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/messaging"]

FROM runtime AS profile
LABEL org.opencontainers.image.title="realchat-profile" \
      org.opencontainers.image.description="The RealChat profile service"
COPY --from=build /out/profile /usr/local/bin/profile
ENV REALCHAT_PROFILE_GRPC_ADDR=0.0.0.0:7053 \
    REALCHAT_PROFILE_ADMIN_ADDR=0.0.0.0:9183
EXPOSE 7053 9183
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/profile", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/profile"]

FROM runtime AS delivery
LABEL org.opencontainers.image.title="realchat-delivery" \
      org.opencontainers.image.description="The RealChat delivery service"
COPY --from=build /out/delivery /usr/local/bin/delivery
ENV REALCHAT_DELIVERY_ADDR=0.0.0.0:8081 \
    REALCHAT_DELIVERY_ADMIN_ADDR=0.0.0.0:9184
EXPOSE 8081 9184
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/delivery", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/delivery"]

FROM runtime AS gateway
LABEL org.opencontainers.image.title="realchat-gateway" \
      org.opencontainers.image.description="The RealChat gateway: the public HTTP API and /v1/ws"
COPY --from=build /out/gateway /usr/local/bin/gateway
ENV REALCHAT_GATEWAY_ADDR=0.0.0.0:8080 \
    REALCHAT_GATEWAY_ADMIN_ADDR=0.0.0.0:9180
EXPOSE 8080 9180
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/gateway", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/gateway"]
