// The client-matrix script run through airlock with PgJDBC (Debian's
// libpostgresql-jdbc-java). e2e/postgres_clients_test.go compiles it with
// javac at test time and runs it with the installed Java. The connection
// comes from PG* variables; CLIENT_TAG makes the rows this client writes
// its own. Each step prints one line, "step<TAB>value": a result, or
// "ERROR <sqlstate>: <message>". The Go test judges the values.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.postgresql.util.PSQLException;

public class ClientScript {
    static final String TAG = System.getenv("CLIENT_TAG");
    static final String EMAIL = TAG + "@example.com";

    static void out(String step, Object value) {
        System.out.println(step + "\t" + value);
        System.out.flush();
    }

    static String err(SQLException e) {
        String msg = String.valueOf(e.getMessage());
        if (e instanceof PSQLException pe && pe.getServerErrorMessage() != null) {
            msg = pe.getServerErrorMessage().getMessage(); // without "ERROR: "
        }
        return "ERROR " + e.getSQLState() + ": " + msg.split("\n")[0];
    }

    static Connection connect(String extra) throws SQLException {
        String url = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT") + "/"
                + System.getenv("PGDATABASE") + "?sslmode=require" + extra;
        Properties p = new Properties();
        p.setProperty("user", System.getenv("PGUSER"));
        p.setProperty("password", System.getenv("PGPASSWORD"));
        return DriverManager.getConnection(url, p);
    }

    interface Body {
        Object run() throws SQLException;
    }

    static void step(String name, Body b) {
        try {
            out(name, b.run());
        } catch (SQLException e) {
            out(name, err(e));
        }
    }

    static Object first(Connection c, String sql, String... args) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            for (int i = 0; i < args.length; i++) {
                ps.setString(i + 1, args[i]);
            }
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getObject(1);
            }
        }
    }

    static int update(Connection c, String sql, String... args) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            for (int i = 0; i < args.length; i++) {
                ps.setString(i + 1, args[i]);
            }
            return ps.executeUpdate();
        }
    }

    static void script(Connection c) throws SQLException {
        step("count", () -> first(c, "select count(*) from orders"));
        step("param", () -> first(c, "select count(*) from orders where status = ?", "failed"));
        step("insert", () -> update(c, "insert into customers (name, email) values (?, ?)", TAG, EMAIL));
        step("update", () -> update(c, "update customers set name = name || ' (updated)' where email = ?", EMAIL));

        c.setAutoCommit(false);
        out("tx_insert", update(c, "insert into customers (name, email) values (?, ?)", TAG + " rolled back", TAG + "-rb@example.com"));
        c.rollback();
        out("rollback", "ok");
        c.setAutoCommit(true);

        step("div0", () -> first(c, "select 1/0"));
        step("unique", () -> update(c, "insert into customers (name, email) values (?, ?)", TAG, EMAIL));
        step("recovered", () -> first(c, "select count(*) from customers where email = ?", EMAIL));
        step("refused", () -> {
            try (Statement s = c.createStatement()) {
                s.execute("drop table orders");
                return "not refused";
            }
        });
        step("after", () -> first(c, "select 'after refusal'"));
    }

    // prepared runs one PreparedStatement ten times on a connection with
    // the given prepareThreshold: from the threshold on, PgJDBC parses it
    // once as a server-side named statement (S_n) and then sends only Bind
    // and Execute, so the gateway must reuse the decision it made at Parse.
    static void prepared(int threshold) throws SQLException {
        try (Connection c = connect("&prepareThreshold=" + threshold)) {
            List<Object> counts = new ArrayList<>();
            try (PreparedStatement ps = c.prepareStatement("select count(*) from orders where status = ?")) {
                for (int i = 0; i < 10; i++) {
                    ps.setString(1, i % 2 == 0 ? "failed" : "new");
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        counts.add(rs.getLong(1));
                    }
                }
            }
            out("prepared" + threshold, String.join(",", counts.stream().map(String::valueOf).toList()));
            // The server holds it as a named statement only when it was
            // prepared past the threshold.
            step("prepared" + threshold + "_server",
                    () -> first(c, "select count(*) from pg_prepared_statements where statement = 'select count(*) from orders where status = $1'"));

            // A refused statement, prepared past the threshold too: refused
            // each time, and the connection carries on.
            try (PreparedStatement ps = c.prepareStatement("select pg_read_file(?)")) {
                for (int i = 0; i < 3; i++) {
                    step("prepared" + threshold + "_refused", () -> {
                        ps.setString(1, "/etc/passwd");
                        try (ResultSet rs = ps.executeQuery()) {
                            rs.next();
                            return "not refused";
                        }
                    });
                }
            }
            step("prepared" + threshold + "_after", () -> first(c, "select count(*) from orders where status = ?", "paid"));
        }
    }

    // batch sends a JDBC batch: PgJDBC pipelines every Bind/Execute before
    // one Sync.
    static void batch(Connection c) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement("insert into customers (name, email) values (?, ?)")) {
            for (int i = 1; i <= 3; i++) {
                ps.setString(1, TAG + " batch " + i);
                ps.setString(2, TAG + "-batch" + i + "@example.com");
                ps.addBatch();
            }
            int[] n = ps.executeBatch();
            int sum = 0;
            for (int x : n) {
                sum += x;
            }
            out("batch", sum);
        }
    }

    // fetch reads a result 50 rows at a time: in a transaction, PgJDBC
    // executes the portal with a row limit, and the server suspends it
    // (PortalSuspended) until the next Execute.
    static void fetch(Connection c) throws SQLException {
        c.setAutoCommit(false);
        long n = 0, sum = 0;
        try (Statement s = c.createStatement()) {
            s.setFetchSize(50);
            try (ResultSet rs = s.executeQuery("select id from orders order by id")) {
                while (rs.next()) {
                    n++;
                    sum += rs.getLong(1);
                }
            }
        }
        c.commit();
        c.setAutoCommit(true);
        out("fetch", n + "," + sum);
    }

    public static void main(String[] args) throws Exception {
        try (Connection c = connect("")) {
            script(c);
            batch(c);
            fetch(c);
        }
        prepared(1);
        prepared(5);
    }
}
