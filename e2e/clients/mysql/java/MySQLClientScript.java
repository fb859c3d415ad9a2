// The MySQL client-matrix script run through airlock with MariaDB
// Connector/J (Debian's libmariadb-java), with server-side prepared
// statements (useServerPrepStmts). Run by e2e/mysql_clients_test.go with
// the installed Java as a single-file program. The connection comes from
// MYSQL_* variables; CLIENT_TAG makes the rows this client writes its own.
// Each step prints one line, "step<TAB>value": a result, or
// "ERROR <code>: <message>". The Go test judges the values.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class MySQLClientScript {
    static void out(String step, Object value) {
        System.out.println(step + "\t" + value);
        System.out.flush();
    }

    static void step(Connection c, String name, String sql, boolean fetch, Object... args) {
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            for (int i = 0; i < args.length; i++) {
                ps.setObject(i + 1, args[i]);
            }
            if (fetch) {
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    out(name, rs.getString(1));
                }
            } else {
                out(name, ps.executeUpdate());
            }
        } catch (SQLException e) {
            out(name, "ERROR " + e.getErrorCode() + ": " + e.getMessage());
        }
    }

    public static void main(String[] a) throws Exception {
        String tag = System.getenv("CLIENT_TAG");
        String email = tag + "@example.com";
        String url = "jdbc:mariadb://" + System.getenv("MYSQL_HOST") + ":" + System.getenv("MYSQL_PORT") + "/"
                + System.getenv("MYSQL_DATABASE")
                + "?useSsl=true&trustServerCertificate=true&useServerPrepStmts=true&connectTimeout=10000"
                // With the default (true) the driver's first statement is
                // "set ..., sql_mode = concat(@@sql_mode,',STRICT_TRANS_TABLES')",
                // which the authorizer allows only with admin access: an
                // sql_mode it cannot read in advance changes how the server
                // reads quotes.
                + "&jdbcCompliantTruncation=false";
        Properties p = new Properties();
        p.setProperty("user", System.getenv("MYSQL_USER"));
        p.setProperty("password", System.getenv("MYSQL_PWD"));
        try (Connection c = DriverManager.getConnection(url, p)) {
            step(c, "count", "select count(*) from orders", true);
            step(c, "param", "select count(*) from orders where status = ?", true, "failed");
            step(c, "insert", "insert into customers (name, email) values (?, ?)", false, tag, email);
            step(c, "update", "update customers set name = concat(name, ' (updated)') where email = ?", false, email);
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("insert into customers (name, email) values (?, ?)")) {
                ps.setString(1, tag + " rolled back");
                ps.setString(2, tag + "-rb@example.com");
                out("tx_insert", ps.executeUpdate());
            }
            c.rollback();
            c.setAutoCommit(true);
            out("rollback", "ok");
            step(c, "server_error", "select * from no_such_table", true);
            step(c, "unique", "insert into customers (name, email) values (?, ?)", false, tag, email);
            step(c, "recovered", "select count(*) from customers where email = ?", true, email);
            try (Statement s = c.createStatement()) {
                s.execute("drop table orders");
                out("refused", "ran");
            } catch (SQLException e) {
                out("refused", "ERROR " + e.getErrorCode() + ": " + e.getMessage());
            }
            step(c, "after", "select 'after refusal'", true);
            out("version", c.getMetaData().getDatabaseProductVersion());
        }
    }
}
