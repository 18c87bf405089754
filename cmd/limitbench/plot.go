package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"html"
	"math"
	"os"
	"strings"
)

// The plot's geometry, in SVG user units (pixels).
const (
	plotWidth   = 960
	panelHeight = 360
	titleHeight = 72
	marginLeft  = 80
	marginRight = 30
	marginTop   = 40 // above each panel's plot area: the panel's title
	marginBot   = 70 // below it: the x axis labels and the legend
)

// series is one line in a panel: points in data coordinates.
type series struct {
	name   string
	color  string
	dashed bool
	xs     []float64
	ys     []float64 // latency in nanoseconds; values <= 0 are skipped
}

// panel is one chart: a linear x axis (with its own tick labels) and a logarithmic latency y axis.
type panel struct {
	title  string
	xLabel string
	xMin   float64
	xMax   float64
	xTicks []float64
	xText  func(float64) string
	series []series
	dots   bool // mark each point (for per-window series)
}

// Colours of the series: main in strong colours, baseline in muted dashed ones.
const (
	colorP50     = "#1f77b4"
	colorP99     = "#d62728"
	colorBaseP50 = "#7f9fbf"
	colorBaseP99 = "#d69a9a"
)

// timeSeriesPanel plots p50 and p99 per one-second window of the main run and the baseline.
func timeSeriesPanel(res *Result) panel {
	p := panel{title: "Latency over time (p50 and p99 per 1 s window, by intended send time)", xLabel: "seconds into the measured run", dots: true}
	add := func(ph *Phase, prefix string, c50, c99 string, dashed bool) {
		s50 := series{name: prefix + "p50", color: c50, dashed: dashed}
		s99 := series{name: prefix + "p99", color: c99, dashed: dashed}
		for _, w := range ph.Timeline {
			if w.Ops == 0 {
				continue
			}
			x := float64(w.Index) + 0.5
			s50.xs, s50.ys = append(s50.xs, x), append(s50.ys, float64(w.P50))
			s99.xs, s99.ys = append(s99.xs, x), append(s99.ys, float64(w.P99))
		}
		p.series = append(p.series, s50, s99)
		p.xMax = max(p.xMax, float64(len(ph.Timeline)))
	}
	add(res.Main, "", colorP50, colorP99, false)
	if res.Baseline != nil {
		add(res.Baseline, "baseline ", colorBaseP50, colorBaseP99, true)
	}
	p.xMax = max(p.xMax, 1)
	step := niceStep(p.xMax, 10)
	for x := 0.0; x <= p.xMax+1e-9; x += step {
		p.xTicks = append(p.xTicks, x)
	}
	p.xText = func(x float64) string { return fmt.Sprintf("%gs", x) }
	return p
}

// niceStep returns a tick step from 1, 2, 5, 10, 20, 50, ... that gives at most n ticks over span.
func niceStep(span float64, n int) float64 {
	for mag := 1.0; ; mag *= 10 {
		for _, m := range []float64{1, 2, 5} {
			if span/(m*mag) <= float64(n) {
				return m * mag
			}
		}
	}
}

// percentileX maps quantile q to the x axis of the percentile plot: log10(1/(1-q)), so 90% is
// 1, 99% is 2, 99.9% is 3 and so on.
func percentileX(q float64) float64 { return -math.Log10(1 - q) }

// percentileLabel names the quantile at x = k on the percentile plot: 0%, 90%, 99%, 99.9%, ...
func percentileLabel(x float64) string {
	switch k := int(math.Round(x)); {
	case k <= 0:
		return "0%"
	case k == 1:
		return "90%"
	case k == 2:
		return "99%"
	default:
		return "99." + strings.Repeat("9", k-2) + "%"
	}
}

