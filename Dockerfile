# syntax=docker/dockerfile:1
# monitor's image: `docker build -t monitor .` from the repository root, the build context being
# the whole workspace (.dockerignore leaves out what the build makes). deploy/kubernetes runs it
# as a DaemonSet. tests/tests/dockerfile.rs checks this file against the repository and xtask.

# The build stage runs the project's own build: `cargo xtask build` sets up the eBPF build chain
# (the nightly toolchain with rust-src, bpf-linker built against the nightly's LLVM:
# xtask/src/setup.rs) and builds the release binaries with the kernel programs embedded. None of
# that recipe is repeated here, so it cannot drift from what CI builds and tests.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crates, the target directory and the tool cache (bpf-linker takes a
# minute to build) across builds; they are not in the image, so the binary is copied out.
# Outside a git checkout (.git is not in the context) monitor_build_info's revision is
# "unknown".
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/root/.cache/monitor-tools \
    --mount=type=cache,target=/src/target \
    cargo xtask build && cp target/release/monitor /monitor

# The binary links glibc (libc, libm, libgcc_s), so not a static or musl base. distroless/cc has
# those and nothing else: no shell, no package manager, in a process that holds CAP_BPF while it
# starts (debian:bookworm-slim works as well, with a shell for debugging). Its Debian release is
# the build stage's (bookworm is 12): the binary runs on the glibc it was linked against. TLS
# roots are compiled in (webpki-roots), so no CA bundle is needed.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /monitor /usr/local/bin/monitor
# Root, deliberately: Kubernetes grants added capabilities (BPF, PERFMON, ...) to uid 0 only,
# and file capabilities on the binary would need privilege escalation at exec, which the
# DaemonSet forbids (no_new_privs). The daemon drops every capability it no longer needs once
# its programs are attached. The DaemonSet runs it with a read-only root filesystem: it writes
# its state directory and SQLite's temporary files in /tmp, both volumes there.
USER 0:0
ENTRYPOINT ["/usr/local/bin/monitor"]
CMD ["--help"]
