# Stand-in for ghcr.io/astral-sh/uv:0.13.8: the uv and uvx binaries of the uv 0.13.8 wheel (the
# project's venv installs it, Makefile UV_VERSION) at / in an empty image, which is all the
# Dockerfiles take from it (COPY --from=uv /uv). Not reproduced: the image's other tags and
# its ENTRYPOINT.
FROM scratch
COPY uv uvx /
