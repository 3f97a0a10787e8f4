# syntax=docker/dockerfile:1
# hallmark admission webhook image.
#   docker build -t hallmark:0.1.0 .
# The image runs `hallmark serve` as the distroless "nonroot" user (65532); the
# Kubernetes manifests (manifests/) pass the in-cluster flags as args.

# ---- build ----------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
# .dockerignore keeps target/, fuzz/target/ and .git out of the context.
COPY . .
# Cache mounts keep the registry and incremental artefacts between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin hallmark \
 && cp target/release/hallmark /hallmark

# ---- runtime --------------------------------------------------------------------------
# cc-debian12: glibc and libgcc of the Debian 12 (bookworm) build stage, nothing else:
# no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /hallmark /hallmark
USER 65532:65532
# 8443: webhook (TLS: /mutate, /validate, /healthz, /readyz); 8080: /metrics (plain HTTP).
EXPOSE 8443 8080
ENTRYPOINT ["/hallmark"]
CMD ["serve"]
