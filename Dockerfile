# syntax=docker/dockerfile:1
# One multi-stage build for the three services: dependencies are compiled in
# their own cached layer (cargo-chef), each service gets a small runtime image
# with only its binary, running as a non-root user.
#   docker build --target orders   -t shop-orders .
#   docker build --target payments -t shop-payments .
#   docker build --target gateway  -t shop-gateway .

FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is reused until Cargo.toml/Cargo.lock change.
RUN cargo chef cook --release --workspace --recipe-path recipe.json
COPY . .
RUN cargo build --release --workspace --bins \
 && mkdir -p /out \
 && cp target/release/orders target/release/payments target/release/gateway /out/

FROM debian:bookworm-slim AS runtime
# librdkafka is linked statically; zlib and CA certificates are all it needs at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home shop
USER 10001
ENV RUST_LOG=info

FROM runtime AS orders
COPY --from=builder /out/orders /usr/local/bin/orders
ENV ORDERS_LISTEN_ADDR=0.0.0.0:50051 ORDERS_LOG_FORMAT=json
EXPOSE 50051
EXPOSE 9151
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=5 CMD ["orders", "health"]
ENTRYPOINT ["orders"]
CMD ["serve"]

FROM runtime AS payments
COPY --from=builder /out/payments /usr/local/bin/payments
ENV PAYMENTS_LISTEN_ADDR=0.0.0.0:50052 PAYMENTS_LOG_FORMAT=json
EXPOSE 50052
EXPOSE 9152
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=5 CMD ["payments", "health"]
ENTRYPOINT ["payments"]
CMD ["serve"]

FROM runtime AS gateway
COPY --from=builder /out/gateway /usr/local/bin/gateway
ENV GATEWAY_LISTEN_ADDR=0.0.0.0:8080 GATEWAY_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=5 CMD ["gateway", "health"]
ENTRYPOINT ["gateway"]
CMD ["serve"]
