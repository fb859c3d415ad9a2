package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// value is one contender's figure.
type value struct {
	name string
	v    float64
}

// row is one measurement: the baseline (a direct connection) and the
// others, in the same run.
type row struct {
	section      string
	metric       string
	unit         string
	baseline     float64
	others       []value
	target       string
	higherBetter bool
	met          *bool
	note         string
}

type report struct {
	started  time.Time
	host     []string
	rows     []row
	profiles []string
}

func (r *report) add(x row) {
	if x.met == nil && strings.HasPrefix(x.target, ">= ") {
		want, _ := strconv.ParseFloat(strings.TrimPrefix(x.target, ">= "), 64)
		for _, o := range x.others {
			if strings.HasPrefix(o.name, "airlock") && x.baseline > 0 {
				ok := o.v/x.baseline >= want
				x.met = &ok
			}
		}
	}
	r.rows = append(r.rows, x)
}

// machine notes what the figures were measured on.
func (r *report) machine() {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
	}
	kernel, _ := exec.Command("uname", "-r").Output()
	pgv, _ := exec.Command("pgbench", "--version").Output()
	r.host = []string{
		fmt.Sprintf("%d CPUs: %s", runtime.NumCPU(), cpu),
		mem,
		"Linux " + strings.TrimSpace(string(kernel)) + ", " + runtime.Version(),
		strings.TrimSpace(string(pgv)),
	}
}

func (x row) ratio(v float64) string {
	if x.baseline == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", v/x.baseline)
}

func fmtv(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// table is the Markdown table of every figure.
func (r *report) table() string {
	var sb strings.Builder
	sb.WriteString("| measurement | unit | direct | pgbouncer | ratio | airlock | ratio | target | met |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.rows {
		cells := map[string]float64{}
		for _, o := range x.others {
			cells[strings.Fields(o.name)[0]] = o.v
		}
		col := func(name string) (string, string) {
			v, ok := cells[name]
			if !ok {
				return "", ""
			}
			return fmtv(v), x.ratio(v)
		}
		pv, pr := col("pgbouncer")
		av, ar := col("airlock")
		base := fmtv(x.baseline)
		if x.baseline == 0 {
			base = "-"
		}
		met := ""
		if x.met != nil {
			met = map[bool]string{true: "yes", false: "**no**"}[*x.met]
		}
		target := x.target
		if x.note != "" {
			target = strings.TrimSpace(target + " (" + x.note + ")")
		}
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", x.metric, x.unit, base, pv, pr, av, ar, target, met)
	}
	return sb.String()
}

func (r *report) write(mdPath, pngPath string) error {
	var sb strings.Builder
	sb.WriteString("# Benchmarks\n\n")
	sb.WriteString("Written by `make bench` (bench/), which starts a throwaway PostgreSQL, PgBouncer (session pooling) and the airlock gateway (strict recording to its embedded JetStream, R1), then measures every contender in the same run, rotating their order each round so machine drift cancels out. Ratios are to the direct connection of the same run. Every contender uses TLS from the client.\n\n")
	fmt.Fprintf(&sb, "Run %s on:\n\n", r.started.UTC().Format(time.RFC3339))
	for _, h := range r.host {
		if h != "" {
			fmt.Fprintf(&sb, "- %s\n", h)
		}
	}
	sb.WriteString("\n")
	sb.WriteString(r.table())
	sb.WriteString("\n![ratios to direct](benchmarks.png)\n\n")
	sb.WriteString("## Where the gateway's time goes\n\n")
	sb.WriteString("CPU profiles of the gateway (and its embedded JetStream server, which runs in the same process) during pgbench at 8 clients are in [profiles/](profiles/); read them with `go tool pprof -top docs/profiles/FILE`. The heaviest functions, cumulative:\n\n")
	for _, prof := range r.profiles {
		out, err := exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount", "25", prof).Output()
		if err != nil {
			continue
		}
		fmt.Fprintf(&sb, "### %s\n\n```\n%s```\n\n", filepath.Base(prof), out)
	}
	if err := os.WriteFile(mdPath, []byte(sb.String()), 0o644); err != nil {
		return err
	}
	return r.chart(pngPath)
}

// chart draws the throughput ratios to direct.
func (r *report) chart(path string) error {
	var labels []string
	series := map[string]plotter.Values{}
	for _, x := range r.rows {
		if !x.higherBetter || x.baseline == 0 {
			continue
		}
		labels = append(labels, strings.NewReplacer("pgbench -S, ", "", " client(s)", "c", ": TPS", "", "1 GiB result, throughput", "1 GiB result").Replace(x.metric))
		for _, name := range []string{"pgbouncer", "airlock"} {
			v := 0.0
			for _, o := range x.others {
				if strings.HasPrefix(o.name, name) {
					v = o.v / x.baseline
				}
			}
			series[name] = append(series[name], v)
		}
	}
	p := plot.New()
	p.Title.Text = "Throughput relative to a direct connection (same run)"
	p.Y.Label.Text = "ratio to direct"
	p.Y.Min, p.Y.Max = 0, 1.2
	w := vg.Points(18)
	for i, name := range []string{"pgbouncer", "airlock"} {
		bars, err := plotter.NewBarChart(series[name], w)
		if err != nil {
			return err
		}
		bars.Color = plotutil.Color(i)
		bars.Offset = vg.Points(float64(i*2-1) * 9)
		p.Add(bars)
		p.Legend.Add(name, bars)
	}
	line, err := plotter.NewLine(plotter.XYs{{X: -0.5, Y: 1}, {X: float64(len(labels)) - 0.5, Y: 1}})
	if err != nil {
		return err
	}
	p.Add(line)
	p.Legend.Top = true
	p.NominalX(labels...)
	return p.Save(11*vg.Inch, 5*vg.Inch, path)
}
