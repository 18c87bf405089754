// Command gubebench runs gubernator (github.com/gubernator-io/gubernator, the rate limiter many
// teams use) for same-run comparisons with limiterd. It is a module of its own so the product
// never depends on gubernator.
//
//	gubebench serve --peers 3 --port-base B   # 3 peers in one process, like `limiterd dev`
//	gubebench load --addr HOST:PORT -c 64 -d 6s --keys 100 -o json
//
// load measures, over the same connections and callers, first gubernator's own no-op call
// (V1/HealthCheck) and then one-hit GetRateLimits calls (token bucket, a limit that never denies),
// and prints both in limitbench's JSON shape, so ../scripts/log-stores.sh reads either.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	gubernator "github.com/gubernator-io/gubernator/v2"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gubebench serve|load [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "load":
		err = load(os.Args[2:], os.Stdout)
	default:
		err = fmt.Errorf("unknown command %q: want serve or load", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gubebench:", err)
		os.Exit(1)
	}
}

// serve runs N gubernator peers in this process on 127.0.0.1, each knowing the others (static
// peers: no discovery service), until SIGINT or SIGTERM.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	n := fs.Int("peers", 3, "peers")
	base := fs.Int("port-base", 21400, "gRPC on base+1.., HTTP on base+101..")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logrus.SetLevel(logrus.WarnLevel)
	var daemons []*gubernator.Daemon
	var peers []gubernator.PeerInfo
	for i := 0; i < *n; i++ {
		grpcAddr := fmt.Sprintf("127.0.0.1:%d", *base+1+i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		d, err := gubernator.SpawnDaemon(ctx, gubernator.DaemonConfig{
			GRPCListenAddress: grpcAddr,
			HTTPListenAddress: fmt.Sprintf("127.0.0.1:%d", *base+101+i),
			AdvertiseAddress:  grpcAddr,
			InstanceID:        grpcAddr,
			Logger:            logrus.WithField("peer", grpcAddr),
		})
		cancel()
		if err != nil {
			return fmt.Errorf("start peer %s: %w", grpcAddr, err)
		}
		defer d.Close()
		daemons = append(daemons, d)
		peers = append(peers, gubernator.PeerInfo{GRPCAddress: grpcAddr, HTTPAddress: fmt.Sprintf("127.0.0.1:%d", *base+101+i)})
	}
	for _, d := range daemons {
		d.SetPeers(peers)
	}
	fmt.Printf("gubebench: %d gubernator peers, gRPC on 127.0.0.1:%d-%d\n", *n, *base+1, *base+*n)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}

// phase is one measured run, in limitbench's JSON field names.
type phase struct {
	Operations   int64              `json:"operations"`
	Errors       int64              `json:"errors"`
	OpsPerSecond float64            `json:"ops_per_second"`
	LatencyUS    map[string]float64 `json:"latency_us"`
}

type report struct {
	Target   string `json:"target"`
	Main     phase  `json:"main"`
	Baseline *phase `json:"baseline,omitempty"`
}

func load(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:21401", "the peer to call (gRPC)")
	callers := fs.Int("c", 64, "concurrent callers")
	conns := fs.Int("conns", 0, "gRPC connections, round-robined over the callers (0: min(4, callers/16), at least 1, as limitbench)")
	dur := fs.Duration("d", 6*time.Second, "measured time per phase, after the warmup")
	warmup := fs.Duration("warmup", time.Second, "time to run before measuring each phase")
	keys := fs.Int("keys", 100, "distinct keys")
	baseline := fs.Bool("baseline", true, "measure HealthCheck first (the no-op call)")
	format := fs.String("o", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *callers < 1 || *keys < 1 || *dur <= 0 {
		return errors.New("-c, --keys and -d must be positive")
	}
	n := *conns
	if n == 0 {
		n = max(1, min(4, *callers/16))
	}
	var cs []*grpc.ClientConn
	for i := 0; i < n; i++ {
		c, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fmt.Errorf("dial %s: %w", *addr, err)
		}
		defer c.Close()
		cs = append(cs, c)
	}
	rep := report{Target: "gubernator " + *addr}
	if *baseline {
		p := run(cs, *callers, *warmup, *dur, func(ctx context.Context, c gubernator.V1Client, _ *rand.Rand) error {
			_, err := c.HealthCheck(ctx, &gubernator.HealthCheckReq{})
			return err
		})
		rep.Baseline = &p
	}
	rep.Main = run(cs, *callers, *warmup, *dur, func(ctx context.Context, c gubernator.V1Client, rng *rand.Rand) error {
		resp, err := c.GetRateLimits(ctx, &gubernator.GetRateLimitsReq{Requests: []*gubernator.RateLimitReq{{
			Name: "bench", UniqueKey: fmt.Sprintf("k%d", rng.IntN(*keys)), Hits: 1,
			Limit: 1 << 40, Duration: int64(time.Hour / time.Millisecond), Algorithm: gubernator.Algorithm_TOKEN_BUCKET,
		}}})
		if err == nil && resp.Responses[0].Error != "" {
			err = errors.New(resp.Responses[0].Error)
		}
		return err
	})
	if *format == "json" {
		return json.NewEncoder(out).Encode(rep)
	}
	if rep.Baseline != nil {
		fmt.Fprintf(out, "no-op (HealthCheck): %8.0f calls/s  p50 %6.2f ms  p99 %6.2f ms\n", rep.Baseline.OpsPerSecond, rep.Baseline.LatencyUS["p50"]/1000, rep.Baseline.LatencyUS["p99"]/1000)
	}
	fmt.Fprintf(out, "GetRateLimits:       %8.0f calls/s  p50 %6.2f ms  p99 %6.2f ms  errors %d\n", rep.Main.OpsPerSecond, rep.Main.LatencyUS["p50"]/1000, rep.Main.LatencyUS["p99"]/1000, rep.Main.Errors)
	return nil
}

// run drives call from callers goroutines (closed loop) for warmup+dur and measures the last dur.
func run(cs []*grpc.ClientConn, callers int, warmup, dur time.Duration, call func(context.Context, gubernator.V1Client, *rand.Rand) error) phase {
	start := time.Now()
	measureFrom, end := start.Add(warmup), start.Add(warmup+dur)
	var mu sync.Mutex
	var all []time.Duration
	var ops, errs int64
	var wg sync.WaitGroup
	for w := 0; w < callers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := gubernator.NewV1Client(cs[w%len(cs)])
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			var lat []time.Duration
			var e int64
			for {
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := call(ctx, c, rng)
				cancel()
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil {
					e++
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			ops += int64(len(lat))
			errs += e
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(all)
	q := func(f float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(f*float64(len(all))))].Microseconds())
	}
	return phase{Operations: ops, Errors: errs, OpsPerSecond: float64(ops) / dur.Seconds(),
		LatencyUS: map[string]float64{"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": q(1)}}
}
