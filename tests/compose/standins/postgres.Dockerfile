# Stand-in for postgres:15.18-bookworm: Debian bookworm's postgresql-15 (mmdebstrap minbase,
# user postgres with uid/gid 999 as in the official image) and an entrypoint that honours the
# parts of the official image's contract the project relies on: POSTGRES_USER,
# POSTGRES_PASSWORD, POSTGRES_DB, PGDATA, the scripts in /docker-entrypoint-initdb.d run once on
# an empty data directory by a server listening on the Unix socket only, then the real server
# on every address with password (scram-sha-256) logins. Not reproduced: POSTGRES_INITDB_WALDIR,
# POSTGRES_HOST_AUTH_METHOD, *_FILE secrets, .sql.gz/.sh scripts, the switch from root to the
# postgres user (the project runs it as 999 from the start), Debian's 15.x patch release
# instead of 15.18.
FROM readmission-standin/postgres-rootfs:bookworm
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 0755 /usr/local/bin/docker-entrypoint.sh \
    && mkdir -p /docker-entrypoint-initdb.d /var/lib/postgresql/data /var/run/postgresql \
    && chown 999:999 /var/lib/postgresql/data /var/run/postgresql \
    && chmod 0700 /var/lib/postgresql/data \
    && chmod 3777 /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
VOLUME /var/lib/postgresql/data
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
