# Builds every Portcullis binary; the compose file picks one per service with `command`.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p auth-service -p gateway -p socket-service -p portcullis

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/auth-service /src/target/release/gateway /src/target/release/socket-service /src/target/release/portcullis /usr/local/bin/
USER 65534
ENTRYPOINT []
