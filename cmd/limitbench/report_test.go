package main

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// snakeCase matches lower_snake_case JSON field names.
var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// checkKeys fails unless every object key in v (recursively, skipping the values of maps keyed
// by data such as errors_by_code and by_op) is lower_snake_case.
func checkKeys(t *testing.T, path string, v any) {
	t.Helper()
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if !snakeCase.MatchString(k) {
				t.Errorf("%s.%s: not lower_snake_case", path, k)
			}
			if k == "errors_by_code" || k == "first_errors" {
				continue
			}
			if k == "by_op" {
				for op, o := range val.(map[string]any) {
					checkKeys(t, path+".by_op."+op, o)
				}
				continue
			}
			checkKeys(t, path+"."+k, val)
		}
	case []any:
		for _, e := range x {
			checkKeys(t, path+"[]", e)
		}
	}
}

// TestJSONReportFields checks the JSON report's stable field names and a few values.
func TestJSONReportFields(t *testing.T) {
	var buf bytes.Buffer
	if err := writeJSON(&buf, fakeResult(true)); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("invalid JSON: %v", err)
	}
	checkKeys(t, "", m)
	main := m["main"].(map[string]any)
	for _, k := range []string{"operations", "ops_per_second", "decisions", "decisions_per_second", "allowed", "denied",
		"errors", "errors_by_code", "latency_us", "by_op", "timeline", "elapsed_seconds"} {
		if _, ok := main[k]; !ok {
			t.Errorf("main lacks %q", k)
		}
	}
	lat := main["latency_us"].(map[string]any)
	for _, k := range []string{"p50", "p90", "p99", "p99_9", "max", "mean", "min"} {
		if _, ok := lat[k]; !ok {
			t.Errorf("latency_us lacks %q", k)
		}
	}
	if main["errors_by_code"].(map[string]any)["Unavailable"].(float64) != 3 {
		t.Errorf("errors_by_code: %v", main["errors_by_code"])
	}
	r := m["ratios_to_baseline"].(map[string]any)
	if r["ops_per_second"].(float64) <= 0 || r["p99"].(float64) <= 1 {
		t.Errorf("ratios: %v", r)
	}
	if m["config"].(map[string]any)["seed"].(float64) != 99 {
		t.Errorf("seed not reported")
	}
}

// TestTextReport checks the text report's main lines.
func TestTextReport(t *testing.T) {
	var buf bytes.Buffer
	if err := writeText(&buf, fakeResult(true)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, s := range []string{"seed 99", "leader:     n1 at 127.0.0.1:7401", "calls/s", "decisions/s", "latency p99.9",
		"main/baseline", "errors by code: Unavailable 3", "warning: main run: 3 of 50,000 calls failed"} {
		if !strings.Contains(out, s) {
			t.Errorf("text report lacks %q:\n%s", s, out)
		}
	}
}
