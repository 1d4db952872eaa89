# pgfanout container: build on Debian 12 with the -dev packages, run on slim Debian 12.
# The build stage runs the same scripts as CI (scripts/install-deps.sh, then CMake).
FROM debian:12 AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh
COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
 && cmake --build build -j"$(nproc)" --target pgfanout \
 && cmake --install build --prefix /opt/pgfanout

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 libevent-2.1-7 libjansson4 libssl3 librdkafka1 \
      libprotobuf-c1 libhiredis0.14 libcyaml1 libyaml-0-2 libjemalloc2 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home pgfanout \
 && install -d -o pgfanout -g pgfanout /var/lib/pgfanout
COPY --from=build /opt/pgfanout/bin/pgfanout /usr/local/bin/pgfanout
COPY pgfanout.example.yaml /etc/pgfanout/pgfanout.example.yaml
USER pgfanout
# Configuration: mount a file and set PGFANOUT_CONFIG (or pass --config), and/or set
# PGFANOUT_* variables; secrets from the environment or files (PGPASSWORD or passfile,
# PGFANOUT_REDIS_PASSWORD or redis.password_file, PGFANOUT_KAFKA_CONF_SASL_PASSWORD).
# The listener stays on loopback, enough for the HEALTHCHECK below; set
# PGFANOUT_HTTP_LISTEN=0.0.0.0:9187 to let Prometheus scrape from outside the container.
ENV PGFANOUT_HTTP_LISTEN=127.0.0.1:9187
# pgfanout's own state (snapshot progress, the system and slot it streamed from) when Kafka is
# not a sink: mount a volume here, or a restart forgets it (with Kafka it lives in a topic).
ENV PGFANOUT_STATE_DIR=/var/lib/pgfanout
VOLUME /var/lib/pgfanout
EXPOSE 9187
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["pgfanout", "--probe", "127.0.0.1:9187/healthz"]
ENTRYPOINT ["pgfanout"]
