# /opt/ovf-env.awk of tc-appliance (iso-remaster/ovf-env.awk): the properties of an OVF
# environment document (ovf-env.xml, DMTF DSP0243 section 11), for busybox awk.
#
#   awk -f ovf-env.awk ovf-env.xml
#
# Prints `KEY<TAB>VALUE` for every <Property key=".." value=".."/> element, whatever the
# namespace prefix (VMware writes oe:key/oe:value; others use ovf: or none) and the order of
# the attributes. VALUE has its XML entities (&amp; &lt; &gt; &quot; &apos; &#N; &#xN;)
# decoded, then \ -> \\, tab -> \t, newline -> \n (as yaml-subset.awk prints values).
# Malformed XML prints only `!error<TAB>WHY` and exits 1.

function fail(msg) {
    print "!error\t" msg
    failed = 1
    exit 1
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

function number(digits, base,    i, n, d) {
    n = 0
    for (i = 1; i <= length(digits); i++) {
        d = index("0123456789abcdef", tolower(substr(digits, i, 1))) - 1
        if (d < 0 || d >= base) return -1
        n = n * base + d
    }
    return n
}

# The UTF-8 bytes of a character number.
function utf8(n) {
    if (n < 128) return sprintf("%c", n)
    if (n < 2048) return sprintf("%c%c", 192 + int(n / 64), 128 + n % 64)
    if (n < 65536)
        return sprintf("%c%c%c", 224 + int(n / 4096), 128 + int(n / 64) % 64, 128 + n % 64)
    return sprintf("%c%c%c%c", 240 + int(n / 262144), 128 + int(n / 4096) % 64,
                   128 + int(n / 64) % 64, 128 + n % 64)
}

function entities(s,    r, i, j, name, n) {
    r = ""
    while ((i = index(s, "&")) > 0) {
        r = r substr(s, 1, i - 1)
        s = substr(s, i + 1)
        j = index(s, ";")
        if (j < 2 || j > 10) fail("a bare & in an attribute value (write &amp;)")
        name = substr(s, 1, j - 1)
        s = substr(s, j + 1)
        if (name == "amp") r = r "&"
        else if (name == "lt") r = r "<"
        else if (name == "gt") r = r ">"
        else if (name == "quot") r = r "\""
        else if (name == "apos") r = r "'"
        else {
            n = -1
            if (name ~ /^#x[0-9A-Fa-f]+$/) n = number(substr(name, 3), 16)
            else if (name ~ /^#[0-9]+$/) n = number(substr(name, 2), 10)
            if (n <= 0 || n > 1114111) fail("unknown entity &" name ";")
            r = r utf8(n)
        }
    }
    return r s
}

# The attributes of the start tag at the beginning of s (after its name) into attr[local
# name]; returns what follows the tag.
function attributes(s,    name, q, j, v) {
    split("", attr)
    while (1) {
        sub(/^[ \t\r\n]+/, "", s)
        if (substr(s, 1, 1) == ">") return substr(s, 2)
        if (substr(s, 1, 2) == "/>") return substr(s, 3)
        if (!match(s, /^[A-Za-z_][A-Za-z0-9_.:-]*[ \t\r\n]*=[ \t\r\n]*/))
            fail("a malformed attribute in a Property element")
        name = substr(s, 1, RLENGTH)
        sub(/[ \t\r\n]*=.*$/, "", name)
        sub(/^.*:/, "", name)
        s = substr(s, RLENGTH + 1)
        q = substr(s, 1, 1)
        if (q != "\"" && q != "'") fail("an attribute value without quotes")
        j = index(substr(s, 2), q)
        if (j == 0) fail("an unterminated attribute value")
        v = substr(s, 2, j - 1)
        s = substr(s, j + 2)
        # XML turns literal tabs and line ends in attribute values into blanks
        gsub(/[\t\r\n]/, " ", v)
        attr[name] = entities(v)
    }
}

{ doc = doc $0 "\n" }

END {
    if (failed) exit 1
    while ((i = index(doc, "<!--")) > 0) {
        j = index(substr(doc, i + 4), "-->")
        if (j == 0) fail("an unterminated comment")
        doc = substr(doc, 1, i - 1) substr(doc, i + 4 + j + 2)
    }
    if (doc !~ /<([A-Za-z_][A-Za-z0-9_.-]*:)?Environment[ \t\r\n>]/)
        fail("no Environment element: not an OVF environment")
    s = doc
    n = 0
    while (match(s, /<([A-Za-z_][A-Za-z0-9_.-]*:)?Property[ \t\r\n\/>]/)) {
        s = attributes(substr(s, RSTART + RLENGTH - 1))
        if (!("key" in attr)) fail("a Property element without a key attribute")
        if (attr["key"] in found) fail("property " attr["key"] " is given twice")
        found[attr["key"]] = 1
        line[++n] = esc(attr["key"]) "\t" esc(attr["value"])
    }
    for (i = 1; i <= n; i++) print line[i]
}
