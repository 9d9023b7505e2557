# /opt/yaml-subset.awk of tc-appliance (iso-remaster/yaml-subset.awk): a strict reader of
# the small part of YAML that NoCloud seeds use (meta-data, #cloud-config user-data,
# network-config), for busybox awk. The subset is documented in iso-remaster/README.md.
#
#   awk -f yaml-subset.awk FILE
#
# Output, one line per scalar, tab-separated: PATH TAG VALUE
#   PATH   keys and list indexes joined by "." (users.0.ssh_authorized_keys.1)
#   TAG    p = plain scalar (its text as written: "true", "0644", "" for null),
#          q = quoted scalar, b = literal block (|)
#   VALUE  the text with \ -> \\, tab -> \t and newline -> \n
# then, before them, `!ignored<TAB>KEY<TAB>line N: WHY` for each top-level key whose value
# uses YAML this reader does not support (flow mappings, anchors, tags, folded blocks...):
# none of that key's values is printed, the other keys are.
# Malformed input (or YAML that would change the meaning of the whole file, like a second
# document) prints only `!error<TAB>line N: WHY` and exits 1: nothing of it is used.
# Everything is collected first and printed at the end, so a failure never leaves half.

function fail(msg) {
    if (err == "") err = "line " NR ": " msg
    failed = 1
    exit 1
}

# The top-level key of this line's value is not used (and the rest of its lines skipped).
function poison(msg) {
    if (!(curtop in ignored)) ignored[curtop] = "line " NR ": " msg
    skipping = 1
}

function repl(s, a, b,    r, i) {
    r = ""
    while ((i = index(s, a)) > 0) {
        r = r substr(s, 1, i - 1) b
        s = substr(s, i + length(a))
    }
    return r s
}

function esc(s) {
    s = repl(s, "\\", "\\\\")
    s = repl(s, "\t", "\\t")
    return repl(s, "\n", "\\n")
}

function join(base, key) {
    return base == "" ? key : base "." key
}

function emit(path, tag, value) {
    out[++nout] = path "\t" tag "\t" esc(value)
    outtop[nout] = curtop
}

function push(type, ind, path) {
    depth++
    st_type[depth] = type
    st_ind[depth] = ind
    st_path[depth] = path
    st_n[depth] = 0
}

function pend(path, ind, seq_ok) {
    pend_path = path
    pend_ind = ind
    pend_seq_ok = seq_ok
    pending = 1
}

function trim_end(s) {
    sub(/[ \t]+$/, "", s)
    return s
}

