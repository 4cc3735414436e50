# shellcheck shell=sh
# edgekit-agent part: user-data (site fields, JSON strings, finding the user-data on media). Sourced by /usr/bin/edgekit-agent (docs/agent.md).

# ---------------------------------------------------------------------------------------
# user-data

# Print "key<TAB>value" for the scalars of stylus.site, "tags.<k><TAB>value" for its tags and
# "network.<k><TAB>value" for the scalars of stylus.site.network (proxies),
# from a #cloud-config document (block style as edgekit renders it; a flow map for tags and
# quoted or commented scalars as people write them).
site_fields() {
    awk '
    function indent_of(s) { match(s, /^ */); return RLENGTH }
    function unquote(v,   q) {
        sub(/^[ \t]+/, "", v)
        if (v ~ /^"/) {
            v = substr(v, 2); q = ""
            # Up to the closing quote, honouring \" and \\ escapes.
            while (length(v) > 0) {
                c = substr(v, 1, 1)
                if (c == "\\") { n = substr(v, 2, 1); q = q (n == "n" ? "\n" : n == "t" ? "\t" : n); v = substr(v, 3); continue }
                if (c == "\"") break
                q = q c; v = substr(v, 2)
            }
            return q
        }
        if (v ~ /^'\''/) {
            v = substr(v, 2); q = ""
            while (length(v) > 0) {
                if (substr(v, 1, 2) == "'\'''\''") { q = q "'\''"; v = substr(v, 3); continue }
                if (substr(v, 1, 1) == "'\''") break
                q = q substr(v, 1, 1); v = substr(v, 2)
            }
            return q
        }
        sub(/[ \t]+#.*$/, "", v)
        sub(/[ \t]+$/, "", v)
        return v
    }
    function emit(k, v) { gsub(/[\t\n]/, " ", v); printf "%s\t%s\n", k, v }
    # A flow map {a: b, c: "d"} of simple scalars (no commas inside values).
    function flow(prefix, v,   n, i, parts, kv, key) {
        sub(/^[ \t]*\{/, "", v); sub(/\}[ \t]*(#.*)?$/, "", v)
        n = split(v, parts, ",")
        for (i = 1; i <= n; i++) {
            if (parts[i] !~ /:/) continue
            key = parts[i]; sub(/:.*/, "", key); key = unquote(key)
            kv = parts[i]; sub(/^[^:]*:/, "", kv)
            if (key != "") emit(prefix key, unquote(kv))
        }
    }
    /^[ \t]*(#.*)?$/ { next }
    {
        ind = indent_of($0)
        line = substr($0, ind + 1)
        key = line; sub(/:.*/, "", key); key = unquote(key)
        rest = line; if (!sub(/^[^:]*:/, "", rest)) rest = ""
        # Leave any section whose indent we have come back out of.
        if (in_tags && ind <= tags_ind) in_tags = 0
        if (in_net && ind <= net_ind) in_net = 0
        if (in_site && ind <= site_ind) in_site = 0
        if (in_stylus && ind <= stylus_ind) in_stylus = 0
        if (!in_stylus) {
            if (key == "stylus" && rest ~ /^[ \t]*(#.*)?$/) { in_stylus = 1; stylus_ind = ind }
            next
        }
        if (!in_site) {
            if (key == "site" && rest ~ /^[ \t]*(#.*)?$/) { in_site = 1; site_ind = ind; field_ind = -1 }
            next
        }
        if (in_tags) {
            if (tag_ind < 0) tag_ind = ind
            if (ind == tag_ind) emit("tags." key, unquote(rest))
            next
        }
        if (in_net) {
            if (netf_ind < 0) netf_ind = ind
            if (ind == netf_ind && rest !~ /^[ \t]*(#.*)?$/) emit("network." key, unquote(rest))
            next
        }
        if (field_ind < 0) field_ind = ind
        if (ind != field_ind) next
        if (key == "network" && rest ~ /^[ \t]*(#.*)?$/) { in_net = 1; net_ind = ind; netf_ind = -1; next }
        if (key == "tags") {
            if (rest ~ /^[ \t]*\{/) { flow("tags.", rest); next }
            in_tags = 1; tags_ind = ind; tag_ind = -1
            next
        }
        if (rest !~ /^[ \t]*(#.*)?$/) emit(key, unquote(rest))
    }
    ' "$1"
}

# The value of one field printed by site_fields (empty when absent).
site_field() {
    site_fields "$1" | awk -F '\t' -v k="$2" '$1 == k { sub(/^[^\t]*\t/, ""); print; exit }'
}

# A JSON string literal for $1 (quotes, backslashes and control characters escaped).
json_str() {
    printf '%s' "$1" | awk '
        BEGIN { ORS = ""; print "\"" }
        NR > 1 { print "\\n" }
        {
            s = $0
            gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); gsub(/\t/, "\\t", s); gsub(/\r/, "\\r", s)
            print s
        }
        END { print "\"" }'
}

# The tags of user-data $1 as a JSON object.
tags_json() {
    out="{"
    sep=""
    tab=$(printf '\t')
    while IFS="$tab" read -r k v; do
        case "$k" in tags.*) ;; *) continue ;; esac
        out="$out$sep$(json_str "${k#tags.}"):$(json_str "$v")"
        sep=","
    done <<EOF
$(site_fields "$1")
EOF
    echo "$out}"
}

# Device holding filesystem label $1, waiting up to $2 seconds.
find_label() {
    if [ -x "$FIND_LABEL" ]; then
        "$FIND_LABEL" "$1" "$2" 2>/dev/null
        return
    fi
    tries=$(($2 * 5 + 1))
    while [ "$tries" -gt 0 ]; do
        dev=$(bb findfs "LABEL=$1" 2>/dev/null) && [ -b "$dev" ] && { echo "$dev"; return 0; }
        tries=$((tries - 1))
        bb usleep 200000
    done
    return 1
}

# Where device $1 is mounted already, if it is.
mounted_at() {
    awk -v d="$1" '$1 == d { print $2; exit }' /proc/mounts 2>/dev/null
}

# Copy /$2 from the filesystem on device $1 to $3 (reusing a mount when there is one).
copy_from_device() {
    dir=$(mounted_at "$1")
    own=""
    if [ -z "$dir" ]; then
        dir="$RUN/agent-mnt"
        mkdir -p "$dir"
        bb mount -t iso9660 -o ro "$1" "$dir" 2>/dev/null || bb mount -o ro "$1" "$dir" 2>/dev/null \
            || return 1
        own=1
    fi
    rc=1
    [ -r "$dir/$2" ] && cp "$dir/$2" "$3" && rc=0
    [ -n "$own" ] && bb umount "$dir" 2>/dev/null
    return $rc
}

# Find the user-data: what the installer hook already copied, else a 'cidata' ISO's
# /user-data, else /config.yaml on the installer media. Sets USERDATA and USERDATA_FROM.
find_user_data() {
    USERDATA="$RUN/agent-user-data"
    if [ -r "$RUN/user-data" ]; then
        cp "$RUN/user-data" "$USERDATA" && USERDATA_FROM="installer hook ($RUN/user-data)" \
            && return 0
    fi
    ISO_LABEL=COS_LIVE
    SITE_LABEL=cidata
    # shellcheck disable=SC1090
    [ -r "$INSTALLER_CONF" ] && . "$INSTALLER_CONF"
    label=$(cmdline_arg edgekit.agent.label) && ISO_LABEL=$label
    site_wait=$(cmdline_int edgekit.agent.site_wait 5)
    media_wait=$(cmdline_int edgekit.agent.media_wait 10)
    if dev=$(find_label "$SITE_LABEL" "$site_wait") && copy_from_device "$dev" user-data "$USERDATA"
    then
        USERDATA_FROM="$SITE_LABEL ($dev)"
        return 0
    fi
    if dev=$(find_label "$ISO_LABEL" "$media_wait") && copy_from_device "$dev" config.yaml "$USERDATA"
    then
        USERDATA_FROM="$ISO_LABEL ($dev)"
        return 0
    fi
    return 1
}

