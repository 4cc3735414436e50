# shellcheck shell=sh
# edgekit-agent part: applying a desired state by its upgrade kind (repave, reboot,
# in_place, none), reporting each phase, and, on the next boot, confirming a tentative slot
# or reporting the rollback. docs/agent.md ("Applying the desired state") is the contract.

#: Boots GRUB gives a tentative slot before it falls back (grub.cfg counts 3, 2, 1).
UPGRADE_TRIES=3
UPGRADE_FILE="$STATE_DIR/upgrade.env"
FAILED_FILE="$STATE_DIR/failed.env"
DESIRED_FILE="$STATE_DIR/desired.json"
HEALTH_DIR=${EDGEKIT_AGENT_HEALTH_DIR:-/etc/edgekit/health.d}

# Reboot now (busybox reboot -f: the sample OS has no init system to stop). Tests replace it.
reboot_now() {
    sync
    ${EDGEKIT_AGENT_REBOOT:-bb reboot -f}
}

other_slot() {
    if [ "$1" = B ]; then echo A; else echo B; fi
}

# Write file $1 (under STATE_DIR) from stdin: 0600, renamed into place, synced (it must
# survive the reboot or power cut that follows).
keep_file() {
    mkdir -p "$STATE_DIR"
    (umask 077 && cat >"$STATE_DIR/.$1.tmp") && mv "$STATE_DIR/.$1.tmp" "$STATE_DIR/$1" && sync
}

# The installed disk's mounts: COS_STATE (remounted read-write) at STATE_MNT, COS_GRUB at
# GRUB_MNT, GRUBENV its environment block, BOOTED_SLOT from edgekit.slot=. 1 on a live boot
# (no installed disk), with DISK_ERROR.
slot_paths() {
    BOOTED_SLOT=$(cmdline_arg edgekit.slot) || BOOTED_SLOT=""
    STATE_MNT=${EDGEKIT_AGENT_STATE_MNT:-$RUN/state}
    GRUB_MNT=${EDGEKIT_AGENT_GRUB_MNT:-$RUN/grub}
    GRUBENV="$GRUB_MNT/grub/grubenv"
}

disk_mounts() {
    [ -n "${DISK_READY:-}" ] && return 0
    slot_paths
    DISK_ERROR="this host runs live, not from an installed disk (no edgekit.slot=)"
    [ -n "$BOOTED_SLOT" ] || return 1
    if [ -z "${EDGEKIT_AGENT_STATE_MNT:-}" ]; then
        DISK_ERROR="COS_STATE is not mounted at $STATE_MNT"
        awk -v m="$STATE_MNT" '$2 == m { f = 1 } END { exit !f }' /proc/mounts || return 1
        DISK_ERROR="cannot remount COS_STATE read-write"
        bb mount -o remount,rw "$STATE_MNT" 2>/dev/null || return 1
        if ! awk -v m="$GRUB_MNT" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; then
            DISK_ERROR="no COS_GRUB partition"
            dev=$(find_label COS_GRUB 5) || return 1
            mkdir -p "$GRUB_MNT"
            DISK_ERROR="cannot mount COS_GRUB ($dev)"
            bb mount -t vfat -o rw,iocharset=iso8859-1 "$dev" "$GRUB_MNT" 2>/dev/null \
                || bb mount -t vfat "$dev" "$GRUB_MNT" 2>/dev/null || return 1
        fi
    fi
    DISK_ERROR=""
    DISK_READY=1
}

# A field of the booted slot's image.json ("digest", "ref", "version"); empty when unknown.
running_field() {
    [ -n "${STATE_MNT:-}" ] || slot_paths
    f="$STATE_MNT/slots/$BOOTED_SLOT/image.json"
    [ -n "$BOOTED_SLOT" ] && [ -r "$f" ] || return 0
    sed -n "s/^ *\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" "$f" | head -n 1
}

# The digest of the image this host runs: the booted slot's image.json, else what
# $STATE_DIR/image-digest says (a live boot told by its builder).
running_digest() {
    d=$(running_field digest)
    [ -z "$d" ] && [ -r "$STATE_DIR/image-digest" ] && d=$(head -n 1 "$STATE_DIR/image-digest")
    case "$d" in sha256:[0-9a-f]*) echo "$d" ;; esac
}

