package mysql

import (
	"strings"

	"github.com/airlockhq/airlock/authz"
)

// The statements that create, change and drop stored routines, triggers
// and events, read by the compound reader (mycompound.go).

// create reads CREATE [OR REPLACE] [DEFINER = who] PROCEDURE / FUNCTION /
// TRIGGER / EVENT.
func (r *myReader) create() (string, *myReadError) {
	r.i++
	if r.at("or") {
		r.i++
		if err := r.expect("replace"); err != nil {
			return "", err
		}
	}
	if err := r.definer(); err != nil {
		return "", err
	}
	r.a.f.Own = authz.AccessDDL
	switch {
	case r.at("procedure"):
		r.i++
		return "CREATE PROCEDURE", r.routine("procedure", false)
	case r.at("aggregate"):
		return "", &myReadError{pos: -1, msg: "CREATE AGGREGATE FUNCTION is not read by airlock"}
	case r.at("function"):
		r.i++
		return "CREATE FUNCTION", r.routine("function", true)
	case r.at("trigger"):
		r.i++
		return "CREATE TRIGGER", r.createTrigger()
	case r.at("event"):
		r.i++
		return "CREATE EVENT", r.event(true)
	}
	return "", r.fail("expected PROCEDURE, FUNCTION, TRIGGER or EVENT")
}

// definer reads DEFINER = who. A routine runs with its definer's
// privileges: one other than the upstream account airlock connects as
// (CURRENT_USER) is admin.
func (r *myReader) definer() *myReadError {
	if !r.at("definer") {
		return nil
	}
	r.i++
	if err := r.expectText("="); err != nil {
		return err
	}
	if r.at("current_user") {
		r.i++
		if r.atText("(") {
			r.i++
			return r.expectText(")")
		}
		return nil
	}
	t := r.peek(0)
	if t == nil || t.text == ";" {
		return r.fail("expected the definer")
	}
	r.i++
	if r.atText("@") {
		r.i += 2
	}
	if !r.call {
		r.a.need(authz.AccessAdmin, "DEFINER names an account other than CURRENT_USER, whose privileges the body would run with")
	}
	return nil
}

// ifNotExists reads IF NOT EXISTS.
func (r *myReader) ifNotExists() *myReadError {
	if !r.at("if") {
		return nil
	}
	r.i++
	if err := r.expect("not"); err != nil {
		return err
	}
	return r.expect("exists")
}

// name reads the object's name and checks its database.
func (r *myReader) name(what string) *myReadError {
	db, name, err := r.qualified()
	if err != nil {
		return err
	}
	r.db = db
	if db != "" {
		r.a.dbs = append(r.a.dbs, db)
		name = db + "." + name
	}
	r.what = what + " " + name
	r.inRoutine = true
	return nil
}

// routine reads the rest of CREATE PROCEDURE or CREATE FUNCTION.
func (r *myReader) routine(what string, function bool) *myReadError {
	if err := r.ifNotExists(); err != nil {
		return err
	}
	if err := r.name(what); err != nil {
		return err
	}
	if function && r.at("returns") {
		// A loadable function: CREATE FUNCTION f RETURNS STRING SONAME.
		r.i++
		if _, err := r.ident(); err != nil {
			return err
		}
		if err := r.expect("soname"); err != nil {
			return err
		}
		if t := r.peek(0); t == nil || t.ident || t.text[0] != '\'' && t.text[0] != '"' {
			return r.fail("expected the library name")
		}
		r.i++
		r.a.f.ServerFiles = "CREATE FUNCTION ... SONAME loads a library into the database server"
		r.a.need(authz.AccessAdmin, r.a.f.ServerFiles)
		return nil
	}
	if err := r.params(); err != nil {
		return err
	}
	if function {
		if err := r.expect("returns"); err != nil {
			return err
		}
		if err := r.dataType(); err != nil {
			return err
		}
	}
	if err := r.characteristics(); err != nil {
		return err
	}
	return r.stmt()
}

// params reads a routine's parameter list and declares the names.
func (r *myReader) params() *myReadError {
	if err := r.expectText("("); err != nil {
		return err
	}
	var names []string
	for !r.atText(")") {
		if len(names) > 0 {
			if err := r.expectText(","); err != nil {
				return err
			}
		}
		if r.at("in") || r.at("out") || r.at("inout") {
			r.i++
		}
		name, err := r.ident()
		if err != nil {
			return err
		}
		names = append(names, name)
		if err := r.skipType(","); err != nil {
			return err
		}
	}
	r.i++
	r.scopes = append(r.scopes, names)
	return nil
}

