package envoyrls

import (
	"context"
	"math"
	"strings"
	"testing"

	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestClampU32_FitsEnvoyFields(t *testing.T) {
	for in, want := range map[int64]uint32{-5: 0, 0: 0, 7: 7, math.MaxUint32: math.MaxUint32, math.MaxUint32 + 1: math.MaxUint32, math.MaxInt64: math.MaxUint32} {
		if got := clampU32(in); got != want {
			t.Errorf("clampU32(%d) = %d, want %d", in, got, want)
		}
	}
}

// An empty domain is refused before anything is decided, as envoyproxy/ratelimit refuses it.
func TestShouldRateLimit_EmptyDomainIsInvalidArgument(t *testing.T) {
	s := NewService(nil, &Config{}, false)
	req := &rlsv3.RateLimitRequest{Descriptors: []*commonv3.RateLimitDescriptor{{Entries: []*commonv3.RateLimitDescriptor_Entry{{Key: "k", Value: "v"}}}}}
	_, err := s.ShouldRateLimit(context.Background(), req)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "domain must not be empty") {
		t.Fatalf("got %v, want InvalidArgument about the empty domain", err)
	}
}
