# shellcheck shell=sh
# edgekit-agent part: HTTP with busybox wget or nc through a proxy, small JSON readers. Sourced by /usr/bin/edgekit-agent (docs/agent.md).

# ---------------------------------------------------------------------------------------
# HTTP (busybox wget: no -T, which segfaults on Debian 12; a timeout applet bounds it)

# http METHOD URL OUT [POSTFILE [HEADER...]]: sets HTTP_STATUS (000 = no answer) and
# returns 0 on a 2xx answer, whose body is in OUT.
http() {
    if [ -n "${http_proxy:-}" ]; then
        http_proxied "$@"
        return
    fi
    method=$1 url=$2 out=$3 post=$4
    shift 4
    err="$RUN/agent-wget.err"
    set -- --header "Content-Type: application/json" --header "Accept: application/json" "$@"
    [ "$method" = POST ] && set -- "$@" --post-file "$post"
    rm -f "$out"
    if bb timeout "$REQUEST_TIMEOUT" wget -q -O "$out" "$@" "$url" 2>"$err"; then
        HTTP_STATUS=200 HTTP_REASON= HTTP_ERROR=
        return 0
    fi
    HTTP_STATUS=$(sed -n 's/.*server returned error: HTTP\/[0-9.]* \([0-9][0-9][0-9]\).*/\1/p' "$err" \
        | head -n 1)
    HTTP_REASON=$(sed -n 's/.*server returned error: HTTP\/[0-9.]* [0-9][0-9][0-9] *//p' "$err" \
        | head -n 1 | tr -d '\r')
    [ -n "$HTTP_STATUS" ] || HTTP_STATUS=000
    HTTP_ERROR=$(head -n 1 "$err" | tr -d '\r')
    rm -f "$out"
    return 1
}

# http through $http_proxy, spoken with nc: busybox wget turns a POST into a GET when it
# goes through a proxy. Same interface as http. HTTP/1.0, so the proxy closes after the
# answer; the request file (it holds the token or credential) is 0600 and removed.
http_proxied() {
    method=$1 url=$2 out=$3 post=$4
    shift 4
    err="$RUN/agent-wget.err"
    p=${http_proxy#*://}
    p=${p%%/*}
    auth=""
    case "$p" in *@*)
        auth="Proxy-Authorization: Basic $(printf '%s' "${p%@*}" | base64 -w 0)"
        p=${p##*@}
        ;;
    esac
    phost=${p%:*}
    pport=${p##*:}
    [ "$phost" = "$p" ] && pport=80
    host=${url#*://}
    host=${host%%/*}
    req="$RUN/agent-request"
    resp="$RUN/agent-response"
    (
        umask 077
        printf '%s %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: edgekit-agent\r\n' "$method" "$url" "$host"
        printf 'Accept: application/json\r\nContent-Type: application/json\r\n'
        [ -n "$auth" ] && printf '%s\r\n' "$auth"
        while [ $# -ge 2 ]; do
            [ "$1" = --header ] && printf '%s\r\n' "$2"
            shift 2
        done
        if [ "$method" = POST ]; then
            printf 'Content-Length: %s\r\n\r\n' "$(wc -c <"$post" | tr -d ' ')"
            cat "$post"
        else
            printf '\r\n'
        fi
    ) >"$req"
    rm -f "$out"
    bb timeout "$REQUEST_TIMEOUT" nc -w 10 "$phost" "$pport" <"$req" >"$resp" 2>"$err"
    rm -f "$req"
    status_line=$(head -n 1 "$resp" | tr -d '\r')
    HTTP_STATUS=$(echo "$status_line" | sed -n 's/^HTTP\/[0-9.]* \([0-9][0-9][0-9]\).*/\1/p')
    HTTP_REASON=$(echo "$status_line" | sed -n 's/^HTTP\/[0-9.]* [0-9][0-9][0-9] *//p')
    HTTP_ERROR=$(head -n 1 "$err" | tr -d '\r')
    [ -n "$HTTP_ERROR" ] || HTTP_ERROR="no answer from the proxy ${phost}:${pport}"
    if [ -z "$HTTP_STATUS" ]; then
        HTTP_STATUS=000
        rm -f "$resp"
        return 1
    fi
    case "$HTTP_STATUS" in
    2*)
        # The body follows the first empty line.
        sed '1,/^\r\{0,1\}$/d' "$resp" >"$out"
        rm -f "$resp"
        HTTP_ERROR=
        return 0
        ;;
    esac
    rm -f "$resp"
    return 1
}

# The string value of "$2" in the compact JSON file $1.
json_get() {
    sed -n "s/.*\"$2\":\"\\([^\"]*\\)\".*/\\1/p" "$1" | head -n 1
}

# The number value of "$2" in the compact JSON file $1.
json_num() {
    sed -n "s/.*\"$2\":\\([0-9][0-9]*\\).*/\\1/p" "$1" | head -n 1
}

# Why the hub refused a registration, in words (busybox wget keeps no error body).
refusal() {
    case "$1" in
    400) echo "the hub refused the request as invalid (400 $HTTP_REASON); check the site name and tags" ;;
    401) echo "the hub does not know the registration token (401 $HTTP_REASON); check stylus.site.edgeHostToken" ;;
    403) echo "the registration token is revoked, expired, used up or not valid for this site (403 $HTTP_REASON); check stylus.site.name" ;;
    409) echo "this host is registered in another site, or its credential ($STATE_DIR/credential) is not the hub's (409 $HTTP_REASON); an admin can reset or delete it on the hub" ;;
    *) echo "the hub answered $1 $HTTP_REASON" ;;
    esac
}

# Seconds since boot (monotonic enough for deadlines; the clock may be unset).
now() {
    cut -d. -f1 /proc/uptime
}

# Keep $2 in $STATE_DIR/$1, readable by root only, written atomically and flushed: on an
# installed disk STATE_DIR is on COS_PERSISTENT, and a credential the hub has rotated must
# survive a power cut right after the answer (else the next boot is refused with a 409).
keep_secret() {
    mkdir -p "$STATE_DIR"
    chmod 0700 "$STATE_DIR"
    (umask 077 && printf '%s\n' "$2" >"$STATE_DIR/.$1.tmp") || return 1
    mv "$STATE_DIR/.$1.tmp" "$STATE_DIR/$1" && sync
}