// skipType passes the tokens of a data type, which runs nothing, up to
// stop or ')' outside parentheses (or ';' or DEFAULT).
func (r *myReader) skipType(stop string) *myReadError {
	start := r.i
	depth := 0
	for t := r.peek(0); t != nil; t = r.peek(0) {
		switch {
		case t.text == "(" && !t.ident:
			depth++
		case t.text == ")" && !t.ident:
			if depth == 0 {
				return r.typeRead(start)
			}
			depth--
		case depth == 0 && (t.text == stop && !t.ident || t.text == ";" && !t.ident || t.is("default")):
			return r.typeRead(start)
		}
		r.i++
	}
	return r.fail("unterminated data type")
}

func (r *myReader) typeRead(start int) *myReadError {
	if r.i == start {
		return r.fail("expected a data type")
	}
	return nil
}

// dataType reads the data type after RETURNS, which ends where a
// characteristic or the body starts.
func (r *myReader) dataType() *myReadError {
	t := r.peek(0)
	if t == nil || !t.word {
		return r.fail("expected a data type")
	}
	r.i++
	if t.is("national") || t.is("long") || t.is("double") {
		if n := r.peek(0); n != nil && n.word && (n.is("char") || n.is("varchar") || n.is("character") || n.is("varbinary") || n.is("precision")) {
			r.i++
		}
	}
	for {
		switch {
		case r.atText("("):
			depth := 0
			for t := r.peek(0); t != nil; t = r.peek(0) {
				r.i++
				if t.text == "(" && !t.ident {
					depth++
				} else if t.text == ")" && !t.ident {
					if depth--; depth == 0 {
						break
					}
				}
			}
			if depth != 0 {
				return r.fail("unterminated data type")
			}
		case r.at("unsigned"), r.at("signed"), r.at("zerofill"), r.at("binary"), r.at("ascii"), r.at("unicode"), r.at("byte"), r.at("varying"):
			r.i++
		case r.at("charset"), r.at("collate"):
			r.i += 2
		case r.at("character"), r.at("char"):
			if n := r.peek(1); n == nil || !n.is("set") {
				return nil
			}
			r.i += 3
		default:
			return nil
		}
	}
}

// characteristics reads a routine's COMMENT, LANGUAGE SQL,
// [NOT] DETERMINISTIC, SQL data access and SQL SECURITY.
func (r *myReader) characteristics() *myReadError {
	for {
		switch {
		case r.at("comment"):
			r.i++
			if err := r.str(); err != nil {
				return err
			}
		case r.at("language"):
			r.i++
			if err := r.expect("sql"); err != nil {
				return err
			}
		case r.at("not"):
			r.i++
			if err := r.expect("deterministic"); err != nil {
				return err
			}
		case r.at("deterministic"):
			r.i++
		case r.at("contains"):
			r.i++
			if err := r.expect("sql"); err != nil {
				return err
			}
		case r.at("no"):
			r.i++
			if err := r.expect("sql"); err != nil {
				return err
			}
		case r.at("reads"), r.at("modifies"):
			r.i++
			if err := r.expect("sql"); err != nil {
				return err
			}
			if err := r.expect("data"); err != nil {
				return err
			}
		case r.at("sql"):
			r.i++
			if err := r.expect("security"); err != nil {
				return err
			}
			if !r.at("definer") && !r.at("invoker") {
				return r.fail("expected DEFINER or INVOKER")
			}
			r.i++
		default:
			return nil
		}
	}
}

// createTrigger reads the rest of CREATE TRIGGER. The trigger changes its
// table's definition, and its body runs with every row changed.
func (r *myReader) createTrigger() *myReadError {
	if err := r.ifNotExists(); err != nil {
		return err
	}
	if err := r.name("trigger"); err != nil {
		return err
	}
	if !r.at("before") && !r.at("after") {
		return r.fail("expected BEFORE or AFTER")
	}
	r.i++
	if !r.at("insert") && !r.at("update") && !r.at("delete") {
		return r.fail("expected INSERT, UPDATE or DELETE")
	}
	r.i++
	for _, kw := range []string{"on"} {
		if err := r.expect(kw); err != nil {
			return err
		}
	}
	db, table, err := r.qualified()
	if err != nil {
		return err
	}
	r.a.tables = append(r.a.tables, myTable{db: db, name: table, written: true})
	for _, kw := range []string{"for", "each", "row"} {
		if err := r.expect(kw); err != nil {
			return err
		}
	}
	if r.at("follows") || r.at("precedes") {
		r.i++
		if _, err := r.ident(); err != nil {
			return err
		}
	}
	r.trigger = true
	return r.stmt()
}

