package e2e

import (
	"strings"
	"testing"
)

// mysqlRoutinesScript creates, with the mysql client's DELIMITER (which
// never reaches the server), a procedure with a cursor, a handler, a
// labelled loop and DO; one with SIGNAL, RESIGNAL and WHILE; a function
// and a trigger; then calls and uses them.
const mysqlRoutinesScript = `DELIMITER //
CREATE PROCEDURE count_upto(IN max_id INT, OUT n INT)
BEGIN
  DECLARE done INT DEFAULT FALSE;
  DECLARE oid INT;
  DECLARE c CURSOR FOR SELECT id FROM orders WHERE id <= max_id ORDER BY id;
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = TRUE;
  SET n = 0;
  OPEN c;
  scan: LOOP
    FETCH c INTO oid;
    IF done THEN LEAVE scan; END IF;
    SET n = n + 1;
  END LOOP scan;
  CLOSE c;
  DO SLEEP(0);
END//
CREATE PROCEDURE guard(IN id INT)
BEGIN
  DECLARE EXIT HANDLER FOR SQLSTATE '45000' BEGIN RESIGNAL; END;
  IF id < 0 THEN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'negative id';
  END IF;
  WHILE id > 1 DO SET id = id - 1; END WHILE;
  SELECT status AS guarded FROM orders WHERE orders.id = id;
END//
CREATE FUNCTION customer_total(cid INT) RETURNS DECIMAL(10, 2) READS SQL DATA
BEGIN
  DECLARE t DECIMAL(10, 2);
  SELECT COALESCE(SUM(amount), 0) INTO t FROM orders WHERE customer_id = cid;
  RETURN t;
END//
CREATE TRIGGER orders_status BEFORE UPDATE ON orders FOR EACH ROW
BEGIN
  IF NEW.status = '' THEN SET NEW.status = 'new'; END IF;
END//
DELIMITER ;
CALL count_upto(10, @n);
SELECT @n AS counted;
CALL guard(3);
SELECT customer_total(1) > 0 AS has_total;
UPDATE orders SET status = '' WHERE id = 7;
CALL guard(-1);
SELECT 'after the signal' AS marker;
`

