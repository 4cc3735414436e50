# shellcheck shell=sh
# edgekit-agent part: airgap upgrades. A host that cannot reach its hub (or registers by
# file) looks for its upgrade bundle on a stick (edgekit.hub.upgrade_bundles writes it),
# checks it (upgrade_bundle.sh), applies its desired state as the hub's own would be
# (apply_desired, upgrade.sh: a repave reads the image from the stick's OCI layout) and
# keeps every phase on COS_PERSISTENT until the hub is reachable again. docs/agent.md
# ("Airgap upgrades from a stick") is the contract.

#: The phases recorded while offline, one report body (JSON) a line, oldest first.
PHASES_FILE="$STATE_DIR/phases.pending"

# phases_record BODY PHASE GENERATION MESSAGE: append report body file BODY to PHASES_FILE
# (synced: the reboot of a repave follows).
phases_record() {
    mkdir -p "$STATE_DIR" || return 1
    { cat "$1" && echo; } >>"$PHASES_FILE" || { say "error: cannot write $PHASES_FILE"; return 1; }
    chmod 0600 "$PHASES_FILE"
    sync
    say "phase $2 generation=$3 recorded (hub unreachable; reported when it is back): $4"
}

# After registering: send the phases recorded offline, in order (HOSTPATH, AUTH set). A
# report the hub refuses outright (a 4xx: the host's desired state moved on) is dropped with
# a line; on any other failure the rest is kept for the next try. 1 when some are left.
phases_flush() {
    [ -s "$PHASES_FILE" ] || return 0
    p_left="$STATE_DIR/.phases.left"
    p_body="$RUN/agent-phase.json"
    p_sent=0
    : >"$p_left"
    p_fail=""
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        if [ -n "$p_fail" ]; then
            printf '%s\n' "$line" >>"$p_left"
            continue
        fi
        printf '%s' "$line" >"$p_body"
        if http POST "$HOSTPATH/status" "$RUN/agent-phase.answer" "$p_body" --header "$AUTH"; then
            p_sent=$((p_sent + 1))
        elif [ "${HTTP_STATUS#4}" != "$HTTP_STATUS" ] && [ "$HTTP_STATUS" != 408 ] && [ "$HTTP_STATUS" != 429 ]; then
            say "error: the hub refused a phase recorded offline ($HTTP_STATUS $HTTP_REASON): dropped"
        else
            p_fail=1
            printf '%s\n' "$line" >>"$p_left"
        fi
    done <"$PHASES_FILE"
    rm -f "$p_body" "$RUN/agent-phase.answer"
    if [ -s "$p_left" ]; then
        mv "$p_left" "$PHASES_FILE" && sync
        say "error: sending the phases recorded offline failed (${HTTP_STATUS} ${HTTP_REASON:-$HTTP_ERROR}); will retry"
        return 1
    fi
    rm -f "$p_left" "$PHASES_FILE"
    sync
    say "reported $p_sent phases recorded while the hub was unreachable"
}

# layout_source LAYOUT DIGEST DIR: make DIR what stage_payload reads (oci_pull's shape:
# manifest.json, blobs/<hex>) from OCI layout LAYOUT (blobs/sha256/<hex>) by symlinks, so
# the image is read from the stick once, while staging. 1 with OCI_ERROR.
layout_source() {
    OCI_ERROR=""
    g_manifest="$1/blobs/sha256/${2#sha256:}"
    if json_flat "$g_manifest" | grep -q '"manifests":\['; then
        OCI_ERROR="its image $2 is an index, not one image's manifest"
        return 1
    fi
    rm -rf "$3" && mkdir -p "$3" || { OCI_ERROR="cannot create $3"; return 1; }
    ln -s "$g_manifest" "$3/manifest.json" && ln -s "$1/blobs/sha256" "$3/blobs" \
        || { OCI_ERROR="cannot link the layout into $3"; return 1; }
}

# What this host handled last, "clusterUid:generation" (the "observed" file): what a
# bundle of that cluster must be newer than. Empty when nothing was handled yet.
applied_generation() {
    g_o=$(cat "$STATE_DIR/observed" 2>/dev/null) || g_o=""
    case "${g_o##*:}" in '' | *[!0-9]*) ;; *) echo "$g_o" ;; esac
}