# report PHASE GENERATION MESSAGE [IMAGE]: POST the phase to the hub (HOSTPATH, AUTH set by
# main), with the digest actually running. 1 when the hub did not take it. With
# AGENT_OFFLINE=1 (an airgap upgrade, airgap.sh) the report is appended to PHASES_FILE on
# COS_PERSISTENT instead, in order, and sent when the hub is reachable again.
report() {
    r_digest=$(running_digest)
    r_body="$RUN/agent-report.json"
    {
        printf '{"phase":"%s","observedGeneration":%s' "$1" "$2"
        [ -n "${4:-}" ] && printf ',"providerImage":%s' "$(json_str "$4")"
        [ -n "$r_digest" ] && printf ',"imageDigest":%s' "$(json_str "$r_digest")"
        printf ',"message":%s}' "$(json_str "$3")"
    } >"$r_body"
    if [ "${AGENT_OFFLINE:-}" = 1 ]; then
        phases_record "$r_body" "$1" "$2" "$3"
        r_rc=$?
        rm -f "$r_body"
        return $r_rc
    fi
    http POST "$HOSTPATH/status" "$RUN/agent-report.answer" "$r_body" --header "$AUTH"
    r_rc=$?
    rm -f "$r_body" "$RUN/agent-report.answer"
    if [ "$r_rc" = 0 ]; then
        say "phase $1 generation=$2 reported: $3"
    else
        say "error: reporting $1 generation=$2 failed (${HTTP_STATUS} ${HTTP_REASON:-$HTTP_ERROR}); will retry"
    fi
    return $r_rc
}

# Run every executable in HEALTH_DIR (each bounded to 60 s); 1 with HEALTH_ERROR naming the
# first that failed. An image without checks is healthy once its agent reached the hub.
health_checks() {
    HEALTH_ERROR=""
    [ -d "$HEALTH_DIR" ] || return 0
    for check in "$HEALTH_DIR"/*; do
        [ -f "$check" ] && [ -x "$check" ] || continue
        if ! bb timeout 60 "$check" >"$RUN/agent-health.out" 2>&1; then
            HEALTH_ERROR="health check ${check##*/} failed: $(tail -n 1 "$RUN/agent-health.out")"
            return 1
        fi
    done
    return 0
}

# On a tentative boot (the booted slot is grubenv's edgekit_try): reboot after $1 seconds
# unless the agent confirmed the slot by then ($RUN/agent-confirmed), so a slot whose agent
# hangs or never reaches the hub uses up its tries and GRUB falls back.
start_watchdog() {
    (
        waited=0
        while [ "$waited" -lt "$1" ]; do
            [ -e "$RUN/agent-confirmed" ] && exit 0
            sleep 2
            waited=$((waited + 2))
        done
        say "slot $BOOTED_SLOT not confirmed healthy within ${1}s (edgekit.agent.confirm_within): rebooting"
        reboot_now
    ) &
}

# Early in every boot (before registering): on a tentative slot, start the watchdog.
upgrade_boot_start() {
    slot_paths
    if [ -n "$BOOTED_SLOT" ]; then
        # shellcheck disable=SC1091
        pretty=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")
        say "running slot $BOOTED_SLOT: image $(running_field ref) version $(running_field version) $(running_digest) ($pretty)"
    fi
    [ -r "$UPGRADE_FILE" ] || return 0
    disk_mounts || return 0
    [ "$(grubenv_get "$GRUBENV" edgekit_try)" = "$BOOTED_SLOT" ] || return 0
    say "slot $BOOTED_SLOT is tentative ($(grubenv_get "$GRUBENV" edgekit_tries) boots left after this one)"
    start_watchdog "$(cmdline_int edgekit.agent.confirm_within 300)"
}

