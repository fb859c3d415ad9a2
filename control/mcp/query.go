package mcp

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	mysqlproto "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const (
	dialTimeout  = 15 * time.Second
	closeTimeout = 5 * time.Second
)

// QueryInput is query's input.
type QueryInput struct {
	Grant   string `json:"grant" jsonschema:"an active grant's id (request_access, wait_for_grant)"`
	SQL     string `json:"sql" jsonschema:"one SQL statement"`
	Params  []any  `json:"params,omitempty" jsonschema:"values of the statement's parameters, in order"`
	MaxRows int    `json:"max_rows,omitempty" jsonschema:"rows to return at most (default 1000); more set truncated"`
}

// Column is a result column.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// QueryOutput is query's result.
type QueryOutput struct {
	Columns   []Column `json:"columns"`
	Rows      [][]any  `json:"rows"`
	Truncated bool     `json:"truncated" jsonschema:"true when the statement returned more than max_rows rows"`
	Tag       string   `json:"command_tag" jsonschema:"the server's completion, e.g. SELECT 3, UPDATE 1"`
}

func (s *Server) query(ctx context.Context, _ *mcp.CallToolRequest, in QueryInput) (*mcp.CallToolResult, QueryOutput, error) {
	var zero QueryOutput
	g, err := s.table.get(in.Grant)
	if err != nil {
		return nil, zero, err
	}
	maxRows := in.MaxRows
	switch {
	case maxRows == 0:
		maxRows = DefaultMaxRows
	case maxRows < 0 || maxRows > MaxMaxRows:
		return nil, zero, fmt.Errorf("max_rows %d: want 1 to %d", maxRows, MaxMaxRows)
	}
	if g.address == "" {
		return nil, zero, errNoListener
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var out QueryOutput
	switch g.protocol {
	case "postgres":
		out, err = g.pgQuery(ctx, in.SQL, in.Params, maxRows)
	case "mysql":
		out, err = g.myQuery(ctx, in.SQL, in.Params, maxRows)
	default:
		return nil, zero, fmt.Errorf("grant %s is for %s resource %s: use run_command", g.id, g.protocol, g.resource)
	}
	if err != nil {
		return nil, zero, err
	}
	if out.Columns == nil {
		out.Columns = []Column{}
	}
	if out.Rows == nil {
		out.Rows = [][]any{}
	}
	return nil, out, nil
}

// pgQuery runs sql on the grant's Postgres session, opening it first
// through the gateway's Postgres listener (TLS, as psql's
// sslmode=require: the listener's certificate is often self-signed).
// The statement goes as one extended-protocol round trip (Parse, Bind,
// Describe, Execute, Sync) with its parameters in text and of no declared
// type, as psql's \bind sends them: the server infers their types, and
// the record shows them as the agent gave them.
func (g *grant) pgQuery(ctx context.Context, sql string, params []any, maxRows int) (QueryOutput, error) {
	if g.pg != nil && g.pg.IsClosed() {
		g.pg = nil
	}
	if g.pg == nil {
		host, port, err := net.SplitHostPort(g.address)
		if err != nil {
			return QueryOutput{}, fmt.Errorf("gateway address %q: %v", g.address, err)
		}
		// Host and port in the string, so the TLS settings are made for
		// them; the rest is set below, never quoted into it.
		cfg, err := pgconn.ParseConfig("sslmode=require host=" + host + " port=" + port)
		if err != nil {
			return QueryOutput{}, fmt.Errorf("gateway address %q: %v", g.address, err)
		}
		cfg.User, cfg.Password, cfg.Database = g.agent, g.token, g.resource
		cfg.ConnectTimeout = dialTimeout
		cfg.RuntimeParams["application_name"] = "airlock-mcp"
		c, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			return QueryOutput{}, fmt.Errorf("connecting to %s through airlock: %s", g.resource, pgErrorText(err))
		}
		g.pg = c
	}
	vals := make([][]byte, len(params))
	for i, p := range params {
		v, err := pgParam(p)
		if err != nil {
			return QueryOutput{}, fmt.Errorf("params[%d]: %v", i, err)
		}
		vals[i] = v
	}
	rr := g.pg.ExecParams(ctx, sql, vals, nil, nil, nil)
	var out QueryOutput
	fds := rr.FieldDescriptions()
	for _, fd := range fds {
		typ := "oid " + strconv.FormatUint(uint64(fd.DataTypeOID), 10)
		if t, ok := g.types.TypeForOID(fd.DataTypeOID); ok {
			typ = t.Name
		}
		out.Columns = append(out.Columns, Column{Name: fd.Name, Type: typ})
	}
	for rr.NextRow() {
		if len(out.Rows) == maxRows {
			out.Truncated = true
			// The rest is read and dropped: the statement runs (and is
			// recorded) whole, as it would for psql.
			continue
		}
		row := make([]any, len(fds))
		for i, v := range rr.Values() {
			row[i] = g.pgValue(fds[i], v)
		}
		out.Rows = append(out.Rows, row)
	}
	tag, err := rr.Close()
	if err != nil {
		return QueryOutput{}, g.pgFailed(err)
	}
	out.Tag = tag.String()
	return out, nil
}

