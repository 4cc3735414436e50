# shellcheck shell=sh
# edgekit-agent part: pulling a provider image over the OCI distribution API (busybox wget),
# every blob checked against its digest before use. Anonymous pulls only. docs/agent.md
# ("Repave: where the image comes from") is the contract, including the mirror settings.

# One blob or manifest may take this long (a slow link, a 20 MB base layer under TCG).
BLOB_TIMEOUT=${EDGEKIT_AGENT_BLOB_TIMEOUT:-900}
MANIFEST_TYPES="application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json"

# Print "path<TAB>value" for every scalar of the block-style YAML document $1, the path
# being its keys joined by "/" (quotes taken off keys and values; comments dropped). Lists
# and flow collections are printed as their text. Enough for stylus.registry.mirrors.
yaml_scalars() {
    awk '
    function indent_of(s) { match(s, /^ */); return RLENGTH }
    function unq(v) {
        sub(/^[ \t]+/, "", v)
        if (v ~ /^"/) { sub(/^"/, "", v); sub(/"[ \t]*(#.*)?$/, "", v); return v }
        if (v ~ /^'\''/) { sub(/^'\''/, "", v); sub(/'\''[ \t]*(#.*)?$/, "", v); return v }
        sub(/[ \t]+#.*$/, "", v); sub(/[ \t]+$/, "", v)
        return v
    }
    /^[ \t]*(#.*)?$/ { next }
    /^---/ { next }
    {
        ind = indent_of($0); line = substr($0, ind + 1)
        if (line ~ /^- /) next
        # A key is quoted (and may hold ":") or runs up to the first ": " / final ":".
        if (line ~ /^"/) { key = line; sub(/^"/, "", key); sub(/".*/, "", key); rest = line; sub(/^"[^"]*"[ \t]*:/, "", rest) }
        else if (line ~ /^'\''/) { key = line; sub(/^'\''/, "", key); sub(/'\''.*/, "", key); rest = line; sub(/^'\''[^'\'']*'\''[ \t]*:/, "", rest) }
        else {
            if (match(line, /:([ \t]|$)/) == 0) next
            key = substr(line, 1, RSTART - 1); rest = substr(line, RSTART + 1)
        }
        while (depth > 0 && ind <= ind_at[depth]) depth--
        path = ""
        for (i = 1; i <= depth; i++) path = path key_at[i] "/"
        path = path key
        if (rest ~ /^[ \t]*(#.*)?$/) { depth++; ind_at[depth] = ind; key_at[depth] = key; next }
        printf "%s\t%s\n", path, unq(rest)
    }' "$1"
}

# The value at YAML path $2 (keys joined by "/") of document $1; empty when absent.
yaml_value() {
    yaml_scalars "$1" | awk -F '\t' -v k="$2" '$1 == k { sub(/^[^\t]*\t/, ""); print; exit }'
}

# Split reference $1 (host[:port]/repo[:tag][@sha256:...]) into REF_HOST, REF_REPO and
# REF_REFERENCE (the digest when given, else the tag, else "latest").
parse_ref() {
    r=$1
    # Only the characters a reference can hold: it ends up in upgrade.env, which is sourced.
    case "$r" in '' | *[!A-Za-z0-9._:/@+-]*) return 1 ;; esac
    REF_DIGEST=""
    case "$r" in *@sha256:*) REF_DIGEST=${r#*@}; r=${r%%@*} ;; esac
    REF_HOST=${r%%/*}
    rest=${r#*/}
    [ "$REF_HOST" != "$r" ] && [ -n "$rest" ] || return 1
    case "$REF_HOST" in *.* | *:* | localhost) ;; *) return 1 ;; esac
    tag=""
    case "${rest##*/}" in *:*) tag=${rest##*:}; rest=${rest%:*} ;; esac
    REF_REPO=$rest
    REF_TAG=${tag:-latest}
    REF_REFERENCE=${REF_DIGEST:-$REF_TAG}
    case "$REF_DIGEST" in '' | sha256:[0-9a-f]*) ;; *) return 1 ;; esac
    return 0
}

# The base URL for registry host $1 under user-data $2: its mirror from
# stylus.registry.mirrors.<host> (endpoint, insecure), else https://<host>. Sets REG_BASE
# and REG_VIA (words for the console); fails (1, REG_ERROR) on an http mirror not marked
# insecure: plain HTTP is only for mirrors the site says may be plain.
registry_base() {
    REG_ERROR=""
    endpoint=""
    insecure=""
    if [ -n "$2" ] && [ -r "$2" ]; then
        endpoint=$(yaml_value "$2" "stylus/registry/mirrors/$1/endpoint")
        insecure=$(yaml_value "$2" "stylus/registry/mirrors/$1/insecure")
    fi
    if [ -z "$endpoint" ]; then
        REG_BASE="https://$1"
        REG_VIA="$REG_BASE"
        return 0
    fi
    endpoint=${endpoint%/}
    case "$endpoint" in
    https://*) ;;
    http://*)
        case "$insecure" in true | True | TRUE | yes) ;; *)
            REG_ERROR="the mirror $endpoint for $1 is plain http; set stylus.registry.mirrors.\"$1\".insecure: true to allow it"
            return 1
            ;;
        esac
        ;;
    *)
        REG_ERROR="the mirror endpoint '$endpoint' for $1 is not an http:// or https:// URL"
        return 1
        ;;
    esac
    REG_BASE=$endpoint
    REG_VIA="mirror $endpoint"
    return 0
}

