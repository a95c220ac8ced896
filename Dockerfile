# The holdfast image for cluster mode (deploy/operator.yaml): the one binary on a minimal base.
#   docker build -t ghcr.io/holdfast/holdfast:dev .
# Build stage: the workspace's pinned dependencies (--locked), the release profile.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p holdfast \
    && strip target/release/holdfast

# Run stage: glibc and nothing else; no shell. The operator needs only the binary and the API
# server; it runs as an unprivileged user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/holdfast /usr/local/bin/holdfast
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/holdfast"]
CMD ["operator"]