# After a closing quote only blanks and a comment may follow.
function after_quote(s) {
    if (s !~ /^([ \t]*|[ \t]+#.*)$/) fail("text after a closing quote")
}

# A double-quoted scalar starting at s (s begins with "); sets qrest to what follows it.
function dquoted(s,    i, c, r, n, e) {
    r = ""
    n = length(s)
    for (i = 2; i <= n; i++) {
        c = substr(s, i, 1)
        if (c == "\"") {
            qrest = substr(s, i + 1)
            return r
        }
        if (c == "\\") {
            e = substr(s, ++i, 1)
            if (e == "n") r = r "\n"
            else if (e == "t") r = r "\t"
            else if (e == "\\" || e == "\"" || e == "/") r = r e
            else if (e == "") fail("unterminated quote")
            else fail("unsupported escape in a double-quoted scalar (\\n \\t \\\\ \\\" \\/ only)")
        } else {
            r = r c
        }
    }
    fail("unterminated quote")
}

function squoted(s,    i, c, r, n) {
    r = ""
    n = length(s)
    for (i = 2; i <= n; i++) {
        c = substr(s, i, 1)
        if (c == "'") {
            if (substr(s, i + 1, 1) == "'") {
                r = r "'"
                i++
                continue
            }
            qrest = substr(s, i + 1)
            return r
        }
        r = r c
    }
    fail("unterminated quote")
}

# Plain scalar text: up to a comment, without trailing blanks; "" (null) if it is unusable.
function plain(s) {
    sub(/[ \t]+#.*$/, "", s)
    s = trim_end(s)
    if (s ~ /^[@`%]/) fail("a plain scalar cannot start with " substr(s, 1, 1) "; quote it")
    if (s ~ /^(\? |:( |$))/) {
        poison("complex mapping keys are not supported")
        return ""
    }
    if (s ~ /: / || s ~ /:$/) {
        poison("a mapping inside a plain scalar or an unsupported key; quote the value")
        return ""
    }
    return s
}

# Does the value start a construct this reader refuses for its key (and then skips)?
function unsupported(v) {
    if (v ~ /^\{/) { poison("flow mappings ({...}) are not supported"); return 1 }
    if (v ~ /^&/) { poison("anchors (&) are not supported"); return 1 }
    if (v ~ /^\*/) { poison("aliases (*) are not supported"); return 1 }
    if (v ~ /^!/) { poison("tags (!) are not supported"); return 1 }
    if (v ~ /^>/) { poison("folded block scalars (>) are not supported"); return 1 }
    return 0
}

# A flow list of scalars on one line: [a, "b", 'c'].
function flow_list(path, v,    n, c, item, s) {
    s = substr(v, 2)
    n = 0
    while (1) {
        sub(/^[ \t]+/, "", s)
        c = substr(s, 1, 1)
        if (c == "]") {
            after_quote(substr(s, 2))
            return
        }
        if (c == "") fail("unterminated flow list (a list in [ ] must end on its line)")
        if (c == "[" || c == "{") {
            poison("nested flow collections are not supported")
            return
        }
        if (c == "\"" || c == "'") {
            item = (c == "\"") ? dquoted(s) : squoted(s)
            s = qrest
            emit(path "." n++, "q", item)
        } else {
            if (!match(s, /^[^],[{}]*/) || RLENGTH == 0) fail("empty item in a flow list")
            item = trim_end(substr(s, 1, RLENGTH))
            s = substr(s, RLENGTH + 1)
            if (item ~ /: / || item ~ /:$/ || item ~ /^[&*!]/) {
                poison("flow list items must be plain scalars")
                return
            }
            if (item ~ / #/) fail("unterminated flow list (a list in [ ] must end on its line)")
            emit(path "." n++, "p", item)
        }
        sub(/^[ \t]+/, "", s)
        c = substr(s, 1, 1)
        if (c == ",") s = substr(s, 2)
        else if (c == "") fail("unterminated flow list (a list in [ ] must end on its line)")
        else if (c != "]") fail("expected , or ] in a flow list")
    }
}

# The value v of PATH (a key's or a list item's) written on the line of indentation IND.
function value(path, v, ind, seq_ok,    c, s) {
    if (v == "" || v ~ /^#/) {
        pend(path, ind, seq_ok)
        return
    }
    if (unsupported(v)) return
    c = substr(v, 1, 1)
    if (c == "|") {
        if (v !~ /^\|[-+]?([ \t]*|[ \t]+#.*)$/) {
            poison("block scalar indentation indicators are not supported")
            return
        }
        blk = 1
        blk_path = path
        blk_parent = ind
        blk_ind = -1
        blk_n = 0
        blk_chomp = substr(v, 2, 1)
        return
    }
    if (c == "[") {
        flow_list(path, v)
        return
    }
    if (c == "\"" || c == "'") {
        s = (c == "\"") ? dquoted(v) : squoted(v)
        after_quote(qrest)
        emit(path, "q", s)
        return
    }
    if (v ~ /^-( |$)/) fail("a list cannot start on the line of its key")
    s = plain(v)
    if (!skipping) emit(path, "p", s)
}

function block_end(    text, i, last) {
    last = blk_n
    while (last > 0 && blk_line[last] == "") last--
    text = ""
    for (i = 1; i <= last; i++) text = text blk_line[i] "\n"
    if (blk_chomp == "-") sub(/\n$/, "", text)
    if (blk_chomp == "+") for (i = last + 1; i <= blk_n; i++) text = text "\n"
    emit(blk_path, "b", text)
    blk = 0
}

# A line inside a literal block; returns 0 once the line is past the block's end.
function block_line(line,    li) {
    if (line ~ /^ *$/) {
        blk_line[++blk_n] = (blk_ind >= 0 && length(line) > blk_ind) ? substr(line, blk_ind + 1) : ""
        return 1
    }
    match(line, /^ */)
    li = RLENGTH
    if (blk_ind < 0 && li > blk_parent) blk_ind = li
    if (blk_ind >= 0 && li >= blk_ind) {
        blk_line[++blk_n] = substr(line, blk_ind + 1)
        return 1
    }
    block_end()
    return 0
}

function map_entry(text, ind,    key, v, path) {
    if (match(text, /^[A-Za-z0-9_][A-Za-z0-9_-]*:( |\t|$)/)) {
        key = substr(text, 1, RLENGTH)
        sub(/:[ \t]*$/, "", key)
        v = substr(text, RLENGTH + 1)
        sub(/^[ \t]+/, "", v)
    } else if (text ~ /^(\?|["'])/ || text ~ /^[^#]*:( |$)/) {
        # the line may hold a secret value: name it by its number only
        if (depth == 1) curtop = "(line " NR ")"
        poison("unsupported mapping key (only letters, digits, _ and -)")
        return
    } else {
        fail("expected `key: value`")
    }
    path = join(st_path[depth], key)
    if (path in seen) fail("duplicate key " key)
    seen[path] = 1
    if (depth == 1) curtop = key
    value(path, v, ind, 1)
}

function list_item(rest, ind,    idx, after, sp, path) {
    idx = st_n[depth]++
    path = join(st_path[depth], idx)
    after = substr(rest, 2)
    match(after, /^ */)
    sp = RLENGTH
    after = substr(after, sp + 1)
    if (after ~ /^-( |$)/) {
        push("s", ind + 1 + sp, path)
        list_item(after, ind + 1 + sp)
        return
    }
    if (after ~ /^[A-Za-z0-9_][A-Za-z0-9_-]*:( |\t|$)/) {
        push("m", ind + 1 + sp, path)
        map_entry(after, ind + 1 + sp)
        return
    }
    value(path, after, ind, 0)
}

NR == 1 { sub(/^\357\273\277/, "") }

{
    line = $0
    sub(/\r$/, "", line)
    if (blk && block_line(line)) next
    if (line ~ /^[ \t]*(#.*)?$/) next
    if (line ~ /^---([ \t]|$)/) {
        if (started || line !~ /^---[ \t]*(#.*)?$/)
            fail("more than one YAML document (---) is not supported")
        next
    }
    if (line ~ /^\.\.\.([ \t]|$)/) fail("a document end marker (...) is not supported")
    if (line ~ /^%/) fail("YAML directives (%) are not supported")
    match(line, /^ */)
    ind = RLENGTH
    rest = substr(line, ind + 1)
    if (rest ~ /^\t/) fail("a tab in the indentation")
    if (!started) {
        started = 1
        if (rest ~ /^-( |$)/ || ind > 0) fail("the document must be a mapping of keys at column 1")
        push("m", 0, "")
    }
    if (skipping) {
        if (ind > 0 || rest ~ /^-( |$)/) next
        skipping = 0
    }
    isitem = (rest ~ /^-( |$)/)
    if (pending) {
        pending = 0
        if (ind > pend_ind || (ind == pend_ind && pend_seq_ok && isitem)) {
            push(isitem ? "s" : "m", ind, pend_path)
        } else {
            emit(pend_path, "p", "")
        }
    }
    while (depth > 1 && (st_ind[depth] > ind ||
            (st_ind[depth] == ind && st_type[depth] == "s" && !isitem)))
        depth--
    if (st_ind[depth] != ind) fail("bad indentation")
    if (st_type[depth] == "s") {
        if (!isitem) fail("expected a list item (- ...)")
        list_item(rest, ind)
    } else {
        if (isitem) fail("a list item where a `key: value` was expected")
        map_entry(rest, ind)
    }
}

END {
    if (failed) {
        print "!error\t" err
        exit 1
    }
    if (blk) block_end()
    if (pending) emit(pend_path, "p", "")
    for (k in ignored) print "!ignored\t" k "\t" ignored[k]
    for (i = 1; i <= nout; i++)
        if (!(outtop[i] in ignored)) print out[i]
}