# GET $1 into $2 with Accept $3 (bounded by BLOB_TIMEOUT; written straight to the file, so
# memory stays flat whatever the size). Sets HTTP_STATUS/HTTP_ERROR as http does.
oci_get() {
    err="$RUN/agent-oci.err"
    rm -f "$2"
    if bb timeout "$BLOB_TIMEOUT" wget -q -O "$2" --header "Accept: $3" "$1" 2>"$err"; then
        HTTP_STATUS=200 HTTP_ERROR=
        return 0
    fi
    HTTP_STATUS=$(sed -n 's/.*server returned error: HTTP\/[0-9.]* \([0-9][0-9][0-9]\).*/\1/p' "$err" | head -n 1)
    [ -n "$HTTP_STATUS" ] || HTTP_STATUS=000
    HTTP_ERROR=$(head -n 1 "$err" | tr -d '\r')
    [ -n "$HTTP_ERROR" ] || HTTP_ERROR="timed out after ${BLOB_TIMEOUT}s"
    rm -f "$2"
    return 1
}

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

# The manifest $1 (any JSON layout) on one line without blanks (digests and media types
# have none), for the sed readers below.
json_flat() {
    tr -d ' \n\t\r' <"$1"
    echo  # (a last line without a newline is lost to "read")
}

# From the flattened manifest on stdin: the config digest; the layers as "digest mediaType"
# lines, in order.
manifest_config() {
    sed -n 's/.*"config":{[^}]*"digest":"\(sha256:[0-9a-f]\{64\}\)".*/\1/p'
}
manifest_layers() {
    sed -n 's/.*"layers":\[\(.*\)\].*/\1/p' | sed 's/},{/}\n{/g' | while IFS= read -r obj; do
        d=$(echo "$obj" | sed -n 's/.*"digest":"\(sha256:[0-9a-f]\{64\}\)".*/\1/p')
        t=$(echo "$obj" | sed -n 's/.*"mediaType":"\([^"]*\)".*/\1/p')
        [ -n "$d" ] && echo "$d ${t:-unknown}"
    done
}
# From a flattened image index on stdin: the digest of the manifest for architecture $1
# (linux), else nothing.
index_pick() {
    sed 's/},{/}\n{/g' | awk -v a="\"architecture\":\"$1\"" '
        index($0, a) { if (match($0, /sha256:[0-9a-f]+/)) { print substr($0, RSTART, RLENGTH); exit } }'
}

