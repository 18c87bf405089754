package main

import (
	"encoding/xml"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakePhase returns a phase of n calls of op with log-normal latencies around median over the
// given number of seconds, with a timeline.
func fakePhase(name string, op opKind, n int, median time.Duration, seconds int, rng *rand.Rand) *Phase {
	p := &Phase{Name: name, Mix: Mix{{Op: op, Weight: 1}}, Elapsed: time.Duration(seconds) * time.Second}
	for k := range p.Hist {
		p.Hist[k] = NewHist()
	}
	perWin := n / seconds
	for s := 0; s < seconds; s++ {
		w := NewHist()
		for i := 0; i < perWin; i++ {
			d := time.Duration(float64(median) * math.Exp(rng.NormFloat64()*0.6))
			w.Record(d)
			p.Hist[op].Record(d)
		}
		p.Timeline = append(p.Timeline, Window{Index: s, Ops: int64(perWin), P50: w.Quantile(0.5), P99: w.Quantile(0.99), Max: w.Max()})
	}
	p.Ops[op] = int64(perWin * seconds)
	if op != opHealth {
		p.Decisions[op] = p.Ops[op]
		p.Allowed = p.Ops[op] - 7
		p.Denied = 7
	}
	return p
}

// fakeResult returns a plausible Result without a cluster, with or without a baseline.
func fakeResult(baseline bool) *Result {
	rng := rand.New(rand.NewPCG(5, 6))
	mix, _ := parseMix("take=1")
	res := &Result{
		Config: Config{Addrs: []string{"127.0.0.1:7401"}, Concurrency: 64, Keys: 10000, Limit: "bench", Setup: true,
			Rate: 1e9, Per: time.Second, Cost: 1, Mix: mix, Batch: 100, Duration: 5 * time.Second, Warmup: time.Second,
			Baseline: baseline, RequestTimeout: 10 * time.Second, Seed: 99},
		Leader: LeaderInfo{ID: "n1", Address: "127.0.0.1:7401", Term: 2, Connections: 4},
		Main:   fakePhase("main", opTake, 50_000, 2*time.Millisecond, 5, rng),
	}
	res.Main.Errors[14] = 3 // Unavailable
	res.Main.OpErrors[opTake] = 3
	if baseline {
		res.Baseline = fakePhase("baseline", opHealth, 200_000, 150*time.Microsecond, 5, rng)
	}
	return res
}

// parseXML decodes doc to the end and returns the root element's name and how many elements of
// each name it holds.
func parseXML(t *testing.T, doc string) (string, map[string]int) {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(doc))
	root := ""
	count := map[string]int{}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG does not parse as XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			count[se.Name.Local]++
		}
	}
	return root, count
}

// TestPlotWritesParseableSVG writes the plots of a run with and without a baseline and checks
// that the SVG parses with encoding/xml and holds both panels' lines.
func TestPlotWritesParseableSVG(t *testing.T) {
	for _, baseline := range []bool{false, true} {
		res := fakeResult(baseline)
		path := filepath.Join(t.TempDir(), "plot.svg")
		if err := writePlotFile(path, res); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		root, count := parseXML(t, string(data))
		if root != "svg" {
			t.Fatalf("root element %q, want svg", root)
		}
		// Per panel: p50 and p99 over time, one distribution; doubled with a baseline.
		want := 3
		if baseline {
			want = 6
		}
		if count["polyline"] != want {
			t.Fatalf("baseline=%v: %d polylines, want %d", baseline, count["polyline"], want)
		}
		for _, s := range []string{"Latency over time", "Latency by percentile", "99.9%", "seed 99"} {
			if !strings.Contains(string(data), s) {
				t.Errorf("SVG lacks %q", s)
			}
		}
	}
}

// TestPlotHTMLHoldsSVGAndReport checks the .html output: one page with the SVG and the report.
func TestPlotHTMLHoldsSVGAndReport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plot.html")
	if err := writePlotFile(path, fakeResult(true)); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	start, end := strings.Index(doc, "<svg"), strings.Index(doc, "</svg>")
	if !strings.HasPrefix(doc, "<!DOCTYPE html>") || start < 0 || end < start {
		t.Fatalf("not an HTML page with an SVG: %.200s", doc)
	}
	if root, _ := parseXML(t, doc[start:end+len("</svg>")]); root != "svg" {
		t.Fatalf("embedded SVG root %q", root)
	}
	if !strings.Contains(doc, "<pre>limitbench: mix take=1") || !strings.Contains(doc, "main/baseline") {
		t.Fatalf("the page lacks the text report")
	}
}

// TestPlotEmptyRun checks that a run with nothing measured still gives a valid SVG.
func TestPlotEmptyRun(t *testing.T) {
	res := fakeResult(false)
	res.Main = &Phase{Name: "main", Mix: res.Config.Mix}
	for k := range res.Main.Hist {
		res.Main.Hist[k] = NewHist()
	}
	if root, _ := parseXML(t, renderSVG(res)); root != "svg" {
		t.Fatalf("root %q", root)
	}
}

// TestPercentileLabels checks the percentile axis labels.
func TestPercentileLabels(t *testing.T) {
	for x, want := range []string{"0%", "90%", "99%", "99.9%", "99.99%", "99.999%"} {
		if got := percentileLabel(float64(x)); got != want {
			t.Errorf("x=%d: %q, want %q", x, got, want)
		}
	}
}
