package deploy

// These tests parse every deployment file and check the wiring between their parts: that the
// StatefulSet names its headless Service, that probes hit the gRPC port, that --data-dir is where
// the volume is mounted, that the dashboard asks only for metrics limiterd exports, and so on.
// Each check runs on the real files (which must pass) and on copies broken on purpose (which must
// fail), so a check that cannot fail is caught too.

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// ---- Grafana dashboard ------------------------------------------------------------------------

type dashPanel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"` // inside a collapsed row
}

type dashboard struct {
	UID           string      `json:"uid"`
	Title         string      `json:"title"`
	SchemaVersion int         `json:"schemaVersion"`
	Panels        []dashPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Query      any    `json:"query"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

// promAggregations may be written op by (labels) (expr), with the clause before the parenthesis.
var promAggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

var promKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "and": true, "or": true, "unless": true, "offset": true, "atan2": true, "inf": true, "nan": true,
}

// promMetricNames returns the metric names a PromQL expression selects: identifiers that are not
// functions, keywords, label names (inside {} or after by/without/on/ignoring/group_*), or inside
// strings and range brackets.
func promMetricNames(expr string) ([]string, error) {
	var names []string
	r := []rune(expr)
	braces, brackets := 0, 0
	labelList := false // inside by (...), without (...), on (...), ...
	pendingLabelList := false
	for i := 0; i < len(r); {
		c := r[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for ; j < len(r) && r[j] != c; j++ {
				if r[j] == '\\' && c != '`' {
					j++
				}
			}
			if j >= len(r) {
				return nil, fmt.Errorf("unterminated string in %q", expr)
			}
			i = j + 1
			continue
		case c == '{':
			braces++
		case c == '}':
			braces--
		case c == '[':
			brackets++
		case c == ']':
			brackets--
		case c == '(':
			if pendingLabelList {
				labelList, pendingLabelList = true, false
			}
		case c == ')':
			labelList = false
		case unicode.IsLetter(c) || c == '_' || c == ':':
			j := i
			for j < len(r) && (unicode.IsLetter(r[j]) || unicode.IsDigit(r[j]) || r[j] == '_' || r[j] == ':') {
				j++
			}
			word := string(r[i:j])
			k := j
			for k < len(r) && unicode.IsSpace(r[k]) {
				k++
			}
			isCall := k < len(r) && r[k] == '('
			switch {
			case braces > 0 || brackets > 0 || labelList:
			case promKeywords[strings.ToLower(word)]:
				switch strings.ToLower(word) {
				case "by", "without", "on", "ignoring", "group_left", "group_right":
					pendingLabelList = true
				}
			case isCall || promAggregations[strings.ToLower(word)]:
			default:
				names = append(names, word)
			}
			i = j
			continue
		case unicode.IsDigit(c) || c == '.':
			j := i
			for j < len(r) && (unicode.IsLetter(r[j]) || unicode.IsDigit(r[j]) || r[j] == '.' || r[j] == '_') {
				j++ // numbers, and durations such as 5m
			}
			i = j
			continue
		}
		if braces < 0 || brackets < 0 {
			return nil, fmt.Errorf("unbalanced brackets in %q", expr)
		}
		i++
	}
	if braces != 0 || brackets != 0 {
		return nil, fmt.Errorf("unbalanced brackets in %q", expr)
	}
	return names, nil
}

// labelValuesSelector returns the series selector of a label_values(selector, label) variable
// query, or the query itself.
func labelValuesSelector(q string) string {
	q = strings.TrimSpace(q)
	if inner, ok := strings.CutPrefix(q, "label_values("); ok {
		inner = strings.TrimSuffix(inner, ")")
		if i := strings.LastIndex(inner, ","); i >= 0 {
			return strings.TrimSpace(inner[:i])
		}
	}
	return q
}