# After registering and a heartbeat: finish what the last boot started. A tentative slot
# whose checks pass becomes the active one; one that fails is given up (tries=0, reboot); a
# boot of the previous slot after an upgrade is a rollback, reported with the reason.
upgrade_boot_check() {
    [ -r "$UPGRADE_FILE" ] || return 0
    U_KIND="" U_GENERATION="" U_SLOT="" U_FROM="" U_REF="" U_DIGEST="" U_REASON="" U_CLUSTER="" U_SOURCE=""
    # shellcheck disable=SC1090
    . "$UPGRADE_FILE"
    if [ "$U_KIND" = reboot ]; then
        report healthy "$U_GENERATION" "rebooted for generation $U_GENERATION" || return 1
        rm -f "$UPGRADE_FILE"
        return 0
    fi
    disk_mounts || { rm -f "$UPGRADE_FILE"; return 0; }
    try=$(grubenv_get "$GRUBENV" edgekit_try)
    if [ "$BOOTED_SLOT" = "$U_SLOT" ] && [ "$try" = "$U_SLOT" ]; then
        if health_checks; then
            grubenv_set "$GRUBENV" "edgekit_active=$U_SLOT" "edgekit_passive=$U_FROM" \
                edgekit_try= edgekit_tries= || { say "error: cannot write $GRUBENV"; return 1; }
            touch "$RUN/agent-confirmed"
            rm -f "$UPGRADE_FILE"
            say "slot $U_SLOT confirmed healthy: it is the active slot now (image $U_DIGEST)"
            report healthy "$U_GENERATION" "repaved: slot $U_SLOT runs $U_REF ($U_DIGEST), confirmed healthy" "$U_REF" \
                && { echo "$U_CLUSTER:$U_GENERATION" | keep_file observed || :; }  # handled: the watch must not apply it again
            return 0
        fi
        # Give the slot up now rather than after its tries: GRUB falls back on the next boot.
        printf "U_REASON='%s'\n" "$(echo "$HEALTH_ERROR" | tr -d "'")" >>"$UPGRADE_FILE"
        sync
        grubenv_set "$GRUBENV" edgekit_tries=0
        report failed "$U_GENERATION" "slot $U_SLOT ($U_DIGEST): $HEALTH_ERROR; falling back to slot $U_FROM" "$U_REF"
        say "rebooting into slot $U_FROM"
        reboot_now
        return 1
    fi
    if [ "$BOOTED_SLOT" = "$U_FROM" ]; then
        fell=$(cmdline_arg edgekit.fallback) || fell=""
        why=${U_REASON:-"it did not confirm its health within $UPGRADE_TRIES boots (a kernel that panics, an agent that never starts or never reaches the hub)"}
        [ -n "$fell" ] && why="$why; GRUB fell back (edgekit.fallback=$fell)"
        # A try still pending (the tentative slot was not even booted): forget it.
        [ -n "$try" ] && grubenv_set "$GRUBENV" edgekit_try= edgekit_tries=
        printf 'F_CLUSTER=%s\nF_GENERATION=%s\nF_DIGEST=%s\n' "$U_CLUSTER" "$U_GENERATION" "$U_DIGEST" \
            | keep_file failed.env
        say "rolled back to slot $BOOTED_SLOT ($(running_field version) $(running_digest)): slot $U_SLOT ($U_REF $U_DIGEST): $why"
        report rolled-back "$U_GENERATION" "rolled back to slot $BOOTED_SLOT: slot $U_SLOT ($U_REF $U_DIGEST): $why" "$U_REF" \
            || return 1
        rm -f "$UPGRADE_FILE"
        return 0
    fi
    rm -f "$UPGRADE_FILE"  # neither slot of that upgrade booted: the disk was changed
}

# Just before the reboot of an upgrade from a bundle: mark its generation handled
# (UPGRADE_SEEN, "clusterUid:generation", set by airgap.sh) so the stick, still attached,
# is not applied again by the next boot. Nothing for an upgrade asked by the hub.
upgrade_handled() {
    [ -z "${UPGRADE_SEEN:-}" ] || echo "$UPGRADE_SEEN" | keep_file observed || :
}

