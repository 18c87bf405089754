// Package deploy holds the files that deploy limiterd: the container image (Dockerfile and
// build-image.sh), a docker compose cluster (compose/), Kubernetes manifests (k8s/), a systemd
// unit (systemd/) and a Grafana dashboard (grafana/). It has no code; its tests parse those files
// and check that they are wired together: ports, names, flags, volumes, probes and metric names.
package deploy
