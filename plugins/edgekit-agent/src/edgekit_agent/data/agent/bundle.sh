# shellcheck shell=sh
# edgekit-agent part: the file transport (HMAC-signed registration bundles on removable media). Sourced by /usr/bin/edgekit-agent (docs/agent.md).

# ---------------------------------------------------------------------------------------
# file transport: an HMAC-signed registration bundle on removable media (edgekit.hub.airgap)

# Hex string $1 with every byte XORed with the byte 0x$2.
xor_hex() {
    printf '%s' "$1" | awk -v b="$2" '
        function hexval(h,   i, v) {
            v = 0
            for (i = 1; i <= length(h); i++) v = v * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1
            return v
        }
        {
            bv = hexval(b); out = ""
            for (i = 1; i <= length($0); i += 2) out = out sprintf("%02x", xor(hexval(substr($0, i, 2)), bv))
            print out
        }'
}

# HMAC-SHA256 (RFC 2104) of file $2 under the key given as lowercase hex $1 (<= 64 bytes).
hmac_sha256() {
    key=$(printf '%s' "$1" | awk '{ k = $0; while (length(k) < 128) k = k "0"; print k }')
    inner=$( { printf '%s' "$(xor_hex "$key" 36)" | xxd -r -p; cat "$2"; } | sha256sum | cut -d' ' -f1)
    { printf '%s' "$(xor_hex "$key" 5c)" | xxd -r -p; printf '%s' "$inner" | xxd -r -p; } \
        | sha256sum | cut -d' ' -f1
}

# Write the bundle for host JSON $2 and token $1 into directory $3; prints its path.
# K = sha256(token) (raw), fingerprint = sha256(K)[:16 hex], HMAC over the payload's base64.
make_bundle() {
    k=$(printf '%s' "$1" | sha256sum | cut -d' ' -f1)
    fp=$(printf '%s' "$k" | xxd -r -p | sha256sum | cut -c1-16)
    nonce=$(head -c 16 /dev/urandom | xxd -p | tr -d '\n')
    created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    b64=$(printf '{"created":"%s","host":%s,"nonce":"%s","tokenFingerprint":"%s"}' \
        "$created" "$2" "$nonce" "$fp" | base64 -w 0)
    printf '%s' "$b64" >"$RUN/agent-payload.b64"
    mac=$(hmac_sha256 "$k" "$RUN/agent-payload.b64")
    rm -f "$RUN/agent-payload.b64"
    name="edgekit-registration-$4.json"
    printf '{\n  "format": "edgekit-registration/v1",\n  "payload": "%s",\n  "hmac": "%s"\n}\n' \
        "$b64" "$mac" >"$3/.$name.tmp" || return 1
    mv "$3/.$name.tmp" "$3/$name" || return 1
    echo "$3/$name"
}

# Register by writing a bundle to the filesystem labelled edgekit.agent.reg_label
# (default EDGEKIT-REG, a FAT stick); the hub imports it later.
register_by_file() {
    label=$(cmdline_arg edgekit.agent.reg_label) || label=EDGEKIT-REG
    dev=$(find_label "$label" "$(cmdline_int edgekit.agent.media_wait 10)") \
        || fail "no filesystem labelled $label for the registration bundle"
    dir="$RUN/reg"
    mkdir -p "$dir"
    # The sample OS has no nls_utf8 (FAT's default iocharset), so ask for iso8859-1 first.
    bb mount -o rw,iocharset=iso8859-1 "$dev" "$dir" 2>/dev/null || bb mount -o rw "$dev" "$dir" \
        || fail "cannot mount $dev ($label) read-write"
    if path=$(make_bundle "$1" "$2" "$dir" "$3"); then
        sync
        bb umount "$dir"
        say "wrote registration bundle ${path##*/} to $label ($dev)"
        return 0
    fi
    bb umount "$dir" 2>/dev/null
    fail "cannot write the registration bundle to $dev ($label)"
}