# The device holding filesystem label $1 now (no wait); 1 when there is none.
stick_now() {
    bb findfs "LABEL=$1" 2>/dev/null
}

# The mount of the upgrade stick: device $1 at AIRGAP_MNT, read-only. 1 when it fails.
stick_mount() {
    AIRGAP_MNT="$RUN/upgrade-stick"
    AIRGAP_OWN=""
    g_at=$(mounted_at "$1")
    if [ -n "$g_at" ]; then
        AIRGAP_MNT=$g_at
        return 0
    fi
    mkdir -p "$AIRGAP_MNT"
    # (the sample OS has no nls_utf8, FAT's default iocharset: ask for iso8859-1 first)
    bb mount -o ro,iocharset=iso8859-1 "$1" "$AIRGAP_MNT" 2>/dev/null \
        || bb mount -o ro "$1" "$AIRGAP_MNT" 2>/dev/null || return 1
    AIRGAP_OWN=1
}

stick_umount() {
    [ -z "${AIRGAP_OWN:-}" ] || bb umount "$AIRGAP_MNT" 2>/dev/null || :
    AIRGAP_OWN=""
}

# airgap_scan: look for this host's upgrade bundle (uid, USERDATA set by main) on the
# filesystem labelled edgekit.agent.upgrade_label (default EDGEKIT-UPG); apply it when it
# passes every check. Each envelope is tried once per boot (its sha256 is remembered in
# $RUN), so a refusal is one console line, not one per retry. 0 when a bundle was applied
# (a repave or a reboot does not return: the host reboots), 1 otherwise.
airgap_scan() {
    g_label=$(cmdline_arg edgekit.agent.upgrade_label) || g_label=EDGEKIT-UPG
    # Only a boot's first look waits for the stick to appear; the retries and watch turns of
    # a host without one must not each wait too.
    if [ -e "$RUN/agent-upgrade-looked" ]; then
        g_dev=$(stick_now "$g_label") || return 1
    else
        : >"$RUN/agent-upgrade-looked"
        g_dev=$(find_label "$g_label" "$(cmdline_int edgekit.agent.upgrade_wait 1)") || return 1
    fi
    [ -n "$g_dev" ] || return 1
    g_name="edgekit-upgrade-$uid.json"
    g_seen="$RUN/agent-upgrade-seen"
    if ! stick_mount "$g_dev"; then
        grep -qx "mount $g_dev" "$g_seen" 2>/dev/null \
            || say "upgrade bundle refused: cannot mount $g_dev ($g_label) read-only"
        echo "mount $g_dev" >>"$g_seen"
        return 1
    fi
    g_env="$AIRGAP_MNT/edgekit-upgrade/$g_name"
    if [ ! -f "$g_env" ]; then
        if ! grep -qx "none $g_dev" "$g_seen" 2>/dev/null; then
            g_others=$(cd "$AIRGAP_MNT/edgekit-upgrade" 2>/dev/null && ls edgekit-upgrade-*.json 2>/dev/null \
                | sed 's/^edgekit-upgrade-//; s/\.json$//' | tr '\n' ' ' | sed 's/ $//')
            say "upgrade bundle refused: $g_label ($g_dev) has no $g_name (it holds bundles for other hosts: ${g_others:-none})"
            echo "none $g_dev" >>"$g_seen"
        fi
        stick_umount
        return 1
    fi
    g_sum=$(sha256sum "$g_env" | cut -d' ' -f1)
    if grep -qx "$g_sum" "$g_seen" 2>/dev/null; then
        stick_umount
        return 1
    fi
    echo "$g_sum" >>"$g_seen"
    g_payload="$RUN/agent-upgrade-payload.json"
    # The token is read from the user-data here and cleared at once (never on a command line).
    g_tok=$(site_field "$USERDATA" edgeHostToken)
    if ! upgrade_bundle_check "$g_env" "$g_tok" "$uid" "$(applied_generation)" "$g_payload"; then
        g_tok=""
        say "upgrade bundle refused: $BUNDLE_ERROR ($g_label, $g_dev); nothing of it is used"
        stick_umount
        return 1
    fi
    g_tok=""
    say "upgrade bundle accepted: $g_name generation $BUNDLE_GENERATION, image ${BUNDLE_DIGEST:-<none>} ($g_label, $g_dev)"
    airgap_apply "$g_payload"
    g_rc=$?
    rm -f "$g_payload" "$g_payload.desired"
    stick_umount
    return $g_rc
}