# repave GENERATION IMAGE CLUSTER: pull IMAGE (or, with BUNDLE_LAYOUT and BUNDLE_DIGEST set,
# read it from a checked upgrade bundle's layout), write it to the passive slot, make it the
# tentative slot and reboot. When it cannot, it reports failed (the active slot is left as
# it was); 1 only when the hub did not take the last report.
repave() {
    case "$3" in *[!A-Za-z0-9._-]*) report failed "$1" "cannot repave: cluster uid '$3' is not a plain name" "$2"; return ;; esac
    disk_mounts || { report failed "$1" "cannot repave: $DISK_ERROR" "$2"; return; }
    passive=$(other_slot "$BOOTED_SLOT")
    from_digest=$(running_digest)
    started=$(now)
    if [ -n "${BUNDLE_LAYOUT:-}" ]; then
        # From an upgrade bundle (airgap.sh): the layout was verified blob by blob; staged
        # from the stick through symlinks in $RUN (no copy of the image in RAM).
        report downloading "$1" "reading $2 ($BUNDLE_DIGEST) from the upgrade bundle for slot $passive" "$2" || :
        dl="$RUN/bundle-image"
        layout_source "$BUNDLE_LAYOUT" "$BUNDLE_DIGEST" "$dl" \
            || { report failed "$1" "cannot read the upgrade bundle's image: $OCI_ERROR" "$2"; return; }
        OCI_DIGEST=$BUNDLE_DIGEST OCI_VIA="upgrade bundle"
    else
        report downloading "$1" "pulling $2 for slot $passive" "$2" || :
        dl="$STATE_MNT/download"
        if ! oci_pull "$2" "$dl" "$USERDATA"; then
            report failed "$1" "cannot pull $2: $OCI_ERROR" "$2"
            return
        fi
    fi
    if [ "$OCI_DIGEST" = "$from_digest" ]; then
        rm -rf "$dl"
        report healthy "$1" "$2 ($OCI_DIGEST) already runs in slot $BOOTED_SLOT" "$2"
        return
    fi
    report applying "$1" "writing $2 ($OCI_DIGEST, via $OCI_VIA) to slot $passive" "$2" || :
    if ! stage_payload "$dl" "$2" "$OCI_DIGEST" "$STATE_MNT/staged"; then
        report failed "$1" "cannot stage $2: $STAGE_ERROR" "$2"
        return
    fi
    if ! install_slot "$STATE_MNT/staged" "$STATE_MNT" "$passive"; then
        report failed "$1" "cannot write slot $passive: $INSTALL_ERROR" "$2"
        return
    fi
    rm -rf "$dl" "$STATE_MNT/staged"
    printf "U_KIND=repave\nU_CLUSTER='%s'\nU_GENERATION=%s\nU_SLOT=%s\nU_FROM=%s\nU_REF='%s'\nU_DIGEST=%s\nU_SOURCE=%s\n" \
        "$3" "$1" "$passive" "$BOOTED_SLOT" "$2" "$OCI_DIGEST" "${UPGRADE_SOURCE:-hub}" | keep_file upgrade.env \
        || { report failed "$1" "cannot write $UPGRADE_FILE" "$2"; return; }
    if ! grubenv_set "$GRUBENV" "edgekit_try=$passive" "edgekit_tries=$UPGRADE_TRIES"; then
        rm -f "$UPGRADE_FILE"
        report failed "$1" "cannot write $GRUBENV" "$2"
        return
    fi
    say "slot $passive holds $2 ($OCI_DIGEST), written in $(($(now) - started))s"
    upgrade_handled
    report rebooting "$1" "rebooting into slot $passive ($OCI_DIGEST)" "$2" || :
    reboot_now
    return 0
}

# apply_desired DESIRED_JSON: apply one new desired state by its upgrade kind. The desired
# state is kept in $DESIRED_FILE first (it is the last one this host knows when offline).
# Returns 0 when handled (reported), 1 to retry on the next poll.
apply_desired() {
    a_gen=$(desired_field "$1" generation)
    a_cluster=$(desired_field "$1" clusterUid)
    a_action=$(desired_field "$1" action)
    a_upgrade=$(desired_field "$1" upgrade)
    a_image=$(desired_field "$1" providerImage)
    keep_file desired.json <"$1" || :
    if [ -r "$FAILED_FILE" ] && grep -qx "F_GENERATION=$a_gen" "$FAILED_FILE" \
        && grep -qx "F_CLUSTER=$a_cluster" "$FAILED_FILE"; then
        return 0  # rolled back and reported: wait for a new generation
    fi
    if [ "$a_action" = release ]; then
        report healthy "$a_gen" "released from cluster $a_cluster" && A_LINE="reported healthy (released)"
        return
    fi
    case "${a_upgrade:-none}" in
    repave)
        A_LINE="repave"
        repave "$a_gen" "$a_image" "$a_cluster"
        ;;
    reboot)
        printf "U_KIND=reboot\nU_CLUSTER='%s'\nU_GENERATION=%s\nU_SOURCE=%s\n" "$a_cluster" "$a_gen" \
            "${UPGRADE_SOURCE:-hub}" | keep_file upgrade.env || return 1
        upgrade_handled
        report rebooting "$a_gen" "rebooting to apply generation $a_gen" "$a_image" || :
        reboot_now
        ;;
    in_place)
        report healthy "$a_gen" "generation $a_gen applied in place (kept in $DESIRED_FILE)" "$a_image" \
            && A_LINE="reported healthy (applied in place)"
        ;;
    *)
        report healthy "$a_gen" "generation $a_gen: nothing to apply (upgrade ${a_upgrade:-none})" "$a_image" \
            && A_LINE="reported healthy (nothing to apply)"
        ;;
    esac
}