// distributionPanel plots latency against percentile for the main run and the baseline.
func distributionPanel(res *Result) panel {
	p := panel{title: "Latency by percentile (whole measured run)", xLabel: "percentile"}
	add := func(ph *Phase, name, color string, dashed bool) {
		h := ph.AllHist()
		if h.Count() == 0 {
			return
		}
		top := min(math.Log10(float64(h.Count())), 6)
		s := series{name: name, color: color, dashed: dashed}
		for x := 0.0; x < top+1e-9; x += 0.025 {
			q := 1 - math.Pow(10, -x)
			s.xs, s.ys = append(s.xs, x), append(s.ys, float64(h.Quantile(q)))
		}
		p.series = append(p.series, s)
		p.xMax = max(p.xMax, top)
	}
	add(res.Main, "main ("+res.Main.Mix.String()+")", colorP99, false)
	if res.Baseline != nil {
		add(res.Baseline, "baseline (health)", colorBaseP50, true)
	}
	p.xMax = max(math.Ceil(p.xMax), 2)
	for k := 0.0; k <= p.xMax; k++ {
		p.xTicks = append(p.xTicks, k)
	}
	p.xText = percentileLabel
	return p
}

// svgWriter builds an SVG document.
type svgWriter struct{ b strings.Builder }

// printf appends formatted markup (the caller escapes text with esc).
func (w *svgWriter) printf(format string, args ...any) { fmt.Fprintf(&w.b, format, args...) }

// esc escapes s for XML text and attribute values.
func esc(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// renderSVG draws the report's two latency plots as one self-contained SVG document.
func renderSVG(res *Result) string {
	w := &svgWriter{}
	height := titleHeight + 2*panelHeight
	w.printf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		plotWidth, height, plotWidth, height)
	w.printf(`<rect x="0" y="0" width="%d" height="%d" fill="white"/>`+"\n", plotWidth, height)
	c := res.Config
	loop := "closed loop"
	if c.openLoop() {
		loop = "open loop at " + fmtFloat(c.RateLimit) + " calls/s"
	}
	h := res.Main.AllHist()
	w.printf(`<text x="%d" y="22" font-size="16" font-weight="bold">%s</text>`+"\n", marginLeft,
		esc(fmt.Sprintf("limitbench: %s, %d callers, %s, leader %s", c.Mix, c.Concurrency, loop, res.Leader.ID)))
	sub := fmt.Sprintf("%s calls/s, %s decisions/s, %s errors; p50 %s, p99 %s, p99.9 %s, max %s; seed %d",
		fmtFloat(res.Main.perSecond(res.Main.TotalOps())), fmtFloat(res.Main.perSecond(res.Main.TotalDecisions())),
		fmtCount(res.Main.TotalErrors()), fmtLatency(h.Quantile(0.5)), fmtLatency(h.Quantile(0.99)),
		fmtLatency(h.Quantile(0.999)), fmtLatency(h.Max()), c.Seed)
	w.printf(`<text x="%d" y="42" fill="#444">%s</text>`+"\n", marginLeft, esc(sub))
	if res.Baseline != nil {
		r := ratios(res.Main, res.Baseline)
		bh := res.Baseline.AllHist()
		line := fmt.Sprintf("baseline (Health/Check): %s calls/s, p50 %s, p99 %s; main/baseline: %.2fx calls/s, %.2fx p99",
			fmtFloat(res.Baseline.perSecond(res.Baseline.TotalOps())), fmtLatency(bh.Quantile(0.5)), fmtLatency(bh.Quantile(0.99)), r.OpsPerSecond, r.P99)
		w.printf(`<text x="%d" y="60" fill="#444">%s</text>`+"\n", marginLeft, esc(line))
	}
	w.panel(timeSeriesPanel(res), titleHeight)
	w.panel(distributionPanel(res), titleHeight+panelHeight)
	w.printf("</svg>\n")
	return w.b.String()
}