# airgap_apply PAYLOAD: apply the desired state of a checked bundle payload by its upgrade
# kind, reporting offline (PHASES_FILE). The payload's head is fixed (upgrade_bundle.sh), so
# the "desired" member is cut out by an anchored pattern into the hub's answer shape.
airgap_apply() {
    g_desired="$1.desired"
    sed -n 's/^{"hostUid":"[^"]*","generation":[0-9]*,"image":\(null\|{[^{}]*}\),"site":\(null\|"[^"]*"\),"created":"[^"]*","nonce":"[^"]*","desired":/{"desired":/p' \
        "$1" >"$g_desired"
    b_gen=$(desired_field "$g_desired" generation)
    b_cluster=$(desired_field "$g_desired" clusterUid)
    if [ "$b_gen" != "$BUNDLE_GENERATION" ]; then
        say "upgrade bundle refused: its desired state is not generation $BUNDLE_GENERATION"
        return 1
    fi
    # The bundle's desired state is this host's assignment now (what an offline boot
    # prints); assignment.env is sourced, so only plain values are written.
    b_assign=$(printf 'CLUSTER_NAME=%s\nCLUSTER_UID=%s\nROLE=%s\nPOOL=%s\nPROVIDER_IMAGE=%s\nGENERATION=%s\n' \
        "$(desired_field "$g_desired" clusterName)" "$b_cluster" "$(desired_field "$g_desired" role)" \
        "$(desired_field "$g_desired" pool)" "$(desired_field "$g_desired" providerImage)" "$b_gen")
    if ! printf '%s\n' "$b_assign" | grep -q '[^A-Za-z0-9._:/@+=-]'; then
        printf '%s\n' "$b_assign" | keep_file assignment.env || :
    fi
    UPGRADE_SOURCE=bundle UPGRADE_SEEN="$b_cluster:$b_gen" AGENT_OFFLINE=1
    A_LINE="recorded"
    apply_desired "$g_desired"
    g_rc=$?
    # (a repave or reboot only returns when it failed, or in tests)
    [ "$g_rc" = 0 ] && echo "$UPGRADE_SEEN" | keep_file observed
    say "observed generation=$b_gen upgrade=$(desired_field "$g_desired" upgrade) from the upgrade bundle: $A_LINE"
    UPGRADE_SOURCE="" UPGRADE_SEEN="" AGENT_OFFLINE="" BUNDLE_LAYOUT="" BUNDLE_DIGEST=""
    return $g_rc
}

# airgap_turn: what a boot or a watch turn does when the hub is unreachable (no answer, a
# 5xx, no network) or the host registers by file: confirm a tentative slot that a bundle
# wrote (its health checks; the hub cannot be asked), or report its rollback; then, unless
# an upgrade is still pending confirmation, scan the stick.
airgap_turn() {
    # The boot check once per boot, as main does it (an upgrade.env this boot wrote, before
    # a reboot that did not happen, is not the last boot's).
    if [ -r "$UPGRADE_FILE" ] && [ ! -e "$RUN/agent-airgap-checked" ]; then
        grep -qx "U_SOURCE=bundle" "$UPGRADE_FILE" || return 1  # the hub's upgrade: wait for it
        : >"$RUN/agent-airgap-checked"
        AGENT_OFFLINE=1
        upgrade_boot_check
        AGENT_OFFLINE=""
    fi
    : >"$RUN/agent-airgap-checked"
    [ -r "$UPGRADE_FILE" ] && return 1  # still pending (or written by this boot)
    airgap_scan
}