// pgParam is a JSON parameter as Postgres text; nil is NULL.
func pgParam(p any) ([]byte, error) {
	switch v := p.(type) {
	case nil:
		return nil, nil
	case string:
		return []byte(v), nil
	case bool:
		return []byte(strconv.FormatBool(v)), nil
	case float64:
		return []byte(strconv.FormatFloat(v, 'f', -1, 64)), nil
	default:
		// Arrays and objects: their JSON, for json and jsonb parameters.
		return json.Marshal(v)
	}
}

// pgValue is a text result value as JSON can carry it: numbers, booleans
// and JSON as themselves, the rest (numeric, times, uuids, ...) as the
// server's text, so nothing loses precision.
func (g *grant) pgValue(fd pgconn.FieldDescription, v []byte) any {
	if v == nil {
		return nil
	}
	if fd.Format != pgtype.TextFormatCode {
		return v
	}
	switch fd.DataTypeOID {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID:
		if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return n
		}
	case pgtype.Float4OID, pgtype.Float8OID:
		if f, err := strconv.ParseFloat(string(v), 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
			return f
		}
	case pgtype.BoolOID:
		return string(v) == "t"
	case pgtype.JSONOID, pgtype.JSONBOID:
		if json.Valid(v) {
			return json.RawMessage(v)
		}
	}
	return string(v)
}

// pgFailed is a statement's failure as the agent sees it; a connection
// that broke (the grant was revoked or expired, the gateway went away)
// is dropped so the next call opens a new session.
func (g *grant) pgFailed(err error) error {
	if g.pg != nil && g.pg.IsClosed() {
		g.pg = nil
	}
	return errors.New(pgErrorText(err))
}

// pgErrorText is the server's error with its SQLSTATE: a statement airlock
// refuses reads "ERROR: airlock: ... (SQLSTATE 42501)".
func pgErrorText(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		s := pe.Severity + ": " + pe.Message + " (SQLSTATE " + pe.Code + ")"
		if pe.Detail != "" {
			s += "\nDETAIL: " + pe.Detail
		}
		if pe.Hint != "" {
			s += "\nHINT: " + pe.Hint
		}
		return s
	}
	return err.Error()
}

