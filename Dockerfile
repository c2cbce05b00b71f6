# utwin server image: docker build -t utwin . (see the README's Deployment section)

FROM python:3.11-slim AS wheel
WORKDIR /build
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
COPY generated ./generated
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
# A fixed unprivileged user, so a mounted data folder can be owned by its uid.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/utwin --shell /usr/sbin/nologin utwin \
    && install -d -o utwin -g utwin -m 0700 /var/lib/utwin
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY deploy/utwin.toml /etc/utwin/utwin.toml

ENV UTWIN_CONFIG=/etc/utwin/utwin.toml \
    UTWIN_LISTEN=0.0.0.0:50051 \
    PYTHONUNBUFFERED=1
USER utwin:utwin
VOLUME ["/var/lib/utwin"]
EXPOSE 50051
# `utwin health` asks the gRPC health service: SERVING once the store is open, NOT_SERVING while it
# refuses writes. For a TLS server set UTWIN_TLS_CA and UTWIN_TARGET (a name its certificate holds).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["utwin", "health", "--timeout", "3"]
# SIGTERM drains (shutdown_grace_s, 5 s); `docker stop` waits 10 s before SIGKILL.
STOPSIGNAL SIGTERM
ENTRYPOINT ["utwin"]
CMD ["serve"]
