# upgrade_bundle.sh: checking an airgap upgrade bundle on removable media (POSIX sh,
# busybox). A part of the agent, sourced after bundle.sh (hmac_sha256 comes from there).
# The format and the key scheme are edgekit.hub.upgrade_bundles' (docs/agent.md):
#   K = sha256(token), K_host = HMAC-SHA256(K, "edgekit-upgrade/v1 <uid>"),
#   envelope hmac = HMAC-SHA256(K_host, the payload's base64 text).

UPGRADE_FORMAT=edgekit-upgrade/v1

# The value of the top-level string member "$2" of the pretty envelope file $1 (one member
# per line, as edgekit writes it); empty when absent.
envelope_field() {
    sed -n "s/^  \"$2\": \"\\([^\"]*\\)\",\\{0,1\\}\$/\\1/p" "$1" | head -n 1
}

# upgrade_bundle_check ENVELOPE TOKEN UID APPLIED PAYLOAD_OUT
# Checks the envelope as edgekit.hub.upgrade_bundles.read_upgrade_bundle does; on success
# writes the decoded payload to PAYLOAD_OUT and sets BUNDLE_GENERATION, BUNDLE_DIGEST,
# BUNDLE_LAYOUT (absolute; both empty for a bundle without an image) and returns 0; else
# sets BUNDLE_ERROR to one line saying why and returns 1. APPLIED is what the host handled
# last: "clusterUid:generation" (the "observed" file: generations count per cluster, so a
# bundle of another cluster is never "old"), a bare generation (any cluster), or empty.
upgrade_bundle_check() {
    # (names of their own: the agent's main keeps "uid", "token" and "mac" in globals)
    env_file=$1 u_token=$2 u_uid=$3 applied=$4 out=$5
    BUNDLE_GENERATION= BUNDLE_DIGEST= BUNDLE_LAYOUT= BUNDLE_ERROR=
    rm -f "$out"
    if [ "$(envelope_field "$env_file" format)" != "$UPGRADE_FORMAT" ]; then
        BUNDLE_ERROR="${env_file##*/} is not an $UPGRADE_FORMAT envelope"
        return 1
    fi
    for_uid=$(envelope_field "$env_file" hostUid)
    if [ "$for_uid" != "$u_uid" ]; then
        BUNDLE_ERROR="${env_file##*/} is for host $for_uid, not $u_uid"
        return 1
    fi
    b64=$(envelope_field "$env_file" payload)
    u_mac=$(envelope_field "$env_file" hmac)
    printf '%s' "$b64" >"$out.b64"
    printf '%s %s' "$UPGRADE_FORMAT" "$u_uid" >"$out.msg"
    k=$(printf '%s' "$u_token" | sha256sum | cut -d' ' -f1)
    k_host=$(hmac_sha256 "$k" "$out.msg")
    want=$(hmac_sha256 "$k_host" "$out.b64")
    rm -f "$out.msg"
    u_token="" k="" k_host=""
    if [ -z "$b64" ] || [ "$want" != "$u_mac" ]; then
        rm -f "$out.b64"
        BUNDLE_ERROR="${env_file##*/} fails its HMAC check: altered, or made for another host"
        return 1
    fi
    bb base64 -d "$out.b64" >"$out" 2>/dev/null
    rm -f "$out.b64"
    # The payload's head, in the fixed member order the hub writes.
    head=$(sed -n 's/^{"hostUid":"\([^"]*\)","generation":\([0-9][0-9]*\),"image":\(null\|{"digest":"\(sha256:[0-9a-f]\{64\}\)","layout":"\(images\/sha256-[0-9a-f]\{64\}\)"\).*/\1 \2 \4 \5/p' "$out")
    set -- $head
    if [ "${1:-}" != "$u_uid" ] || [ -z "${2:-}" ]; then
        rm -f "$out"
        BUNDLE_ERROR="${env_file##*/} has a payload for another host or without a generation"
        return 1
    fi
    case "$applied" in
    *:*)
        [ "$(desired_field "$out" clusterUid)" = "${applied%:*}" ] || applied=""
        applied=${applied##*:}
        ;;
    esac
    if [ -n "$applied" ] && [ "$2" -le "$applied" ]; then
        rm -f "$out"
        BUNDLE_ERROR="${env_file##*/} carries generation $2, but $applied is applied"
        return 1
    fi
    BUNDLE_GENERATION=$2
    if [ -n "${3:-}" ]; then
        BUNDLE_DIGEST=$3
        BUNDLE_LAYOUT="$(cd "${env_file%/*}" && pwd)/$4"
        if ! layout_verify "$BUNDLE_LAYOUT" "$BUNDLE_DIGEST"; then
            rm -f "$out"
            BUNDLE_ERROR="${env_file##*/}: $BUNDLE_ERROR"
            BUNDLE_GENERATION= BUNDLE_DIGEST= BUNDLE_LAYOUT=
            return 1
        fi
    fi
    return 0
}

# The sha256 file digest of blob "sha256:<hex>" $2 in OCI layout $1 equals its name?
blob_ok() {
    hex=${2#sha256:}
    [ -f "$1/blobs/sha256/$hex" ] || return 1
    [ "$(sha256sum "$1/blobs/sha256/$hex" | cut -d' ' -f1)" = "$hex" ]
}

# layout_verify LAYOUT MANIFEST_DIGEST: the manifest and every blob it names (config and
# layers) are present and hash to their digests; else BUNDLE_ERROR says which and returns 1.
layout_verify() {
    if ! blob_ok "$1" "$2"; then
        BUNDLE_ERROR="the image layout's manifest $2 is missing or does not match its digest"
        return 1
    fi
    for d in $(grep -o '"digest" *: *"sha256:[0-9a-f]\{64\}"' "$1/blobs/sha256/${2#sha256:}" \
        | sed 's/.*"\(sha256:[0-9a-f]*\)"/\1/'); do
        if ! blob_ok "$1" "$d"; then
            BUNDLE_ERROR="blob $d of the image is missing or does not match its digest"
            return 1
        fi
    done
    return 0
}
