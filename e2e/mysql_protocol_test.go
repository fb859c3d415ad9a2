package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/client"
	"github.com/go-sql-driver/mysql"

	"github.com/airlockhq/airlock/recorder"
)

// mysqlRaw connects with go-mysql's client (TLS, caching_sha2_password)
// for tests that send protocol commands no driver exposes.
func (g *gateway) mysqlRaw(user, token string) *gomysql.Conn {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := gomysql.ConnectWithDialer(ctx, "tcp", g.MySQLAddr, user, token, "shop-mysql", d.DialContext, func(c *gomysql.Conn) error {
		c.SetTLSConfig(&tls.Config{InsecureSkipVerify: true})
		return nil
	})
	if err != nil {
		g.t.Fatalf("go-mysql client through airlock: %v", err)
	}
	g.t.Cleanup(func() { c.Close() })
	return c
}

// command sends one command packet and returns the first packet of the
// answer.
func command(t *testing.T, c *gomysql.Conn, payload ...byte) []byte {
	t.Helper()
	c.ResetSequence()
	if err := c.WritePacket(append([]byte{0, 0, 0, 0}, payload...)); err != nil {
		t.Fatalf("writing command 0x%02x: %v", payload[0], err)
	}
	p, err := c.ReadPacket()
	if err != nil {
		t.Fatalf("reading the answer to command 0x%02x: %v", payload[0], err)
	}
	return p
}

// errOf decodes an ERR packet: code and message; code 0 when p is not one.
func errOf(p []byte) (uint16, string) {
	if len(p) < 9 || p[0] != 0xff {
		return 0, ""
	}
	return binary.LittleEndian.Uint16(p[1:]), string(p[9:])
}

// TestMySQLCommands: the protocol commands beside COM_QUERY, each allowed
// or refused as the issue says, on one connection that stays usable.
func TestMySQLCommands(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true})
	iss := g.grantMySQL("agent-1", "INC-60: commands", "read")
	c := g.mysqlRaw("agent-1", iss.Token)

	step := time.Now()
	lap := func(what string) {
		if d := time.Since(step); d > 2*time.Second {
			t.Errorf("%s took %v", what, d)
		}
		step = time.Now()
	}
	defer lap("the rest")
	if err := c.Ping(); err != nil {
		t.Fatalf("COM_PING: %v", err)
	}
	if err := c.UseDB("shop-mysql"); err != nil {
		t.Fatalf("COM_INIT_DB into the resource's name: %v", err)
	}
	if err := c.UseDB("app"); err != nil {
		t.Fatalf("COM_INIT_DB into the resource's database: %v", err)
	}
	if err := c.UseDB("mysql"); err == nil || !strings.Contains(err.Error(), "1044") {
		t.Fatalf("COM_INIT_DB into another database: %v", err)
	}
	lap("ping and COM_INIT_DB")
	fields, err := c.FieldList("orders", "")
	if err != nil || len(fields) != 5 {
		t.Fatalf("COM_FIELD_LIST orders: %d fields, %v", len(fields), err)
	}
	lap("COM_FIELD_LIST")
	if p := command(t, c, 0x09); len(p) == 0 || p[0] == 0xff || !strings.Contains(string(p), "Uptime") {
		t.Fatalf("COM_STATISTICS answered %q", p)
	}
	for _, cmd := range []struct {
		name    string
		payload []byte
		code    uint16
		want    string
	}{
		{"COM_CHANGE_USER", append([]byte{0x11}, "root\x00\x00app\x00"...), 1045, "changing the user is not allowed"},
		{"COM_BINLOG_DUMP", []byte{0x12, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0}, 1227, "replication and binary log commands are not allowed"},
		{"COM_REGISTER_SLAVE", []byte{0x15, 1, 0, 0, 0}, 1227, "replication and binary log commands are not allowed"},
		{"COM_PROCESS_KILL", []byte{0x0c, 1, 0, 0, 0}, 1094, "Unknown thread id: 1 (airlock: no session of grant"},
		{"COM_SHUTDOWN", []byte{0x08, 0}, 1227, "not allowed through airlock"},
		{"unknown command", []byte{0x7a}, 1047, "not a MySQL protocol command"},
	} {
		lap("before " + cmd.name)
		code, msg := errOf(command(t, c, cmd.payload...))
		if code != cmd.code || !strings.Contains(msg, cmd.want) {
			t.Errorf("%s: error %d %q, want %d with %q", cmd.name, code, msg, cmd.code, cmd.want)
		}
	}
	lap("refused commands")
	if p := command(t, c, 0x1f); len(p) == 0 || p[0] != 0x00 {
		t.Errorf("COM_RESET_CONNECTION answered %q", p)
	}
	r, err := c.Execute("select count(*) from orders")
	if err != nil {
		t.Fatalf("the connection is not usable after refusals: %v", err)
	}
	if n, _ := r.GetInt(0, 0); n != 200 {
		t.Errorf("count after refusals: %d", n)
	}
	c.Close()

	evs := g.sessionEvents(iss.Grant.ID)
	if len(evs) != 1 {
		t.Fatalf("%d sessions, want 1", len(evs))
	}
	var decided []string
	for _, e := range evs[0] {
		if st := e.Statement; st != nil {
			decided = append(decided, st.Decision+":"+st.Class.Kind)
		}
	}
	want := "allow:USE allow:USE deny:USE allow:SHOW allow:STATISTICS deny:CHANGE USER deny:REPLICATION deny:REPLICATION deny:KILL CONNECTION deny:COMMAND deny:UNKNOWN COMMAND allow:SELECT"
	if got := strings.Join(decided, " "); got != want {
		t.Errorf("recorded decisions:\n got %s\nwant %s", got, want)
	}
}

