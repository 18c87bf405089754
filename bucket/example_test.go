package bucket_test

import (
	"fmt"
	"time"

	"github.com/limiterd/limiter/bucket"
)

// A limit of 5 per minute: five takes pass, the sixth waits for the next token (12 s), and a
// live change to 10 per minute keeps the bucket's fraction of capacity (0 of 5 is 0 of 10).
func ExampleKeyed() {
	l, err := bucket.NewLimit(5, time.Minute, 0)
	if err != nil {
		panic(err)
	}
	k := bucket.NewKeyed(l)
	// Times are nanoseconds from any fixed base; real code passes a monotonic clock such as
	// int64(time.Since(start)). Fixed times keep this output exact.
	t := int64(0)
	for i := 0; i < 6; i++ {
		res, _ := k.Take("user:42", t, 1)
		fmt.Printf("take %d: allowed=%v remaining=%d\n", i+1, res.Allowed, res.Remaining)
	}
	res, _ := k.Peek("user:42", t, 1)
	fmt.Println("retry after:", res.RetryAfter)
	k.SetLimit(bucket.MustLimit(10, time.Minute, 0), t)
	res, _ = k.Peek("user:42", t+int64(6*time.Second), 1)
	fmt.Println("after the change, 6 s later:", res.Allowed, res.Remaining, "of", res.Limit)
	// Output:
	// take 1: allowed=true remaining=4
	// take 2: allowed=true remaining=3
	// take 3: allowed=true remaining=2
	// take 4: allowed=true remaining=1
	// take 5: allowed=true remaining=0
	// take 6: allowed=false remaining=0
	// retry after: 12s
	// after the change, 6 s later: true 1 of 10
}
