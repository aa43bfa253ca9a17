# Stand-in for python:3.11.16-slim-bookworm: Debian bookworm (mmdebstrap minbase, the runtime
# libraries CPython links) with this machine's own CPython 3.11 copied to /usr/local, laid out
# as the official image does (Debian's python3.11 is 3.11.2, older than the 3.11.5 some pins of
# the lock require). Not reproduced: the exact patch release 3.11.16, pip in the system Python,
# the official build's configure options and the image's documentation-free trimming.
FROM readmission-standin/python-rootfs:bookworm
COPY cpython/ /usr/local/
RUN ldconfig \
    && ln -s python3.11 /usr/local/bin/python3 \
    && ln -s python3.11 /usr/local/bin/python \
    && python3 -c "import ssl, sqlite3, ctypes, bz2, lzma, zlib, uuid, decimal, readline"
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8
CMD ["python3"]