// TestMySQLMultiResults: multi-statement messages (all or nothing), a
// procedure with two result sets, warnings, and LOAD DATA LOCAL INFILE
// with and without the grant's file-load permission.
func TestMySQLMultiResults(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true})
	g.my.Exec(t, "CREATE PROCEDURE two_results() BEGIN SELECT 1 AS a; SELECT 2 AS b, 3 AS c; END")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	read := g.grantMySQL("agent-1", "INC-61: read", "read")
	db := g.mysqlDB("agent-1", read.Token, func(c *mysql.Config) { c.MultiStatements = true })
	rows, err := db.QueryContext(ctx, "select 1; select 'two', 2")
	if err != nil {
		t.Fatal(err)
	}
	sets := 0
	for {
		for rows.Next() {
		}
		sets++
		if !rows.NextResultSet() {
			break
		}
	}
	rows.Close()
	if sets != 2 {
		t.Errorf("multi-statement select gave %d result sets", sets)
	}
	_, err = db.ExecContext(ctx, "select 1; delete from orders where id = 1")
	var me *mysql.MySQLError
	if !errors.As(err, &me) || me.Number != 1142 || !strings.Contains(me.Message, "statement 2 of 2 refused") {
		t.Fatalf("multi-statement with a refused delete: %v", err)
	}
	if n := g.my.QueryInt(t, "select count(*) from orders"); n != 200 {
		t.Fatalf("%d orders upstream after a refused message, want 200", n)
	}

	admin := g.grantMySQL("agent-1", "INC-61: call", "admin")
	adb := g.mysqlDB("agent-1", admin.Token)
	rows, err = adb.QueryContext(ctx, "call two_results()")
	if err != nil {
		t.Fatalf("call: %v", err)
	}
	var got []string
	for {
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("%s=%v", strings.Join(cols, ","), vals))
		}
		if !rows.NextResultSet() {
			break
		}
	}
	rows.Close()
	if strings.Join(got, " ") != "a=[1] b,c=[2 3]" {
		t.Errorf("call returned %q", got)
	}
	if _, err := adb.ExecContext(ctx, "select cast('x' as signed)"); err != nil {
		t.Errorf("a statement with a warning: %v", err)
	}

	// LOAD DATA LOCAL INFILE: refused without the grant's permission, run
	// and measured with it.
	csv := t.TempDir() + "/customers.csv"
	if err := os.WriteFile(csv, []byte("Loaded One,loaded1@example.com\nLoaded Two,loaded2@example.com\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	load := fmt.Sprintf("load data local infile '%s' into table customers fields terminated by ',' (name, email);\n", csv)
	write := g.grantMySQL("agent-1", "INC-61: load", "write")
	out, err := g.mysqlCLI("agent-1", write.Token, "shop-mysql", load, "--local-infile=1")
	if err == nil || !strings.Contains(out, "1142") {
		t.Errorf("load data without --allow-file-load: err=%v\n%s", err, out)
	}
	files := g.grantMySQL("agent-1", "INC-61: load files", "write", "--allow-file-load")
	out, err = g.mysqlCLI("agent-1", files.Token, "shop-mysql", load, "--local-infile=1")
	if err != nil {
		t.Fatalf("load data with --allow-file-load: %v\n%s", err, out)
	}
	if n := g.my.QueryInt(t, "select count(*) from customers where email like 'loaded%'"); n != 2 {
		t.Fatalf("%d loaded customers upstream, want 2", n)
	}
	var fileBytes int64
	for _, evs := range g.sessionEvents(files.Grant.ID) {
		for _, e := range evs {
			for _, r := range e.Outcomes() {
				if r.FileBytes > 0 {
					fileBytes = r.FileBytes
				}
			}
		}
	}
	if fileBytes != 62 {
		t.Errorf("recorded file size %d, want 62", fileBytes)
	}
	var callRows int64 = -1
	for _, evs := range g.sessionEvents(admin.Grant.ID) {
		ids := map[uint64]bool{}
		for _, e := range evs {
			if e.Statement != nil && strings.HasPrefix(e.Statement.Text, "call") {
				ids[e.Statement.ID] = true
			}
			for _, r := range e.Outcomes() {
				if ids[r.ID] && r.Rows != nil {
					callRows = *r.Rows
				}
			}
		}
	}
	if callRows != 2 {
		t.Errorf("call recorded with %d rows, want 2 (both result sets)", callRows)
	}
}

// TestMySQLRecorderDown: with NATS stopped, a write is refused with the
// recording error and does not run; once NATS is back the same connection
// carries on.
func TestMySQLRecorderDown(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true, PublishTimeout: 500 * time.Millisecond})
	iss := g.grantMySQL("agent-1", "INC-62: fix a customer", "write")
	db := g.mysqlDB("agent-1", iss.Token)
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	n := 0
	insert := func() error {
		n++
		_, err := db.ExecContext(ctx, "insert into customers (name, email) values (?, ?)", "Ada", fmt.Sprintf("ada%d@example.com", n))
		return err
	}
	if err := insert(); err != nil {
		t.Fatalf("insert with the recorder up: %v", err)
	}
	before := g.my.QueryInt(t, "select count(*) from customers")

	g.nats.Stop(t)
	start := time.Now()
	err := insert()
	var me *mysql.MySQLError
	if !errors.As(err, &me) || !strings.Contains(me.Message, "recording unavailable") || me.Number != 1205 || string(me.SQLState[:]) != "HY000" {
		t.Fatalf("insert with the recorder down: %v, want error 1205 (HY000)", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("refusal took %v", took)
	}
	if got := g.my.QueryInt(t, "select count(*) from customers"); got != before {
		t.Fatalf("insert ran unrecorded: %d customers, want %d", got, before)
	}

	g.nats.Start(t)
	g.WaitReady()
	if err := insert(); err != nil {
		t.Fatalf("insert after the recorder returned, same connection: %v", err)
	}
	if got := g.my.QueryInt(t, "select count(*) from customers"); got != before+1 {
		t.Fatalf("%d customers after recovery, want %d", got, before+1)
	}
	db.Close()

	var found bool
	for _, evs := range g.sessionEvents(iss.Grant.ID) {
		notExecuted := map[uint64]bool{}
		for _, e := range evs {
			for _, r := range e.Outcomes() {
				if !r.Executed {
					notExecuted[r.ID] = true
				}
			}
		}
		for _, e := range evs {
			if st := e.Statement; st != nil && len(st.Params) == 2 && st.Params[1].Value == "ada2@example.com" {
				found = st.Decision == "deny" || notExecuted[st.ID]
			}
		}
	}
	if !found {
		t.Errorf("the refused insert is not in the record")
	}
}

