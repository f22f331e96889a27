# syntax=docker/dockerfile:1
# Chronos calendar sync: the release binary on a small non-root base image.
# Build:  docker build --build-arg CHRONOS_BUILD_COMMIT=$(git rev-parse --short=12 HEAD) -t chronos .
# Run:    docker run -p 8080:8080 -v chronos-data:/var/lib/chronos chronos
# See docs/operations.md ("Container image").

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# .dockerignore keeps .git out, so build.rs cannot ask git: pass the commit.
ARG CHRONOS_BUILD_COMMIT=unknown
ENV CHRONOS_BUILD_COMMIT=${CHRONOS_BUILD_COMMIT}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p chronos-server \
    && cp target/release/chronos-server /chronos-server \
    # The volume's mount point, owned by distroless's `nonroot` user (65532),
    # so a fresh named volume is writable by the service.
    && mkdir -p /state/var/lib/chronos && chown -R 65532:65532 /state

# A static wget for HEALTHCHECK (the distroless base has no shell and no curl).
FROM busybox:1.37-musl AS busybox

# glibc and libgcc only: the binary needs no other system library (rustls,
# bundled SQLite).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /chronos-server /usr/local/bin/chronos-server
COPY --from=busybox /bin/wget /usr/local/bin/wget
COPY --from=build --chown=65532:65532 /state/var/lib/chronos /var/lib/chronos
ENV CHRONOS_BIND=0.0.0.0:8080 \
    CHRONOS_LOG_FORMAT=json \
    DATABASE_URL=sqlite:///var/lib/chronos/chronos.db
# The SQLite database (and its key file when encryption_key is unset) live here.
VOLUME ["/var/lib/chronos"]
WORKDIR /var/lib/chronos
EXPOSE 8080
USER nonroot:nonroot
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"]
# SIGTERM drains (up to 30 s for requests, then 30 s for syncs): give `docker
# stop` a longer timeout, e.g. `docker stop -t 75`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/chronos-server"]
CMD ["serve"]