// myQuery runs sql on the grant's MySQL session, opening it first through
// the gateway's MySQL listener over TLS (as mysql --ssl does without a
// CA: the listener's certificate is often self-signed). With params the
// statement is prepared (COM_STMT_PREPARE, COM_STMT_EXECUTE).
func (g *grant) myQuery(ctx context.Context, sql string, params []any, maxRows int) (QueryOutput, error) {
	if g.my == nil {
		c, err := client.ConnectWithContext(ctx, g.address, g.agent, g.token, g.resource, dialTimeout, func(c *client.Conn) error {
			c.SetTLSConfig(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // as sslmode=require; docs/mcp.md
			return nil
		})
		if err != nil {
			return QueryOutput{}, fmt.Errorf("connecting to %s through airlock: %s", g.resource, myErrorText(err))
		}
		g.my = c
	}
	// The connection is synchronous: a cancelled call closes it, so the
	// statement's wait ends and the next call opens a new session.
	stop := context.AfterFunc(ctx, func() { _ = g.my.Close() })
	r, err := g.my.Execute(sql, params...)
	if !stop() {
		g.my = nil
		return QueryOutput{}, ctx.Err()
	}
	if err != nil {
		var me *mysqlproto.MyError
		if !errors.As(err, &me) {
			// Not the server's answer: the connection is gone.
			_ = g.my.Close()
			g.my = nil
		}
		return QueryOutput{}, errors.New(myErrorText(err))
	}
	defer r.Close()
	var out QueryOutput
	if r.Resultset != nil && len(r.Fields) > 0 {
		for _, f := range r.Fields {
			out.Columns = append(out.Columns, Column{Name: string(f.Name), Type: myTypeName(f.Type)})
		}
		for i, row := range r.Values {
			if i == maxRows {
				out.Truncated = true
				break
			}
			vals := make([]any, len(row))
			for j := range row {
				v := row[j].Value()
				if b, ok := v.([]byte); ok {
					v = string(b)
				}
				vals[j] = v
			}
			out.Rows = append(out.Rows, vals)
		}
		out.Tag = fmt.Sprintf("%d rows", len(r.Values))
	} else {
		out.Tag = fmt.Sprintf("%d rows affected", r.AffectedRows)
	}
	return out, nil
}

// myErrorText is the server's error with its code and SQLSTATE.
func myErrorText(err error) string {
	var me *mysqlproto.MyError
	if errors.As(err, &me) {
		return fmt.Sprintf("ERROR %d (%s): %s", me.Code, me.State, me.Message)
	}
	return err.Error()
}

// myTypeName names a MySQL column type as MySQL does.
func myTypeName(t byte) string {
	if n, ok := myTypes[t]; ok {
		return n
	}
	return "type " + strconv.Itoa(int(t))
}

var myTypes = map[byte]string{
	mysqlproto.MYSQL_TYPE_DECIMAL: "decimal", mysqlproto.MYSQL_TYPE_NEWDECIMAL: "decimal",
	mysqlproto.MYSQL_TYPE_TINY: "tinyint", mysqlproto.MYSQL_TYPE_SHORT: "smallint",
	mysqlproto.MYSQL_TYPE_LONG: "int", mysqlproto.MYSQL_TYPE_INT24: "mediumint",
	mysqlproto.MYSQL_TYPE_LONGLONG: "bigint", mysqlproto.MYSQL_TYPE_FLOAT: "float",
	mysqlproto.MYSQL_TYPE_DOUBLE: "double", mysqlproto.MYSQL_TYPE_NULL: "null",
	mysqlproto.MYSQL_TYPE_TIMESTAMP: "timestamp", mysqlproto.MYSQL_TYPE_DATE: "date",
	mysqlproto.MYSQL_TYPE_TIME: "time", mysqlproto.MYSQL_TYPE_DATETIME: "datetime",
	mysqlproto.MYSQL_TYPE_YEAR: "year", mysqlproto.MYSQL_TYPE_VARCHAR: "varchar",
	mysqlproto.MYSQL_TYPE_BIT: "bit", mysqlproto.MYSQL_TYPE_JSON: "json",
	mysqlproto.MYSQL_TYPE_ENUM: "enum", mysqlproto.MYSQL_TYPE_SET: "set",
	mysqlproto.MYSQL_TYPE_TINY_BLOB: "tinyblob", mysqlproto.MYSQL_TYPE_MEDIUM_BLOB: "mediumblob",
	mysqlproto.MYSQL_TYPE_LONG_BLOB: "longblob", mysqlproto.MYSQL_TYPE_BLOB: "blob",
	mysqlproto.MYSQL_TYPE_VAR_STRING: "varchar", mysqlproto.MYSQL_TYPE_STRING: "char",
	mysqlproto.MYSQL_TYPE_GEOMETRY: "geometry",
}