// TestMySQLRevocation: revoking the grant ends a live connection within a
// second and tells the client why.
func TestMySQLRevocation(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true})
	iss := g.grantMySQL("agent-1", "INC-63: revoke me", "read")
	c := g.mysqlRaw("agent-1", iss.Token)
	if _, err := c.Execute("select 1"); err != nil {
		t.Fatal(err)
	}
	raw := c.Conn.Conn
	g.MustCLI("alice", "grants", "revoke", iss.Grant.ID)
	revoked := time.Now()
	_ = raw.SetReadDeadline(time.Now().Add(3 * time.Second))
	rest, err := io.ReadAll(raw)
	if elapsed := time.Since(revoked); err != nil || elapsed > time.Second {
		t.Fatalf("live connection after revoke: closed after %v, err %v", elapsed, err)
	}
	if !strings.Contains(string(rest), "revoked by alice") {
		t.Errorf("client was not told why: %q", rest)
	}
	if out, err := g.mysqlCLI("agent-1", iss.Token, "shop-mysql", "select 1;\n"); err == nil || !strings.Contains(out, "revoked") {
		t.Fatalf("revoked token connects: %v\n%s", err, out)
	}
}

// TestMySQLMalformed: malformed, truncated and oversized packets over a
// raw socket get an error and a closed connection; the gateway keeps
// serving, and each attempt is recorded.
func TestMySQLMalformed(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true})
	iss := g.grantMySQL("agent-1", "INC-64: fuzz it", "read")

	// Before authentication: over plain TCP, the handshake response.
	for _, c := range []struct {
		name string
		send []byte
		want uint16
	}{
		{"claimed length with nothing behind", []byte{0xff, 0xff, 0xff, 1, 'x'}, 1153},
		{"truncated", []byte{200, 0, 0, 1, 'x'}, 1043},
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: airlock\r\n\r\n"), 1043},
		{"oversized", append([]byte{0xff, 0xff, 0xff, 1}, make([]byte, 70000)...), 1153},
		{"not protocol 4.1", append([]byte{33, 0, 0, 1}, make([]byte, 33)...), 1043},
	} {
		nc, err := net.Dial("tcp", g.MySQLAddr)
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(nc)
		if _, err := readRawPacket(r); err != nil {
			t.Fatalf("%s: no greeting: %v", c.name, err)
		}
		_, _ = nc.Write(c.send)
		_ = nc.(*net.TCPConn).CloseWrite()
		p, err := readRawPacket(r)
		if code, _ := errOf(p); err != nil || code != c.want {
			t.Errorf("%s: answer %q (%v), want error %d", c.name, p, err, c.want)
		}
		if _, err := r.ReadByte(); err == nil {
			t.Errorf("%s: connection not closed", c.name)
		}
		nc.Close()
	}

	// After authentication, inside TLS.
	for _, c := range []struct {
		name string
		send func(net.Conn)
		want uint16
	}{
		{"wrong sequence id", func(nc net.Conn) { _, _ = nc.Write([]byte{9, 0, 0, 5, 3, 's', 'e', 'l', 'e', 'c', 't', ' ', '1'}) }, 1156},
		{"empty command", func(nc net.Conn) { _, _ = nc.Write([]byte{0, 0, 0, 0}) }, 1047},
		{"truncated", func(nc net.Conn) {
			_, _ = nc.Write([]byte{100, 0, 0, 0, 3, 's', 'e', 'l'})
			_ = nc.(*tls.Conn).CloseWrite()
		}, 1158},
		{"malformed execute", func(nc net.Conn) { _, _ = nc.Write([]byte{3, 0, 0, 0, 0x17, 1, 0}) }, 1158},
		// A command over recorder.max_statement_bytes is no violation: it
		// is refused with 1153 on a session that goes on
		// (TestStatementCap); one that stops arriving midway ends after
		// limits.message_timeout (TestMessageStall).
	} {
		conn := g.mysqlRaw("agent-1", iss.Token)
		nc := conn.Conn.Conn
		_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
		go c.send(nc)
		r := bufio.NewReader(nc)
		p, err := readRawPacket(r)
		if code, msg := errOf(p); err != nil || code != c.want || !strings.Contains(msg, "protocol violation") {
			t.Errorf("%s: answer %q (%v), want error %d", c.name, p, err, c.want)
		}
		if _, err := r.ReadByte(); err == nil {
			t.Errorf("%s: connection not closed", c.name)
		}
	}

	// The gateway still serves, and every attempt is in the record.
	out, err := g.mysqlCLI("agent-1", iss.Token, "shop-mysql", "select 'still serving';\n", "-N", "-B")
	if err != nil || strings.TrimSpace(out) != "still serving" {
		t.Fatalf("after the malformed attempts: %v\n%s", err, out)
	}
	var list []recorder.Summary
	g.CLIJSON(&list, "rita", "sessions", "list")
	authFailed := 0
	for _, s := range list {
		if s.Status == "auth.failed" && s.Protocol == "mysql" {
			authFailed++
		}
	}
	if authFailed < 5 {
		t.Errorf("%d refused handshakes recorded, want 5", authFailed)
	}
	violations := 0
	for _, evs := range g.sessionEvents(iss.Grant.ID) {
		for _, e := range evs {
			if e.Statement != nil && e.Statement.Rule == "protocol" && e.Statement.Decision == "deny" {
				violations++
			}
		}
	}
	if violations != 4 {
		t.Errorf("%d protocol violations recorded, want 4", violations)
	}
}

