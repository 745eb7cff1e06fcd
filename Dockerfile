# Multi-stage build: compile in the Rust image, run in a small distroless image as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p telemetry-node \
 && cp target/release/telemetry-node /telemetry-node

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /telemetry-node /usr/local/bin/telemetry-node
# distroless "nonroot": uid/gid 65532, no shell, no package manager.
USER 65532:65532
ENV TELEMETRY_DATA_DIR=/data TELEMETRY_HTTP_ADDR=0.0.0.0:8080 TELEMETRY_CLUSTER_ADDR=0.0.0.0:4697
EXPOSE 8080 4697
VOLUME ["/data"]
ENTRYPOINT ["/usr/local/bin/telemetry-node"]
