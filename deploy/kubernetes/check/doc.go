// Package check holds the tests of the Kubernetes manifests in
// deploy/kubernetes: each is decoded strictly with the Kubernetes API's own
// Go types, and the Deployment, Services and PodDisruptionBudget are
// checked against each other and against the wsgate configuration in the
// ConfigMap, which must pass wsgate's config loader.
//
// It is a module of its own so that wsgate's go.mod does not carry the
// Kubernetes API modules; `make test` and `make vet` run it by name.
package check
