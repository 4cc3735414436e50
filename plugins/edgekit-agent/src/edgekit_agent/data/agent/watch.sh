# shellcheck shell=sh
# edgekit-agent part: watching the desired state. Sourced by /usr/bin/edgekit-agent (docs/agent.md).

# ---------------------------------------------------------------------------------------
# watching the desired state

# The scalar member "$2" of the "desired" object in the desired-state answer $1: a string
# without its quotes, or a number; empty when absent or null. Members nested deeper (a
# pack's values) never match, whatever their names.
desired_field() {
    awk -v want="$2" '
    { text = text $0 "\n" }
    END {
        n = length(text); depth = 0; expect_key = 0; want_val = 0; key = ""
        for (i = 1; i <= n; i++) {
            c = substr(text, i, 1)
            if (c == "\"") {
                s = ""
                for (i++; i <= n; i++) {
                    c = substr(text, i, 1)
                    if (c == "\\") { i++; s = s substr(text, i, 1); continue }
                    if (c == "\"") break
                    s = s c
                }
                if (expect_key) { key = s; expect_key = 0 }
                else if (want_val) { print s; exit }
                continue
            }
            if (c == "{" || c == "[") {
                kind[++depth] = c; expect_key = (c == "{"); want_val = 0; continue
            }
            if (c == "}" || c == "]") { depth--; want_val = 0; continue }
            if (c == ",") { expect_key = (kind[depth] == "{"); want_val = 0; continue }
            if (c == ":") { want_val = (depth == 2 && key == want); continue }
            if (want_val && c ~ /[-0-9]/) {
                v = c
                while (i < n && substr(text, i + 1, 1) ~ /[-0-9.eE+]/) v = v substr(text, ++i, 1)
                print v; exit
            }
            if (want_val && c ~ /[a-z]/) exit
        }
    }' "$1"
}

# After the assignment: every $5 seconds for $4 seconds ("forever": no end), send a
# heartbeat, poll the desired state (URL prefix $1, header $2, heartbeat body $3) and, when
# its cluster or generation changed since $6 ("clusterUid:generation", what was handled
# last), apply it by its upgrade kind (apply_desired, upgrade.sh), which reports each phase
# with observedGeneration and the digest of the image running. Returns 1 when the hub no
# longer accepts this host's credential.
watch_desired() {
    w_path=$1 w_auth=$2 w_beat=$3 w_for=$4 w_every=$5 w_seen=$6
    HOSTPATH=$w_path AUTH=$w_auth  # what report (upgrade.sh) posts with
    w_desired="$RUN/agent-watch-desired.json"
    w_answer="$RUN/agent-watch-answer.json"
    w_end=0
    [ "$w_for" = forever ] || w_end=$(($(now) + w_for))
    if [ "$w_for" = forever ]; then
        say "watching the desired state every ${w_every}s"
    else
        say "watching the desired state every ${w_every}s for ${w_for}s"
    fi
    while [ "$w_for" = forever ] || [ "$(now)" -lt "$w_end" ]; do
        sleep "$w_every"
        http POST "$w_path/heartbeat" "$w_answer" "$w_beat" --header "$w_auth" || :
        if ! http GET "$w_path/desired-state" "$w_desired" "" --header "$w_auth"; then
            case "$HTTP_STATUS" in
            401 | 403 | 404)
                say "error: the hub no longer accepts this host's credential ($HTTP_STATUS $HTTP_REASON)"
                rm -f "$w_answer"
                return 1
                ;;
            000 | 5*)
                # Unreachable: a stick may carry an upgrade (airgap.sh); one it applied is
                # handled (not applied again when the hub answers with that generation).
                airgap_turn && w_seen=$(cat "$STATE_DIR/observed" 2>/dev/null)
                ;;
            esac
            HOSTPATH=$w_path AUTH=$w_auth
            continue
        fi
        [ -s "$PHASES_FILE" ] && { phases_flush || :; }
        w_gen=$(desired_field "$w_desired" generation)
        w_cluster=$(desired_field "$w_desired" clusterUid)
        # No desired state (a release this agent confirmed) or nothing new: nothing to say.
        [ -n "$w_gen" ] && [ "$w_cluster:$w_gen" != "$w_seen" ] || continue
        w_action=$(desired_field "$w_desired" action)
        w_upgrade=$(desired_field "$w_desired" upgrade)
        A_LINE="reported"
        # Applied by its upgrade kind (upgrade.sh); a repave reboots and does not return.
        if apply_desired "$w_desired"; then
            w_seen="$w_cluster:$w_gen"
            echo "$w_seen" | keep_file observed || :  # kept before it is said (see main.sh)
            say "observed generation=$w_gen action=${w_action:-update} upgrade=${w_upgrade:-none}: $A_LINE"
        fi
    done
    rm -f "$w_answer" "$w_desired"
    return 0
}

