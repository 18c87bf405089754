// Command gencerts writes a test certificate authority and certificates for local use:
//
//	go run ./tools/gencerts -out certs.d -hosts localhost,127.0.0.1,limiter-1,limiter-2,limiter-3
//
// It writes ca.pem (the cluster CA), node.pem/node-key.pem (for every member: server and client
// authentication, for the gRPC port and for mutual TLS between members; the hosts are its
// names), admin.pem/admin-key.pem (a client certificate with the common name "admin") and
// client.pem/client-key.pem (a client certificate with the common name "client"). The CA key is
// written too (ca-key.pem) so more certificates can be made; keep it away from the members in
// anything but a test.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/limiterd/limiter/certs"
)

func main() {
	out := flag.String("out", "certs.d", "folder to write the PEM files to")
	hosts := flag.String("hosts", "localhost,127.0.0.1", "names and IPs of the members, comma-separated")
	valid := flag.Duration("valid", 365*24*time.Hour, "validity of the certificates")
	flag.Parse()
	if err := certs.Generate(*out, strings.Split(*hosts, ","), *valid); err != nil {
		fmt.Fprintf(os.Stderr, "gencerts: %v\n", err)
		os.Exit(1)
	}
}
