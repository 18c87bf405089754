package server

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/fsm"
)

func TestValidateTake_RefusesBadInputWithInvalidArgument(t *testing.T) {
	long := strings.Repeat("x", 300)
	cases := map[string]struct {
		items []*limiterpb.TakeItem
		id    string
	}{
		"no items":         {nil, ""},
		"empty key":        {[]*limiterpb.TakeItem{{Limit: "l", Key: ""}}, ""},
		"long key":         {[]*limiterpb.TakeItem{{Limit: "l", Key: long}}, ""},
		"empty limit":      {[]*limiterpb.TakeItem{{Limit: "", Key: "k"}}, ""},
		"bad limit char":   {[]*limiterpb.TakeItem{{Limit: "a b", Key: "k"}}, ""},
		"negative cost":    {[]*limiterpb.TakeItem{{Limit: "l", Key: "k", Cost: -5}}, ""},
		"long request id":  {[]*limiterpb.TakeItem{{Limit: "l", Key: "k"}}, long},
		"too many items":   {make([]*limiterpb.TakeItem, fsm.MaxItems+1), ""},
		"one bad of three": {[]*limiterpb.TakeItem{{Limit: "l", Key: "k"}, {Limit: "l", Key: "k2"}, {Limit: "l", Key: ""}}, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := (*Server)(nil).validateTake(tc.items, tc.id)
			if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() == "" {
				t.Fatalf("got %v, want InvalidArgument with a message", err)
			}
		})
	}
	tk, err := (*Server)(nil).validateTake([]*limiterpb.TakeItem{{Limit: "l", Key: "k"}}, "")
	if err != nil || tk.Items[0].Cost != 1 || tk.RequestID == "" {
		t.Fatalf("valid take: %+v %v (cost 0 means 1; an ID is assigned)", tk, err)
	}
}

// FuzzValidateTake: request validation never panics, and whatever it accepts the state machine
// accepts as well-formed (it encodes, decodes and passes the same bounds).
func FuzzValidateTake(f *testing.F) {
	f.Add("payments", "user:42", int64(1), "req-1", "other", "k", int64(0))
	f.Add("", "", int64(-1), "", "x y", "", int64(1<<62))
	f.Add(strings.Repeat("n", 129), strings.Repeat("k", 257), int64(0), strings.Repeat("i", 65), "a", "b", int64(3))
	f.Fuzz(func(t *testing.T, limit, key string, cost int64, id, limit2, key2 string, cost2 int64) {
		items := []*limiterpb.TakeItem{{Limit: limit, Key: key, Cost: cost}, {Limit: limit2, Key: key2, Cost: cost2}}
		tk, err := (*Server)(nil).validateTake(items, id)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("refusal with %v, want InvalidArgument", err)
			}
			return
		}
		cmd := fsm.Command{TakeBatch: []fsm.Take{tk}}
		back, derr := fsm.Decode(cmd.Encode(nil))
		if derr != nil || len(back.TakeBatch) != 1 || len(back.TakeBatch[0].Items) != 2 {
			t.Fatalf("accepted take does not round-trip: %v", derr)
		}
		for _, it := range tk.Items {
			if it.Cost <= 0 || fsm.CheckName(it.Limit) != nil || fsm.CheckKey(it.Key) != nil {
				t.Fatalf("accepted an item the state machine refuses: %+v", it)
			}
		}
	})
}