# Fetch blob $2 of repository $1 (under REG_BASE) into directory $3 as its hex name, unless
# a verified copy is there (a download cut short is fetched again). 1 on a failure
# (OCI_ERROR says which); the file is only kept when its sha256 is its digest.
fetch_blob() {
    hex=${2#sha256:}
    [ -s "$3/$hex" ] && [ "$(sha256_of "$3/$hex")" = "$hex" ] && return 0
    if ! oci_get "$REG_BASE/v2/$1/blobs/$2" "$3/.$hex.part" "*/*"; then
        OCI_ERROR="blob $2: $HTTP_STATUS $HTTP_ERROR"
        return 1
    fi
    got=$(sha256_of "$3/.$hex.part")
    if [ "$got" != "$hex" ]; then
        rm -f "$3/.$hex.part"
        OCI_ERROR="blob $2 does not match its digest (got sha256:$got); not used"
        return 1
    fi
    mv "$3/.$hex.part" "$3/$hex"
}

# Pull image $1 (a reference) into directory $2 (created): manifest.json, blobs/<hex> for
# the config and every layer, each checked against its digest. User-data $3 names the
# mirrors. Sets OCI_DIGEST (the manifest digest actually pulled) and OCI_VIA; on failure
# returns 1 with OCI_ERROR.
oci_pull() {
    OCI_ERROR=""
    parse_ref "$1" || { OCI_ERROR="'$1' is not an image reference (host[:port]/repo[:tag][@digest])"; return 1; }
    registry_base "$REF_HOST" "$3" || { OCI_ERROR=$REG_ERROR; return 1; }
    OCI_VIA=$REG_VIA
    mkdir -p "$2/blobs" || { OCI_ERROR="cannot create $2"; return 1; }
    m="$2/manifest.json"
    if ! oci_get "$REG_BASE/v2/$REF_REPO/manifests/$REF_REFERENCE" "$m.part" "$MANIFEST_TYPES"; then
        OCI_ERROR="manifest of $1 from $REG_VIA: $HTTP_STATUS $HTTP_ERROR"
        return 1
    fi
    digest="sha256:$(sha256_of "$m.part")"
    if json_flat "$m.part" | grep -q '"manifests":\['; then
        # An index: take this machine's manifest, by digest, and check it too.
        pick=$(json_flat "$m.part" | index_pick "$(arch_name)")
        [ -n "$pick" ] || { OCI_ERROR="$1 has no manifest for $(arch_name)"; return 1; }
        [ -z "$REF_DIGEST" ] || [ "$digest" = "$REF_DIGEST" ] \
            || { OCI_ERROR="the index of $1 does not match its digest (got $digest)"; return 1; }
        REF_DIGEST=$pick
        if ! oci_get "$REG_BASE/v2/$REF_REPO/manifests/$pick" "$m.part" "$MANIFEST_TYPES"; then
            OCI_ERROR="manifest $pick of $1 from $REG_VIA: $HTTP_STATUS $HTTP_ERROR"
            return 1
        fi
        digest="sha256:$(sha256_of "$m.part")"
    fi
    if [ -n "$REF_DIGEST" ] && [ "$digest" != "$REF_DIGEST" ]; then
        rm -f "$m.part"
        OCI_ERROR="the manifest of $1 does not match its digest (got $digest); not used"
        return 1
    fi
    mv "$m.part" "$m"
    OCI_DIGEST=$digest
    config=$(json_flat "$m" | manifest_config)
    [ -n "$config" ] || { OCI_ERROR="the manifest of $1 names no config"; return 1; }
    layers=$(json_flat "$m" | manifest_layers)
    [ -n "$layers" ] || { OCI_ERROR="the manifest of $1 names no layers"; return 1; }
    fetch_blob "$REF_REPO" "$config" "$2/blobs" || return 1
    echo "$layers" | while read -r d t; do
        case "$t" in
        *tar+gzip | *tar.gzip | *tar) ;;
        *) echo "layer $d is $t: only gzip'd or plain tar layers can be applied by this agent" >"$2/.error"; exit 1 ;;
        esac
        fetch_blob "$REF_REPO" "$d" "$2/blobs" || { echo "$OCI_ERROR" >"$2/.error"; exit 1; }
    done || { OCI_ERROR=$(cat "$2/.error"); rm -f "$2/.error"; return 1; }
    return 0
}