// event reads the rest of CREATE EVENT, or of ALTER EVENT (create false).
func (r *myReader) event(create bool) *myReadError {
	if create {
		if err := r.ifNotExists(); err != nil {
			return err
		}
	}
	if err := r.name("event"); err != nil {
		return err
	}
	scheduled := false
	for {
		switch {
		case r.at("on") && r.peek(1) != nil && r.peek(1).is("schedule"):
			r.i += 2
			if err := r.schedule(); err != nil {
				return err
			}
			scheduled = true
		case r.at("on") && r.peek(1) != nil && r.peek(1).is("completion"):
			r.i += 2
			if r.at("not") {
				r.i++
			}
			if err := r.expect("preserve"); err != nil {
				return err
			}
		case r.at("enable"):
			r.i++
		case r.at("disable"):
			r.i++
			if r.at("on") {
				r.i++
				if !r.at("slave") && !r.at("replica") {
					return r.fail("expected SLAVE")
				}
				r.i++
			}
		case r.at("comment"):
			r.i++
			if err := r.str(); err != nil {
				return err
			}
		case !create && r.at("rename"):
			r.i++
			if err := r.expect("to"); err != nil {
				return err
			}
			db, _, err := r.qualified()
			if err != nil {
				return err
			}
			if db != "" {
				r.a.dbs = append(r.a.dbs, db)
			}
		case r.at("do"):
			r.i++
			return r.stmt()
		default:
			if create || r.pos() < len(r.clean) && !r.atText(";") {
				return r.fail("expected DO")
			}
			return nil
		}
		if create && !scheduled {
			return r.fail("expected ON SCHEDULE")
		}
	}
}

// schedule reads AT ts [+ INTERVAL ...] or EVERY n unit [STARTS ts]
// [ENDS ts]; each time is an expression.
func (r *myReader) schedule() *myReadError {
	stops := []string{"on", "enable", "disable", "comment", "do", "rename", "starts", "ends"}
	switch {
	case r.at("at"):
		r.i++
		return r.expr("", stops...)
	case r.at("every"):
		r.i++
		if err := r.expr("NOW() + INTERVAL ", stops...); err != nil {
			return err
		}
		for r.at("starts") || r.at("ends") {
			r.i++
			if err := r.expr("", stops...); err != nil {
				return err
			}
		}
		return nil
	}
	return r.fail("expected AT or EVERY")
}

// alter reads ALTER PROCEDURE / FUNCTION (characteristics only) and ALTER
// EVENT.
func (r *myReader) alter() (string, *myReadError) {
	r.i++
	if err := r.definer(); err != nil {
		return "", err
	}
	r.a.f.Own = authz.AccessDDL
	switch {
	case r.at("procedure"), r.at("function"):
		what := strings.ToLower(r.peek(0).text)
		r.i++
		if err := r.name(what); err != nil {
			return "", err
		}
		return "ALTER " + strings.ToUpper(what), r.characteristics()
	case r.at("event"):
		r.i++
		return "ALTER EVENT", r.event(false)
	}
	return "", r.fail("expected PROCEDURE, FUNCTION or EVENT")
}

// drop reads DROP PROCEDURE / FUNCTION / TRIGGER / EVENT [IF EXISTS].
func (r *myReader) drop() (string, *myReadError) {
	r.i++
	t := r.peek(0)
	if t == nil || !(t.is("procedure") || t.is("function") || t.is("trigger") || t.is("event")) {
		return "", r.fail("expected PROCEDURE, FUNCTION, TRIGGER or EVENT")
	}
	what := strings.ToLower(t.text)
	r.i++
	if r.at("if") {
		r.i++
		if err := r.expect("exists"); err != nil {
			return "", err
		}
	}
	if err := r.name(what); err != nil {
		return "", err
	}
	r.a.f.Own = authz.AccessDDL
	article := "a "
	if what == "event" {
		article = "an "
	}
	r.a.f.Drops = "DROP " + strings.ToUpper(what) + " drops " + article + what
	return "DROP " + strings.ToUpper(what), nil
}
