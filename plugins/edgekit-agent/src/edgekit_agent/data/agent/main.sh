# shellcheck shell=sh
# edgekit-agent part: main: register, wait for the assignment, watch. Sourced by /usr/bin/edgekit-agent (docs/agent.md).

# ---------------------------------------------------------------------------------------
# main

agent_main() {
    mkdir -p "$RUN"
    chmod 0700 "$RUN"
    timeout=$(cmdline_int edgekit.agent.timeout 120)
    poll=$(cmdline_int edgekit.agent.poll 5)
    [ "$poll" -ge 1 ] || poll=1
    transport=$(cmdline_arg edgekit.agent.transport) || transport=http
    started=$(now)
    deadline=$((started + timeout))
    # edgekit.agent.watch=S (or forever): keep applying what the desired state says.
    watch=$(cmdline_arg edgekit.agent.watch) || watch=0
    case "$watch" in forever) ;; '' | *[!0-9]*) watch=0 ;; esac
    max_backoff=$(cmdline_int edgekit.agent.max_backoff 30)
    [ "$max_backoff" -ge 1 ] || max_backoff=1

    find_user_data || fail "no user-data: no '${SITE_LABEL:-cidata}' ISO with /user-data and no /config.yaml on a '${ISO_LABEL:-COS_LIVE}' volume"
    endpoint=$(site_field "$USERDATA" paletteEndpoint)
    token=$(site_field "$USERDATA" edgeHostToken)
    site=$(site_field "$USERDATA" name)
    disabled=$(site_field "$USERDATA" disableAutoRegister)
    say "user-data from $USERDATA_FROM"
    # A tentative slot after a repave: reboot (and so use up a try) unless confirmed in time.
    upgrade_boot_start
    case "$disabled" in true | True | TRUE | yes)
        say "stylus.site.disableAutoRegister is set: not registering"
        return 0
        ;;
    esac
    [ -n "$endpoint" ] || fail "the user-data has no stylus.site.paletteEndpoint"
    [ -n "$token" ] || fail "the user-data has no stylus.site.edgeHostToken"
    case "$endpoint" in http://* | https://*) ;; *) endpoint="https://$endpoint" ;; esac
    endpoint=${endpoint%/}

    proxy=$(proxy_for "$endpoint" "$USERDATA")
    if [ -n "$proxy" ]; then
        export http_proxy="$proxy"
        proxy=${proxy#*://}
        say "using proxy ${proxy#*@}"
    else
        unset http_proxy
    fi
    case "$endpoint" in https://*)
        [ -n "$(site_field "$USERDATA" network.httpsProxy)" ] \
            && say "note: busybox wget cannot tunnel https through a proxy; connecting directly"
        ;;
    esac

    nic=$(first_nic) || nic=""
    uid=$(host_uid) || fail "cannot derive a host uid (no DMI UUID, /etc/machine-id or NIC)"
    case "$uid" in
    [A-Za-z0-9]*[!A-Za-z0-9._-]* | [!A-Za-z0-9]*) fail "host uid '$uid' must be letters, digits, '.', '_' or '-'" ;;
    esac
    mac=""
    [ -n "$nic" ] && mac=$(cat "/sys/class/net/$nic/address" 2>/dev/null)

    case "$transport" in
    http) ;;
    file)
        # An airgapped host: its upgrades come on a stick (airgap.sh), checked before the
        # registration bundle is written (a repave reboots; the bundle is written next boot).
        airgap_turn || :
        optional=""
        [ -n "$mac" ] && optional="\"macAddress\":$(json_str "$mac"),"
        [ -n "$site" ] && optional="$optional\"site\":$(json_str "$site"),"
        host=$(printf '{"agentVersion":%s,"arch":%s,"hostUid":%s,%s"tags":%s}' \
            "$(json_str "$AGENT_VERSION")" "$(json_str "$(arch_name)")" "$(json_str "$uid")" \
            "$optional" "$(tags_json "$USERDATA")")
        register_by_file "$token" "$host" "$uid"
        token=""
        say "registration bundle written for uid=$uid site=${site:-<none>}: import it on the hub"
        return 0
        ;;
    *) fail "edgekit.agent.transport=$transport is not known (http or file)" ;;
    esac
    # No network is unreachable too: a stick may still carry this host's upgrade.
    [ -n "$nic" ] || { airgap_turn || :; fail "no network interface besides lo"; }
    network_up "$nic" || { airgap_turn || :; fail "no IPv4 address on $nic from DHCP"; }
    address=$(nic_ipv4 "$nic")

    # The token goes in the body of a 0600 file, never on a command line.
    body="$RUN/agent-register.json"
    (
        umask 077
        printf '{"hostUid":%s,"hostAddress":%s,"macAddress":%s,"arch":%s,' \
            "$(json_str "$uid")" "$(json_str "$address")" "$(json_str "$mac")" \
            "$(json_str "$(arch_name)")"
        [ -n "$site" ] && printf '"site":%s,' "$(json_str "$site")"
        printf '"tags":%s,"agentVersion":%s,"edgeHostToken":%s}' "$(tags_json "$USERDATA")" \
            "$(json_str "$AGENT_VERSION")" "$(json_str "$token")"
    ) >"$body"
    token=""

    # The host's credential proves it is this device when it registers again (every boot);
    # on the first boot it makes one, kept before the first attempt so a retry after a lost
    # answer proves the same device. The hub adopts it for a new host.
    made_own=""
    if [ -s "$STATE_DIR/credential" ]; then
        own=$(cat "$STATE_DIR/credential")
    else
        own="ekh_$(head -c 32 /dev/urandom | xxd -p | tr -d '\n')"
        keep_secret credential "$own" || fail "cannot write $STATE_DIR/credential"
        made_own=1
    fi
    proof="Authorization: Bearer $own"
    own=""

    answer="$RUN/agent-answer.json"
    delay=1
    attempt=0
    while :; do
        attempt=$((attempt + 1))
        if http POST "$endpoint/v1/edgehosts/register" "$answer" "$body" --header "$proof"; then
            break
        fi
        case "$HTTP_STATUS" in
        4*)
            if [ "$HTTP_STATUS" != 408 ] && [ "$HTTP_STATUS" != 429 ]; then
                rm -f "$body"
                # A first registration refused at its first attempt adopted nothing: keep
                # nothing either. After a lost answer the hub may hold it: keep it then.
                [ -z "$made_own" ] || [ "$attempt" -gt 1 ] || rm -f "$STATE_DIR/credential"
                fail "registration refused: $(refusal "$HTTP_STATUS")"
            fi
            ;;
        esac
        # Offline: a host assigned before keeps running its last applied image and role (the
        # disk booted them; assignment.env and desired.json are on COS_PERSISTENT) and, when
        # it watches, retries with backoff (at most edgekit.agent.max_backoff seconds apart)
        # past the deadline, until the hub answers again.
        if [ -z "${offline_since:-}" ] && [ -s "$STATE_DIR/assignment.env" ] \
            && { [ "$HTTP_STATUS" = 000 ] || [ "${HTTP_STATUS#5}" != "$HTTP_STATUS" ]; }; then
            offline_since=$(now)
            # shellcheck disable=SC1091
            last=$(. "$STATE_DIR/assignment.env" && echo "cluster=$CLUSTER_NAME role=$ROLE generation=$GENERATION")
            say "hub unreachable: running offline with the last applied state ($last, image $(disk_mounts && running_field version) $(running_digest))"
        fi
        # Unreachable (no answer or a 5xx), at boot and on every retry: an upgrade bundle on
        # a stick applies now (airgap.sh; a repave reboots).
        if [ "$HTTP_STATUS" = 000 ] || [ "${HTTP_STATUS#5}" != "$HTTP_STATUS" ]; then
            k_status=$HTTP_STATUS k_reason=$HTTP_REASON k_error=$HTTP_ERROR
            airgap_turn || :
            HTTP_STATUS=$k_status HTTP_REASON=$k_reason HTTP_ERROR=$k_error
        fi
        if [ -n "${offline_since:-}" ] && [ "$watch" != 0 ]; then
            :
        elif [ $(($(now) + delay)) -ge "$deadline" ]; then
            rm -f "$body"
            if [ "$HTTP_STATUS" = 000 ]; then
                fail "cannot reach the hub at $endpoint after $attempt attempts: $HTTP_ERROR"
            fi
            fail "registration failed after $attempt attempts: the hub answered $HTTP_STATUS $HTTP_REASON"
        fi
        say "hub at $endpoint not ready (attempt $attempt: ${HTTP_STATUS} ${HTTP_REASON:-$HTTP_ERROR}); retrying in ${delay}s"
        sleep "$delay"
        delay=$((delay * 2))
        [ "$delay" -le "$max_backoff" ] || delay=$max_backoff
    done
    rm -f "$body"
    proof=""
    credential=$(json_get "$answer" credential)
    registered_site=$(sed -n 's/.*"site":"\([^"]*\)".*/\1/p' "$answer" | head -n 1)
    rm -f "$answer"
    [ -n "$credential" ] || fail "the hub's registration answer carries no credential"
    keep_secret credential "$credential" || fail "cannot write $STATE_DIR/credential"
    keep_secret host-uid "$uid"
    keep_secret endpoint "$endpoint"
    say "registered uid=$uid site=${registered_site:-${site:-<none>}}"
    [ -n "${offline_since:-}" ] && say "the hub is reachable again after $(($(now) - offline_since))s offline"

    auth="Authorization: Bearer $credential"
    credential=""
    hostpath="$endpoint/v1/edgehosts/$uid"
    beat="$RUN/agent-heartbeat.json"
    printf '{"hostAddress":%s}' "$(json_str "$address")" >"$beat"
    http POST "$hostpath/heartbeat" "$answer" "$beat" --header "$auth" \
        || say "heartbeat failed (${HTTP_STATUS} ${HTTP_REASON:-$HTTP_ERROR}); will retry"
    # Finish what the last boot started: confirm a tentative slot, or report a rollback.
    HOSTPATH=$hostpath AUTH=$auth
    phases_flush || :  # what an airgap upgrade recorded while the hub was unreachable
    upgrade_boot_check || :

    desired="$RUN/agent-desired.json"
    while :; do
        if http GET "$hostpath/desired-state" "$desired" "" --header "$auth"; then
            if ! grep -q '"desired":null' "$desired"; then
                break
            fi
        elif [ "$HTTP_STATUS" = 401 ] || [ "$HTTP_STATUS" = 403 ] || [ "$HTTP_STATUS" = 404 ]; then
            fail "the hub no longer accepts this host's credential ($HTTP_STATUS $HTTP_REASON)"
        fi
        if [ $(($(now) + poll)) -ge "$deadline" ]; then
            fail "no cluster assignment within ${timeout}s (edgekit.agent.timeout)"
        fi
        sleep "$poll"
        http POST "$hostpath/heartbeat" "$answer" "$beat" --header "$auth" || :
    done

    cluster=$(json_get "$desired" clusterName)
    role=$(json_get "$desired" role)
    image=$(json_get "$desired" providerImage)
    generation=$(json_num "$desired" generation)
    (
        umask 077
        printf 'CLUSTER_NAME=%s\nCLUSTER_UID=%s\nROLE=%s\nPOOL=%s\nPROVIDER_IMAGE=%s\nGENERATION=%s\n' \
            "$cluster" "$(json_get "$desired" clusterUid)" "$role" "$(json_get "$desired" pool)" \
            "$image" "${generation:-1}" >"$STATE_DIR/.assignment.tmp"
    ) && mv "$STATE_DIR/.assignment.tmp" "$STATE_DIR/assignment.env" && sync
    # (synced before it is reported: on an installed disk the report says it survives a power cut)
    say "assigned cluster=$cluster role=$role image=${image:-<none>}"

    cuid=$(desired_field "$desired" clusterUid)
    seen="$cuid:${generation:-1}"
    kind=$(desired_field "$desired" upgrade)
    last=$(cat "$STATE_DIR/observed" 2>/dev/null) || last=""
    if [ "$seen" = "$last" ]; then
        # Handled before this boot (applied, confirmed or rolled back): already reported.
        [ -z "${offline_since:-}" ] || report healthy "${generation:-1}" "back online: generation ${generation:-1} still applied" "$image" || :
        watch_and_exit "$seen"
        return
    fi
    case "${kind:-none}" in repave | reboot | in_place)
        # A change this host has not applied yet (it was off or offline): the watch applies it.
        watch_and_exit ""
        return
        ;;
    esac
    status="$RUN/agent-status.json"
    # With the digest of the image running (an installed slot's, or what a live boot's
    # builder wrote), so the hub knows what every host runs from its first report on.
    j_digest=$(running_digest)
    {
        printf '{"state":"applied","generation":%s,"providerImage":%s' \
            "${generation:-1}" "$(json_str "$image")"
        [ -n "$j_digest" ] && printf ',"imageDigest":%s' "$(json_str "$j_digest")"
        printf ',"message":%s}' "$(json_str "assignment written to $STATE_DIR/assignment.env")"
    } >"$status"
    if http POST "$hostpath/status" "$answer" "$status" --header "$auth"; then
        # Kept (and synced) before it is said: whoever sees the line may cut the power.
        echo "$seen" | keep_file observed || :
        say "status reported: applied generation=${generation:-1}"
    else
        say "error: status report failed (${HTTP_STATUS} ${HTTP_REASON:-$HTTP_ERROR})"
    fi
    rm -f "$status"
    watch_and_exit "$seen"
}

# The end of agent_main: watch (edgekit.agent.watch) from "clusterUid:generation" $1, clean up.
watch_and_exit() {
    rc=0
    if [ "$watch" != 0 ]; then
        watch_desired "$hostpath" "$auth" "$beat" "$watch" "$poll" "$1" || rc=1
    fi
    rm -f "$answer" "$beat" "$desired"
    return $rc
}
