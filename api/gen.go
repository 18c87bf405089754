// Package api holds the .proto contract of limiterd; the generated Go code is in api/limiterpb.
package api

//go:generate protoc --proto_path=. --go_out=limiterpb --go_opt=paths=source_relative --go-grpc_out=limiterpb --go-grpc_opt=paths=source_relative limiter.proto