// TestMySQLRoutines: stored routines whose bodies use compound-statement
// syntax are read and authorized, not refused as unparseable: created
// and called with the real mysql client under a ddl grant; the same
// refused under a write grant; a body statement the grant does not allow
// refuses the routine; a CALL is decided by what the procedure runs.
func TestMySQLRoutines(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true})
	ddl := g.grantMySQL("agent-1", "INC-72: reporting procedures", "ddl")
	write := g.grantMySQL("agent-1", "INC-72: fix orders", "write")

	// Under write, creating a routine is refused with the rule and
	// reason, and nothing is created.
	out, err := g.mysqlCLI("agent-1", write.Token, "shop-mysql", mysqlRoutinesScript, "-N", "-B")
	if err == nil || !strings.Contains(out, "ERROR 1142 (42000)") || !strings.Contains(out, "CREATE PROCEDURE requires ddl access") {
		t.Fatalf("creating a procedure under write: %v\n%s", err, out)
	}
	if n := g.my.QueryInt(t, "select count(*) from information_schema.routines where routine_schema = 'app'"); n != 0 {
		t.Fatalf("%d routines exist after a refused CREATE", n)
	}

	out, err = g.mysqlCLI("agent-1", ddl.Token, "shop-mysql", mysqlRoutinesScript, "-N", "-B", "--force")
	for _, want := range []string{"10\n", "paid\n", "1\n", "ERROR 1644 (45000)", "negative id", "after the signal"} {
		if !strings.Contains(out, want) {
			t.Errorf("the routine script under ddl lacks %q (err %v):\n%s", want, err, out)
		}
	}
	if strings.Contains(out, "1142") || strings.Contains(out, "1064") {
		t.Errorf("the routine script under ddl was refused:\n%s", out)
	}
	if n := g.my.QueryInt(t, "select count(*) from information_schema.routines where routine_schema = 'app'"); n != 3 {
		t.Errorf("%d routines upstream, want 3", n)
	}
	if s := g.my.QueryString(t, "select status from orders where id = 7"); s != "new" {
		t.Errorf("the trigger did not run: status %q", s)
	}

	// A body statement the grant does not allow refuses the routine:
	// DROP TABLE without --allow-drop.
	out, err = g.mysqlCLI("agent-1", ddl.Token, "shop-mysql", "DELIMITER //\nCREATE PROCEDURE wipe()\nBEGIN\n  DROP TABLE customers;\nEND//\n")
	if err == nil || !strings.Contains(out, "ERROR 1142 (42000)") || !strings.Contains(out, "DROP TABLE drops a table") || !strings.Contains(out, "--allow-drop") {
		t.Fatalf("a procedure that drops a table, without --allow-drop: %v\n%s", err, out)
	}
	if n := g.my.QueryInt(t, "select count(*) from information_schema.routines where routine_name = 'wipe'"); n != 0 {
		t.Fatal("the refused procedure exists upstream")
	}

	// CALL runs what the procedure's body holds, whoever created it: one
	// made directly on the server that drops a table is refused under
	// ddl without --allow-drop; one that reads is allowed under write.
	g.my.Exec(t, "CREATE PROCEDURE nuke() DROP TABLE customers")
	out, err = g.mysqlCLI("agent-1", ddl.Token, "shop-mysql", "CALL nuke();\n")
	if err == nil || !strings.Contains(out, "ERROR 1142 (42000)") || !strings.Contains(out, "--allow-drop") {
		t.Fatalf("CALL of a procedure that drops a table: %v\n%s", err, out)
	}
	if n := g.my.QueryInt(t, "select count(*) from customers"); n != 20 {
		t.Fatalf("customers has %d rows after the refused CALL", n)
	}
	out, err = g.mysqlCLI("agent-1", write.Token, "shop-mysql", "CALL guard(2);\n", "-N", "-B")
	if err != nil || strings.TrimSpace(out) != "paid" && strings.TrimSpace(out) != "shipped" && strings.TrimSpace(out) != "new" && strings.TrimSpace(out) != "failed" {
		t.Fatalf("CALL of a reading procedure under write: %v\n%s", err, out)
	}

	// The record: the refusals with their rule, the allowed routines
	// with what their bodies touch.
	var refusedWrite, refusedDrop, refusedCall, created, called bool
	for _, grant := range []string{write.Grant.ID, ddl.Grant.ID} {
		for _, evs := range g.sessionEvents(grant) {
			for _, e := range evs {
				st := e.Statement
				if st == nil {
					continue
				}
				switch {
				case st.Class.Kind == "CREATE PROCEDURE" && st.Decision == "deny" && st.Rule == "access-level" && grant == write.Grant.ID:
					refusedWrite = strings.Contains(st.Reason, "requires ddl access")
				case st.Class.Kind == "CREATE PROCEDURE" && st.Decision == "deny" && st.Rule == "drop":
					refusedDrop = strings.Contains(st.Text, "wipe")
				case st.Class.Kind == "CALL" && st.Decision == "deny" && st.Rule == "drop":
					refusedCall = strings.Contains(st.Reason, "nuke")
				case st.Class.Kind == "CREATE PROCEDURE" && st.Decision == "allow" && strings.Contains(st.Text, "count_upto"):
					created = strings.Join(st.Class.TablesRead, ",") == "app.orders"
				case st.Class.Kind == "CALL" && st.Decision == "allow" && strings.Contains(st.Text, "count_upto"):
					called = strings.Join(st.Class.TablesRead, ",") == "app.orders" && st.Class.Required.String() == "write"
				}
			}
		}
	}
	if !refusedWrite || !refusedDrop || !refusedCall || !created || !called {
		t.Errorf("record: refused under write %v, refused drop %v, refused call %v, created %v, called %v",
			refusedWrite, refusedDrop, refusedCall, created, called)
	}
}
