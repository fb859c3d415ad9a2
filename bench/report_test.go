package bench

import (
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// value is one contender's figure.
type value struct {
	name string
	v    float64
}

// row is one measurement: the baseline (a direct connection) and the
// others, in the same run.
type row struct {
	section  string // Postgres, MySQL, SSH: one table each
	metric   string
	unit     string
	baseline float64
	// ratioBase, when set, is what the ratios are taken against instead
	// of baseline (the gateway CPU rows: PgBouncer's CPU, as direct
	// has no process in between).
	ratioBase    float64
	others       []value
	target       string
	higherBetter bool
	met          *bool
	note         string
	label        string // short name in the chart of throughput ratios
}

// judged is the contender issue 9's targets are set for: airlock with the
// R1 recorder. The R3 figures are reported beside it, without a target.
const judged = "airlock R1"

type report struct {
	started  time.Time
	host     []string
	rows     []row
	profiles []profile
}

// profile is a CPU or heap profile of a gateway and what it ran
// meanwhile; base, if set, is an earlier heap profile the report shows
// it against (what was added between the two).
type profile struct {
	path, what, base string
}

func (r *report) add(x row) {
	base := cmp.Or(x.ratioBase, x.baseline)
	if x.met == nil && base > 0 {
		for _, o := range x.others {
			if o.name != judged {
				continue
			}
			if want, ok := strings.CutPrefix(x.target, ">= "); ok {
				w, _ := strconv.ParseFloat(want, 64)
				x.met = metPtr(true, o.v/base >= w)
			} else if want, ok := strings.CutPrefix(x.target, "<= "); ok {
				w, _ := strconv.ParseFloat(want, 64)
				x.met = metPtr(true, o.v/base <= w)
			}
		}
	}
	r.rows = append(r.rows, x)
}

func (r *report) profile(path, what string) {
	r.profiles = append(r.profiles, profile{path: path, what: what})
}

// heapProfile adds a heap profile read against base.
func (r *report) heapProfile(path, base, what string) {
	r.profiles = append(r.profiles, profile{path: path, what: what, base: base})
}

// machine notes what the figures were measured on; natsServer is the
// cluster's nats-server binary, built from the module airlock R1 embeds.
func (r *report) machine(natsServer string) {
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
	version := func(name string, args ...string) string {
		out, _ := exec.Command(name, args...).CombinedOutput()
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	r.host = []string{
		fmt.Sprintf("%d CPUs: %s", runtime.NumCPU(), cpu),
		mem,
		"Linux " + strings.TrimSpace(string(kernel)) + ", " + runtime.Version(),
		strings.TrimSpace(string(pgv)),
		version("mariadbd", "--version"),
		version("ssh", "-V"),
		version(natsServer, "--version") + " (the R3 cluster's nodes; airlock R1 embeds the same version)",
	}
}

func (x row) ratio(v float64) string {
	base := cmp.Or(x.ratioBase, x.baseline)
	if base == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", v/base)
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

// table is a Markdown table per section, with a column and a ratio for
// each contender the section measured.
func (r *report) table() string {
	var sb strings.Builder
	for _, section := range r.sections() {
		var rows []row
		var contenders []string
		for _, x := range r.rows {
			if x.section != section {
				continue
			}
			rows = append(rows, x)
			for _, o := range x.others {
				if !slices.Contains(contenders, o.name) {
					contenders = append(contenders, o.name)
				}
			}
		}
		fmt.Fprintf(&sb, "## %s\n\n| measurement | unit | direct |", section)
		for _, c := range contenders {
			fmt.Fprintf(&sb, " %s | ratio |", c)
		}
		sb.WriteString(" target | met |\n|---|---|---|" + strings.Repeat("---|---|", len(contenders)) + "---|---|\n")
		for _, x := range rows {
			base := fmtv(x.baseline)
			if x.baseline == 0 {
				base = "-"
			}
			fmt.Fprintf(&sb, "| %s | %s | %s |", x.metric, x.unit, base)
			for _, c := range contenders {
				if v, ok := x.value(c); ok {
					fmt.Fprintf(&sb, " %s | %s |", fmtv(v), x.ratio(v))
				} else {
					sb.WriteString(" | |")
				}
			}
			met := ""
			if x.met != nil {
				met = map[bool]string{true: "yes", false: "**no**"}[*x.met]
			}
			target := x.target
			if x.note != "" {
				target = strings.TrimSpace(target + " (" + x.note + ")")
			}
			fmt.Fprintf(&sb, " %s | %s |\n", target, met)
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

// sections are the rows' sections in the order they were measured.
func (r *report) sections() []string {
	var s []string
	for _, x := range r.rows {
		if !slices.Contains(s, x.section) {
			s = append(s, x.section)
		}
	}
	return s
}

// value is contender name's figure in x.
func (x row) value(name string) (float64, bool) {
	for _, o := range x.others {
		if o.name == name {
			return o.v, true
		}
	}
	return 0, false
}

func (r *report) write(mdPath, pngPath string) error {
	var sb strings.Builder
	sb.WriteString("# Benchmarks\n\n")
	sb.WriteString("Written by `make bench` (bench/), which starts a throwaway PostgreSQL, PgBouncer (session pooling), MariaDB, OpenSSH sshd and an OpenSSH bastion in front of it (an sshd whose ForceCommand runs ssh to the first), a 3-node NATS JetStream cluster with the users and permissions of deploy/nats, and two airlock gateways in strict mode: **airlock R1** records to its embedded JetStream (one replica), **airlock R3** to the cluster with `replicas: 3`. It then measures every contender in the same run, rotating their order each round so machine drift cancels out. Ratios are to the direct connection of the same run: PostgreSQL, MariaDB or sshd itself; the gateway CPU rows' ratios are to PgBouncer's or the bastion's. Every contender uses TLS (or SSH) from the client. Targets (issues 9 and 20) are for airlock R1.\n\n")
	fmt.Fprintf(&sb, "Run %s on:\n\n", r.started.UTC().Format(time.RFC3339))
	for _, h := range r.host {
		if h != "" {
			fmt.Fprintf(&sb, "- %s\n", h)
		}
	}
	sb.WriteString("\n")
	sb.WriteString(r.table())
	sb.WriteString("![throughput ratios to direct](benchmarks.png)\n\n")
	sb.WriteString("## Where the gateway's time goes\n\n")
	sb.WriteString("CPU profiles of the gateway process (airlock R1 runs its embedded JetStream server in the same process; airlock R3's cluster runs in three other processes) are in [profiles/](profiles/); read them with `go tool pprof -top docs/profiles/FILE`. The heaviest functions, cumulative:\n\n")
	for _, prof := range r.profiles {
		args := []string{"tool", "pprof", "-top", "-cum", "-nodecount", "25"}
		if prof.base != "" {
			args = append(args, "-sample_index=inuse_space", "-diff_base", prof.base)
		}
		out, err := exec.Command("go", append(args, prof.path)...).Output()
		if err != nil {
			continue
		}
		fmt.Fprintf(&sb, "### %s\n\n%s.\n\n```\n%s```\n\n", filepath.Base(prof.path), prof.what, out)
	}
	if err := os.WriteFile(mdPath, []byte(sb.String()), 0o644); err != nil {
		return err
	}
	return r.chart(pngPath)
}

// chart draws the throughput ratios to direct: one group of bars per
// throughput row, one bar per contender.
func (r *report) chart(path string) error {
	var labels []string
	var contenders []string
	top := 1.45 // room for the legend above the direct line
	for _, x := range r.rows {
		if x.higherBetter && x.baseline != 0 {
			for _, o := range x.others {
				if !slices.Contains(contenders, o.name) {
					contenders = append(contenders, o.name)
				}
				top = max(top, o.v/x.baseline*1.1)
			}
		}
	}
	series := map[string]plotter.Values{}
	var targets []float64 // per group; 0: none
	for _, x := range r.rows {
		if !x.higherBetter || x.baseline == 0 {
			continue
		}
		labels = append(labels, cmp.Or(x.label, x.metric))
		for _, name := range contenders {
			v, _ := x.value(name) // 0, no bar, when x did not measure it
			series[name] = append(series[name], v/x.baseline)
		}
		want, _ := strconv.ParseFloat(strings.TrimPrefix(x.target, ">= "), 64)
		targets = append(targets, want)
	}
	if len(labels) == 0 {
		return nil // a partial run (AIRLOCK_BENCH_ONLY) measured no throughput
	}
	p := plot.New()
	p.Title.Text = "Throughput relative to a direct connection (same run; higher is better)"
	p.Y.Label.Text = "ratio to direct"
	p.Y.Min, p.Y.Max = 0, top
	var ticks plot.ConstantTicks
	for i := 0; float64(i)*0.2 <= top; i++ {
		ticks = append(ticks, plot.Tick{Value: float64(i) * 0.2, Label: fmt.Sprintf("%.1f", float64(i)*0.2)})
	}
	p.Y.Tick.Marker = ticks
	w := vg.Points(14)
	var offsets []vg.Length // of each contender's bars from the group's centre
	for i, name := range contenders {
		bars, err := plotter.NewBarChart(series[name], w)
		if err != nil {
			return err
		}
		bars.Color = plotutil.Color(i)
		bars.LineStyle.Width = 0
		bars.Offset = w * vg.Length(float64(i)-float64(len(contenders)-1)/2)
		p.Add(bars)
		p.Legend.Add(name, bars)
		offsets = append(offsets, bars.Offset)
	}
	legend := true
	for i, want := range targets {
		if want == 0 {
			continue
		}
		mark, err := plotter.NewLine(plotter.XYs{{X: float64(i) - 0.35, Y: want}, {X: float64(i) + 0.35, Y: want}})
		if err != nil {
			return err
		}
		mark.Width = vg.Points(2)
		p.Add(mark)
		if legend {
			p.Legend.Add("target for "+judged, mark)
			legend = false
		}
	}
	line, err := plotter.NewLine(plotter.XYs{{X: -0.5, Y: 1}, {X: float64(len(labels)) - 0.5, Y: 1}})
	if err != nil {
		return err
	}
	line.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(line)
	p.Legend.Add("direct", line)
	// The values last, over the target marks.
	for i, name := range contenders {
		if err := addValueLabels(p, series[name], offsets[i]); err != nil {
			return err
		}
	}
	p.Legend.Top = true
	p.NominalX(labels...)
	p.X.Tick.Label.Rotation = 0.35
	p.X.Tick.Label.XAlign, p.X.Tick.Label.YAlign = draw.XRight, draw.YCenter
	return p.Save(12*vg.Inch, 5.5*vg.Inch, path)
}

// addValueLabels writes each bar's ratio above it, the bars drawn offset
// from their group's centre.
func addValueLabels(p *plot.Plot, vs plotter.Values, offset vg.Length) error {
	var xyl plotter.XYLabels
	for i, v := range vs {
		if v == 0 {
			continue
		}
		xyl.XYs = append(xyl.XYs, plotter.XY{X: float64(i), Y: v})
		xyl.Labels = append(xyl.Labels, fmt.Sprintf("%.2f", v))
	}
	if len(xyl.XYs) == 0 {
		return nil
	}
	l, err := plotter.NewLabels(xyl)
	if err != nil {
		return err
	}
	for i := range l.TextStyle {
		l.TextStyle[i].Font.Size = vg.Points(7)
		l.TextStyle[i].XAlign = draw.XCenter
	}
	l.Offset = vg.Point{X: offset, Y: vg.Points(2)}
	p.Add(l)
	return nil
}