// panel draws p with its top edge at y0.
func (w *svgWriter) panel(p panel, y0 int) {
	left, right := float64(marginLeft), float64(plotWidth-marginRight)
	top, bottom := float64(y0+marginTop), float64(y0+panelHeight-marginBot)
	w.printf(`<text x="%d" y="%d" font-size="13" font-weight="bold">%s</text>`+"\n", marginLeft, y0+marginTop-12, esc(p.title))

	// The y range: whole decades around every latency plotted.
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range p.series {
		for _, y := range s.ys {
			if y > 0 {
				lo, hi = min(lo, y), max(hi, y)
			}
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1e3, 1e6
	}
	dLo, dHi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dHi <= dLo {
		dHi = dLo + 1
	}
	xPix := func(x float64) float64 {
		if p.xMax <= p.xMin {
			return left
		}
		return left + (x-p.xMin)/(p.xMax-p.xMin)*(right-left)
	}
	yPix := func(v float64) float64 {
		return bottom - (math.Log10(v)-dLo)/(dHi-dLo)*(bottom-top)
	}

	// Grid and y labels: every decade, plus 2x and 5x when the range is narrow.
	for d := dLo; d <= dHi; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if d == dHi && m > 1 {
				break
			}
			y := yPix(v)
			if m == 1 {
				w.printf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ccc"/>`+"\n", left, y, right, y)
				w.printf(`<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y+4, esc(fmtAxis(v)))
			} else if dHi-dLo <= 3 {
				w.printf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", left, y, right, y)
				w.printf(`<text x="%.1f" y="%.1f" text-anchor="end" fill="#888" font-size="10">%s</text>`+"\n", left-6, y+3, esc(fmtAxis(v)))
			}
		}
	}
	for _, x := range p.xTicks {
		px := xPix(x)
		w.printf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", px, top, px, bottom)
		w.printf(`<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", px, bottom+16, esc(p.xText(x)))
	}
	w.printf(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", left, top, right-left, bottom-top)
	w.printf(`<text x="%.1f" y="%.1f" text-anchor="middle" fill="#444">%s</text>`+"\n", (left+right)/2, bottom+36, esc(p.xLabel))
	w.printf(`<text transform="translate(%d,%.1f) rotate(-90)" text-anchor="middle" fill="#444">latency</text>`+"\n", 16, (top+bottom)/2)

	// The series, then the legend.
	for _, s := range p.series {
		var pts []string
		for i := range s.xs {
			if s.ys[i] > 0 {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", xPix(s.xs[i]), yPix(s.ys[i])))
			}
		}
		if len(pts) == 0 {
			continue
		}
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="6,4"`
		}
		w.printf(`<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", s.color, dash, strings.Join(pts, " "))
		if p.dots && len(pts) <= 120 {
			for _, pt := range pts {
				x, y, _ := strings.Cut(pt, ",")
				w.printf(`<circle cx="%s" cy="%s" r="2.5" fill="%s"/>`+"\n", x, y, s.color)
			}
		}
	}
	// The legend, in one row under the axis label, outside the data.
	lx, ly := left, bottom+56
	for _, s := range p.series {
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="6,4"`
		}
		w.printf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", lx, ly-4, lx+24, ly-4, s.color, dash)
		w.printf(`<text x="%.1f" y="%.1f">%s</text>`+"\n", lx+30, ly, esc(s.name))
		lx += 30 + 7*float64(len(s.name)) + 24 // about 7 units per character at font-size 12
	}
}

// fmtAxis formats an axis value of v nanoseconds without needless digits: "100µs", "1ms", "20s".
func fmtAxis(v float64) string {
	switch {
	case v < 1e3:
		return fmt.Sprintf("%gns", v)
	case v < 1e6:
		return fmt.Sprintf("%gµs", v/1e3)
	case v < 1e9:
		return fmt.Sprintf("%gms", v/1e6)
	default:
		return fmt.Sprintf("%gs", v/1e9)
	}
}

// renderHTML wraps the SVG and the text report in a self-contained HTML page.
func renderHTML(res *Result) (string, error) {
	var rep strings.Builder
	if err := writeText(&rep, res); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>limitbench report</title>\n")
	b.WriteString("<style>body{font-family:sans-serif;margin:24px;color:#222}pre{background:#f6f6f6;padding:12px;overflow-x:auto}</style>\n</head>\n<body>\n")
	b.WriteString("<h1>limitbench report</h1>\n")
	b.WriteString(renderSVG(res))
	b.WriteString("<pre>")
	b.WriteString(html.EscapeString(rep.String()))
	b.WriteString("</pre>\n</body>\n</html>\n")
	return b.String(), nil
}

// writePlotFile writes the plots of res to path: an SVG, or an HTML page with the report.
func writePlotFile(path string, res *Result) error {
	format, err := plotFormat(path)
	if err != nil {
		return err
	}
	doc := renderSVG(res)
	if format == "html" {
		if doc, err = renderHTML(res); err != nil {
			return fmt.Errorf("render %s: %w", path, err)
		}
	}
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		return fmt.Errorf("write the plot: %w", err)
	}
	return nil
}