var labelMatcher = regexp.MustCompile(`\b([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)

func checkDashboard(data []byte) problems {
	var p problems
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		p.addf("does not parse: %v", err)
		return p
	}
	if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		p.addf("schemaVersion %d: want 36..41", d.SchemaVersion)
	}
	if d.UID == "" || d.Title == "" {
		p.addf("want a uid and a title")
	}
	vars := map[string]bool{}
	var exprs []string
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type == "query" {
			q := v.Definition
			if m, ok := v.Query.(map[string]any); ok {
				q, _ = m["query"].(string)
			} else if s, ok := v.Query.(string); ok {
				q = s
			}
			exprs = append(exprs, labelValuesSelector(q))
		}
	}
	if !vars["datasource"] {
		p.addf("no datasource variable")
	}
	allowed := map[string]bool{}
	for _, m := range exportedMetrics {
		allowed[m] = true
	}
	used := map[string]bool{}
	ids := map[int]string{}
	var visit func(ps []dashPanel)
	visit = func(ps []dashPanel) {
		for _, pn := range ps {
			who := fmt.Sprintf("panel %d %q", pn.ID, pn.Title)
			if other, dup := ids[pn.ID]; dup || pn.ID == 0 {
				p.addf("%s: id 0 or taken by %q", who, other)
			}
			ids[pn.ID] = pn.Title
			if g := pn.GridPos; g == nil || g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
				p.addf("%s: bad gridPos", who)
			}
			visit(pn.Panels)
			if pn.Type == "row" {
				continue
			}
			if pn.Datasource == nil || pn.Datasource.UID != "${datasource}" {
				p.addf("%s: datasource is not the ${datasource} variable", who)
			}
			if len(pn.Targets) == 0 {
				p.addf("%s: no queries", who)
			}
			for _, tg := range pn.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					p.addf("%s: query %s is empty", who, tg.RefID)
				}
				exprs = append(exprs, tg.Expr)
			}
		}
	}
	visit(d.Panels)
	for _, e := range exprs {
		names, err := promMetricNames(e)
		if err != nil {
			p.addf("%v", err)
			continue
		}
		if len(names) == 0 {
			p.addf("query %q selects no metric", e)
		}
		for _, n := range names {
			if !allowed[n] {
				p.addf("query %q uses metric %q, which limiterd does not export", e, n)
			}
			used[n] = true
		}
		for _, m := range labelMatcher.FindAllStringSubmatch(e, -1) {
			vals, ok := labelValues[m[1]]
			if !ok {
				continue
			}
			for _, v := range strings.Split(m[3], "|") {
				if !slices.Contains(vals, v) {
					p.addf("query %q matches %s=%q; the values are %v", e, m[1], v, vals)
				}
			}
		}
	}
	for _, m := range exportedMetrics {
		if !used[m] {
			p.addf("no panel shows %s", m)
		}
	}
	return p
}

func TestDashboard(t *testing.T) {
	expectClean(t, dashboardFile, checkDashboard(readFile(t, dashboardFile)))
}

func TestDashboardChecksCatchBrokenWiring(t *testing.T) {
	dash := string(readFile(t, dashboardFile))
	for _, tc := range []struct{ name, old, new, want string }{
		{"renamed metric", "limiterd_apply_lag", "limiterd_raft_apply_lag", `metric "limiterd_raft_apply_lag"`},
		{"histogram without _bucket", "limiterd_batch_takes_bucket", "limiterd_batch_takes", `metric "limiterd_batch_takes"`},
		{"a foreign metric", "max by (instance) (limiterd_buckets", "max by (instance) (go_goroutines", `metric "go_goroutines"`},
		{"a metric left out", "limiterd_local_denials_total", "limiterd_lease_reads_total", "no panel shows limiterd_local_denials_total"},
		{"unknown result", `result=\"denied\"`, `result=\"rejected\"`, `result="rejected"`},
		{"unknown state", `state=\"leader\"`, `state=\"Leader\"`, `state="Leader"`},
		{"duplicate id", `"id": 3,`, `"id": 2,`, "taken by"},
		{"old schema", `"schemaVersion": 39`, `"schemaVersion": 16`, "schemaVersion"},
		{"unbalanced", "sum by (source, result) (rate(limiterd_decisions_total{", "sum by (source, result) (rate(limiterd_decisions_total{{", "unbalanced"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(dash, tc.old) {
				t.Fatalf("the dashboard no longer contains %q: update this test", tc.old)
			}
			expectProblem(t, checkDashboard([]byte(strings.Replace(dash, tc.old, tc.new, 1))), tc.want)
		})
	}
}

func TestPromMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`histogram_quantile(0.99, sum by (method, le) (rate(limiterd_request_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval])))`: {"limiterd_request_duration_seconds_bucket"},
		`max by (instance, state) (limiterd_raft_state{state!="shutdown"}) == 1`:                                                                  {"limiterd_raft_state"},
		`sum(rate(a{result="denied"}[5m])) / sum(rate(b[5m])) > bool 0.5`:                                                                         {"a", "b"},
		labelValuesSelector(`label_values(limiterd_raft_term{job="x"}, instance)`):                                                                {"limiterd_raft_term"},
		`x * on (instance) group_left (state) y offset 5m`:                                                                                        {"x", "y"},
	} {
		got, err := promMetricNames(expr)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("promMetricNames(%q) = %v, %v; want %v", expr, got, err, want)
		}
	}
}
