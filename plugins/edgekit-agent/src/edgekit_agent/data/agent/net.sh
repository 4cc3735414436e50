# shellcheck shell=sh
# edgekit-agent part: identity and network (host uid, DHCP, proxies). Sourced by /usr/bin/edgekit-agent (docs/agent.md).

# ---------------------------------------------------------------------------------------
# identity and network

# First network interface other than lo, by name.
first_nic() {
    for path in /sys/class/net/*; do
        name=${path##*/}
        [ "$name" = lo ] && continue
        [ -e "$path/address" ] || continue
        echo "$name"
        return 0
    done
    return 1
}

# A stable host uid: DMI product UUID, else /etc/machine-id, else the first NIC's MAC
# (hex digits only). Placeholder UUIDs that firmware leaves unset are skipped.
host_uid() {
    uid=$(cmdline_arg edgekit.agent.uid) && [ -n "$uid" ] && { echo "$uid"; return 0; }
    dmi=${EDGEKIT_AGENT_DMI_UUID:-/sys/class/dmi/id/product_uuid}
    if [ -r "$dmi" ]; then
        uid=$(tr 'A-F' 'a-f' <"$dmi" 2>/dev/null | tr -d ' \n')
        case "$uid" in
        '' | 00000000-0000-0000-0000-000000000000 | ffffffff-ffff-ffff-ffff-ffffffffffff \
            | 03000200-0400-0500-0006-000700080009) ;;
        *[!0-9a-f-]*) ;;
        *) echo "$uid"; return 0 ;;
        esac
    fi
    mid=${EDGEKIT_AGENT_MACHINE_ID:-/etc/machine-id}
    if [ -r "$mid" ]; then
        uid=$(tr -d ' \n' <"$mid")
        case "$uid" in '' | *[!0-9a-f]*) ;; *) echo "$uid"; return 0 ;; esac
    fi
    nic=$(first_nic) || return 1
    uid=$(tr -d ':\n' <"/sys/class/net/$nic/address")
    [ -n "$uid" ] && [ "$uid" != 000000000000 ] && echo "$uid"
}

nic_ipv4() {
    ip -4 addr show dev "$1" 2>/dev/null | awk '$1 == "inet" { sub(/\/.*/, "", $2); print $2; exit }'
}

# Bring up interface $1 with DHCP (the sample OS's udhcpc script) unless it has an address.
network_up() {
    [ -n "$(nic_ipv4 "$1")" ] && return 0
    ip link set "$1" up 2>/dev/null
    script=/etc/udhcpc/default.script
    [ -x "$script" ] || script=/usr/share/udhcpc/default.script
    tries=$(cmdline_int edgekit.agent.dhcp_tries 5)
    bb udhcpc -i "$1" -n -q -t "$tries" -s "$script" >/dev/null 2>&1
    [ -n "$(nic_ipv4 "$1")" ]
}

# The proxy for endpoint $1 from user-data $2 (stylus.site.network.httpProxy unless the host
# matches noProxy: a name, a .domain suffix or *); empty for a direct connection. busybox
# wget sends plain-http requests to the proxy and has no CONNECT, so https goes direct.
proxy_for() {
    case "$1" in https://*) return 0 ;; esac
    proxy=$(site_field "$2" network.httpProxy)
    [ -n "$proxy" ] || return 0
    host=${1#*://}
    host=${host%%/*}
    host=${host%:*}
    for np in $(site_field "$2" network.noProxy | tr ',' ' '); do
        np=${np#.}
        [ "$np" = "*" ] && return 0
        case "$host" in "$np" | *".$np") return 0 ;; esac
    done
    echo "$proxy"
}

arch_name() {
    case "$(uname -m)" in
    x86_64 | amd64) echo amd64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) uname -m ;;
    esac
}