func readRawPacket(r *bufio.Reader) ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	p := make([]byte, int(h[0])|int(h[1])<<8|int(h[2])<<16)
	_, err := io.ReadFull(r, p)
	return p, err
}

// TestMySQLLargeResult: a result of more than 1 GiB streams through the
// gateway with its memory growing by less than 50 MB, and a row larger
// than one packet (16 MiB) arrives whole.
func TestMySQLLargeResult(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc to read the gateway's memory")
	}
	g := startGateway(t, gatewayOptions{MySQL: true})
	iss := g.grantMySQL("agent-1", "INC-65: export", "read")
	db := g.mysqlDB("agent-1", iss.Token)
	db.SetMaxOpenConns(1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	var big string
	if err := db.QueryRowContext(ctx, "select repeat('y', 20 * 1024 * 1024)").Scan(&big); err != nil || len(big) != 20<<20 {
		t.Fatalf("a 20 MiB value: %d bytes, %v", len(big), err)
	}
	big = ""

	pid := g.PID()
	// Reset the peak so VmHWM measures this query alone (Linux 4.0+).
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	before := procKB(t, pid, "VmRSS")
	const rows = 1 << 20
	start := time.Now()
	r, err := db.QueryContext(ctx, fmt.Sprintf("select seq, repeat('x', 1024) from seq_1_to_%d", rows))
	if err != nil {
		t.Fatal(err)
	}
	var n, total int64
	var id int64
	var payload sql.RawBytes
	for r.Next() {
		if err := r.Scan(&id, &payload); err != nil {
			t.Fatal(err)
		}
		n++
		total += int64(len(payload))
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	elapsed := time.Since(start)
	peak := procKB(t, pid, "VmHWM")
	growth := peak - before
	t.Logf("streamed %d rows, %d MiB of values in %v; gateway VmRSS before %d KiB, VmHWM during %d KiB, growth %.1f MB",
		n, total>>20, elapsed.Round(time.Millisecond), before, peak, float64(growth)*1024/1e6)
	if n != rows || total < 1<<30 {
		t.Fatalf("got %d rows, %d bytes", n, total)
	}
	if growth*1024 > 50e6 {
		t.Errorf("gateway memory grew by %.1f MB streaming 1 GiB, want under 50 MB", float64(growth)*1024/1e6)
	}
}

// procKB reads a "Key: N kB" line of /proc/PID/status.
func procKB(t *testing.T, pid int, key string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return 0
}

// TestMySQLOutcomeUnknown: a statement whose upstream connection dies
// while it runs is on record as executed with its outcome unknown, not as
// never executed.
func TestMySQLOutcomeUnknown(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true})
	iss := g.grantMySQL("agent-1", "INC-62: a report cut short", "write")
	c := g.mysqlRaw("agent-1", iss.Token)
	done := make(chan error, 1)
	go func() {
		_, err := c.Execute("select sleep(30)")
		done <- err
	}()
	var thread int64
	for deadline := time.Now().Add(10 * time.Second); thread == 0; time.Sleep(20 * time.Millisecond) {
		thread = g.my.QueryInt(t, "select coalesce(max(id), 0) from information_schema.processlist where info = 'select sleep(30)'")
		if thread == 0 && time.Now().After(deadline) {
			t.Fatal("the statement never started upstream")
		}
	}
	g.my.Exec(t, fmt.Sprintf("KILL CONNECTION %d", thread))
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the statement succeeded although its upstream connection was killed")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the client still waits 15s after its upstream connection was killed")
	}
	var found *recorder.Result
	for deadline := time.Now().Add(15 * time.Second); found == nil; time.Sleep(200 * time.Millisecond) {
		for _, evs := range g.sessionEvents(iss.Grant.ID) {
			var id uint64
			for _, e := range evs {
				if e.Statement != nil && e.Statement.Text == "select sleep(30)" {
					id = e.Statement.ID
				}
				for _, r := range e.Outcomes() {
					if id != 0 && r.ID == id {
						found = r
					}
				}
			}
		}
		if found == nil && time.Now().After(deadline) {
			t.Fatal("no outcome on record for the interrupted statement")
		}
	}
	if !found.Executed || !strings.HasPrefix(found.Error, "outcome unknown:") {
		t.Fatalf("outcome of the interrupted statement: %+v", found)
	}
}
