# qminder-bridge container image.
#   docker build -t qminder-bridge .
#   docker run --rm -p 8080:8080 -e QMINDER_WEBHOOK_SECRET=... \
#     -v "$PWD/bridge.toml:/etc/qminder-bridge/config.toml:ro" qminder-bridge
# The image ships no configuration: mount one at /etc/qminder-bridge/config.toml (or pass
# `serve --config FILE`). See docs/deployment.md.

# ---- build -------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Dependencies first, against a stub crate, so that editing src/ does not rebuild them
# (librdkafka, built from source by rdkafka-sys with its own configure + make, is the slow
# part). The rust image already has make, g++, pkg-config and zlib's headers; zstd is vendored.
COPY Cargo.toml Cargo.lock ./
COPY bench/Cargo.toml bench/Cargo.toml
# Every target the workspace's manifests name must exist for cargo to load them: stubs.
# The build links librdkafka against OpenSSL (rdkafka's ssl feature); the rust image has
# libssl-dev and pkg-config.
# Behind a TLS-re-signing proxy, pass its CA as a build secret (never a layer):
#   docker build --secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt .
RUN --mount=type=secret,id=cacert \
    if [ -s /run/secrets/cacert ]; then export CARGO_HTTP_CAINFO=/run/secrets/cacert; fi \
 && mkdir -p src benches bench/src/bin \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs bench/src/lib.rs \
 && echo 'fn main() {}' > benches/hot_path.rs \
 && echo 'fn main() {}' > bench/src/main.rs \
 && echo 'fn main() {}' > bench/src/bin/baseline.rs \
 && cargo build --release --locked -p qminder-bridge --bin qminder-bridge \
 && rm -rf src

COPY src ./src
# COPY keeps the sources' modification times, which may be older than the stub build's:
# touch them so that cargo rebuilds the crate itself.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked -p qminder-bridge --bin qminder-bridge \
 && strip target/release/qminder-bridge

# ---- run ---------------------------------------------------------------------------------
FROM debian:bookworm-slim

# libssl3: librdkafka's TLS and SASL/SCRAM. ca-certificates: the system CAs, for brokers
# whose certificates a public CA signed ([kafka.security] without ca_file).
# curl only serves the HEALTHCHECK below. Versions are pinned to bookworm's series (the
# globs let Debian's security updates in).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      "libssl3=3.0.*" "ca-certificates=20230311*" "curl=7.88.1-10+deb12u*" \
 && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid/gid so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 qminder \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin qminder \
 && mkdir -p /etc/qminder-bridge /var/lib/qminder-bridge/spool \
 && chown 10001:10001 /var/lib/qminder-bridge/spool

COPY --from=builder /src/target/release/qminder-bridge /usr/local/bin/qminder-bridge
# One example webhook per event type, for `qminder-bridge send` smoke tests from inside.
COPY examples/events /usr/share/qminder-bridge/examples/events

USER 10001:10001
EXPOSE 8080
# Liveness only (/healthz: the process serves HTTP); readiness is /readyz. Assumes the
# default listen port 8080.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]

ENTRYPOINT ["qminder-bridge"]
CMD ["serve", "--config", "/etc/qminder-bridge/config.toml"]
