// Package test holds the cluster, fault and end-to-end tests of limiterd. They run real
// hashicorp/raft, raft-boltdb and gRPC on 127.0.0.1; nothing is mocked.
package test
