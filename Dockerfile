# wsgate's container image: a static binary on distroless, run as a
# non-root user. No shell, no package manager, no C library in the image.
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t wsgate:dev .
#   docker run --rm -p 8080:8080 -v "$PWD/wsgate.yaml:/etc/wsgate/wsgate.yaml:ro" wsgate:dev
#
# The configuration is not in the image: mount it at /etc/wsgate/wsgate.yaml
# (deploy/kubernetes mounts a ConfigMap there). Its listeners must bind
# 0.0.0.0, not 127.0.0.1, to be reachable from outside the container.
# See docs/packaging.md.

# The builder's Go is go.mod's (make test checks they agree).
FROM golang:1.26.8 AS build
WORKDIR /src
# The modules first: a change to the source alone does not download them
# again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# .git is not sent to the builder (.dockerignore), so git describe cannot
# run here: the version comes in as a build argument.
ARG VERSION=dev
# The Makefile's own build command, the one `make build` runs on a
# developer's machine: static, -trimpath, version stamped.
RUN make build VERSION="${VERSION}" BIN=/out/wsgate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/wsgate /wsgate
# distroless's "nonroot" user, by number so that Kubernetes' runAsNonRoot
# can verify it.
USER 65532:65532
# The listener and admin ports of deploy/kubernetes/configmap.yaml (make
# test checks they agree); EXPOSE only documents them, the configuration
# decides what is bound.
EXPOSE 8080 9090
# SIGTERM drains: live WebSockets get a Close 1001 and up to
# timeouts.drain to finish. Give `docker stop` that long: docker stop -t 40.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/wsgate"]
CMD ["-config", "/etc/wsgate/wsgate.yaml"]
