# syntax=docker/dockerfile:1
# The shop as a small, non-root image. Dependencies are built in their own
# layer (cargo-chef), so a code change rebuilds only the workspace crates.
#
#   docker build -t shop .
#   docker run -e DATABASE_URL=postgres://... -p 8080:8080 shop
#
# The image runs with APP_ENV=production: it needs a real database
# (DATABASE_URL) and never starts an embedded one. Run `shop migrate` once
# per release (compose.yaml does it as a one-shot service). It also needs a
# signing key and a service key (APP__AUTH__SIGNING_KEY_FILE,
# APP__AUTH__SERVICE_KEY_FILE): `shop keys generate --dir /var/lib/shop/keys`
# makes them. That directory belongs to the shop's user, so a named volume
# mounted there starts out writable by it (compose.yaml's `keys` service).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
RUN cargo install cargo-chef --locked --version ^0.1
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin shop
COPY . .
RUN cargo build --release --locked --bin shop

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates tracks the release's security updates; pinning it would freeze them.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin shop \
 && mkdir -p /var/lib/shop/keys \
 && chown 10001:10001 /var/lib/shop/keys
COPY --from=builder /src/target/release/shop /usr/local/bin/shop
COPY config /etc/shop/config
ENV APP_ENV=production \
    APP_CONFIG_DIR=/etc/shop/config
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["/usr/local/bin/shop", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/shop"]
CMD ["serve"]
