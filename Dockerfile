# The inventory service: one image for every role (serve, command, query).
# Build: docker build -t inventory .   (no system protoc needed: protox compiles the protos)
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
RUN cargo build --release --locked --bin inventory

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/inventory --create-home inventory
COPY --from=build /src/target/release/inventory /usr/local/bin/inventory
USER inventory
WORKDIR /var/lib/inventory
# 50051 command server, 50052 query server.
EXPOSE 50051 50052
ENTRYPOINT ["inventory"]
CMD ["serve", "--log", "/var/lib/inventory/data", "--command-addr", "0.0.0.0:50051", "--query-addr", "0.0.0.0:50052"]
