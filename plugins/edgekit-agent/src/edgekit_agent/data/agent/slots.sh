# shellcheck shell=sh
# edgekit-agent part: A/B slots on an installed disk. GRUB's environment block, staging a
# verified slot payload into a directory, installing a staged directory into the passive
# slot. docs/installer-iso.md ("What a slot holds", "Boot selection") and docs/agent.md
# ("Repave") are the contract.

# The installed system's early hook, carried into every slot the agent writes (it mounts
# COS_OEM/COS_PERSISTENT/COS_STATE; the installer put it into slot A).
PERSIST_HOOK_PATH=etc/edgekit/boot.d/10-edgekit-persistent
PERSIST_HOOK=${EDGEKIT_AGENT_PERSIST_HOOK:-/$PERSIST_HOOK_PATH}
SLOT_FILES="vmlinuz initrd edgekit.cpio.gz image.json"

# ---------------------------------------------------------------------------------------
# GRUB environment block (what grub-editenv and GRUB's load_env/save_env read: a
# "# GRUB Environment Block" line, key=value lines, '#' padding to exactly 1024 bytes)

# The value of $2 in the environment block $1 (empty when unset).
grubenv_get() {
    [ -r "$1" ] || return 0
    head -c 1024 "$1" | tr -d '#' | sed -n "s/^$2=//p" | head -n 1
}

# Set KEY=VALUE pairs ($2...) in the environment block $1, keeping the other variables; an
# empty VALUE unsets KEY. Written as $1.new (synced), then renamed over $1 and synced: a
# power cut leaves the old block or the new one. If both were lost, grub.cfg's defaults
# boot slot A, which an upgrade never writes while it is the active slot... unless B is
# active; then A is the previous image, complete too (slots are only written whole).
grubenv_set() {
    file=$1
    shift
    keep=$(head -c 1024 "$file" 2>/dev/null | sed -n '/^[A-Za-z_][A-Za-z0-9_]*=/p')
    for kv in "$@"; do
        keep=$(printf '%s\n' "$keep" | grep -v "^${kv%%=*}=")
        [ -n "${kv#*=}" ] && keep=$(printf '%s\n%s' "$keep" "$kv")
    done
    {
        echo "# GRUB Environment Block"
        printf '%s\n' "$keep" | sed '/^$/d'
    } >"$file.new" || return 1
    size=$(wc -c <"$file.new")
    if [ "$size" -gt 1024 ]; then
        rm -f "$file.new"
        return 1
    fi
    head -c $((1024 - size)) /dev/zero | tr '\0' '#' >>"$file.new" && sync \
        && mv "$file.new" "$file" && sync
}

# ---------------------------------------------------------------------------------------
# staging: a pulled image (oci_pull's directory) -> a directory holding a slot payload

# The sha256 recorded for "$2" (kernel, initrd or overlay) in image.json $1.
slot_sha() {
    awk -v k="\"$2\"" '$0 ~ k { f = 1 } f && /"sha256"/ { gsub(/[",]/, "", $2); print $2; exit }' "$1"
}

# A file's {"path", "sha256", "size"} member of image.json, named $1, for file $3 as $2.
slot_entry() {
    printf '  "%s": {\n    "path": "%s",\n    "sha256": "%s",\n    "size": %s\n  }' \
        "$1" "$2" "$(sha256_of "$3")" "$(wc -c <"$3" | tr -d ' ')"
}

# Before layer blob $2 is extracted over tree $1: every directory it marks opaque
# (DIR/.wh..wh..opq) loses what the layers below put in it (OCI image-spec: only this
# layer's entries of DIR are seen). DIR itself stays, with its mode. Nothing outside the
# tree is touched: a DIR that resolves elsewhere (through a symlink of a layer) is skipped.
# The base layer's files live in its initrd, under this tree's cpio, so they cannot be
# hidden this way.
apply_opaque() {
    o_root=$(readlink -f "$1")
    tar -tzf "$2" 2>/dev/null \
        | sed -n 's|^\(\./\)\{0,1\}\(\(.*/\)\{0,1\}\)\.wh\.\.wh\.\.opq$|\2|p' \
        | while IFS= read -r o_dir; do
            o_dir="$1/${o_dir%/}"
            [ -d "$o_dir" ] && [ ! -L "$o_dir" ] || continue
            case "$(readlink -f "$o_dir")" in "$o_root" | "$o_root"/*) ;; *) continue ;; esac
            find "$o_dir" -mindepth 1 -maxdepth 1 -exec rm -rf {} \;
        done
}

# Whiteouts of an extracted layer in tree $1: ".wh.NAME" removes NAME, an opaque marker
# is dropped (apply_opaque emptied its directory before the layer was extracted).
apply_whiteouts() {
    find "$1" -name '.wh.*' | while IFS= read -r wh; do
        name=${wh##*/}
        [ "$name" = .wh..wh..opq ] || rm -rf "${wh%/*}/${name#.wh.}"
        rm -f "$wh"
    done
}

# Stage image pulled into $1 (manifest.json, blobs/) as reference $2, digest $3, into
# directory $4 (replaced; written as $4.tmp and renamed when complete). The slot payload:
# vmlinuz and initrd from the first layer holding boot/vmlinuz and boot/initrd (the base:
# its initrd holds its own tree), every later layer (the Kubernetes files, the agent,
# overlays) as edgekit.cpio.gz, which GRUB loads after the initrd, plus the early hook
# PERSIST_HOOK; and image.json. The airgap bundle (later) stages the same directory.
stage_payload() {
    src=$1 ref=$2 digest=$3 dest=$4
    work="$dest.tmp"
    STAGE_ERROR=""
    rm -rf "$work" && mkdir -p "$work/tree" || { STAGE_ERROR="cannot create $work"; return 1; }
    base=""
    for d in $(json_flat "$src/manifest.json" | manifest_layers | cut -d' ' -f1); do
        blob="$src/blobs/${d#sha256:}"
        if [ -z "$base" ]; then
            if tar -tzf "$blob" 2>/dev/null | grep -qx '\(\./\)\{0,1\}boot/vmlinuz'; then
                base=$d
                (cd "$work" && tar -xzf "$blob" boot/vmlinuz boot/initrd 2>/dev/null \
                    || tar -xzf "$blob" ./boot/vmlinuz ./boot/initrd) \
                    || { STAGE_ERROR="layer $d has boot/vmlinuz but no boot/initrd"; return 1; }
                mv "$work/boot/vmlinuz" "$work/vmlinuz" && mv "$work/boot/initrd" "$work/initrd"
                rm -rf "$work/boot"
            fi
            continue
        fi
        apply_opaque "$work/tree" "$blob"
        tar -xzf "$blob" -C "$work/tree" || { STAGE_ERROR="cannot extract layer $d"; return 1; }
        apply_whiteouts "$work/tree"
    done
    [ -n "$base" ] || { STAGE_ERROR="no layer of $ref holds boot/vmlinuz: not a bootable provider image"; return 1; }
    hook="$work/tree/$PERSIST_HOOK_PATH"
    if [ ! -f "$hook" ]; then
        [ -r "$PERSIST_HOOK" ] || { STAGE_ERROR="$PERSIST_HOOK is missing: the new slot could not mount its state"; return 1; }
        mkdir -p "${hook%/*}" && cp "$PERSIST_HOOK" "$hook" && chmod 0755 "$hook"
    fi
    # (the cpio lists names relative to the tree: the kernel unpacks them under /)
    (cd "$work/tree" && find . -mindepth 1 | sed 's|^\./||' | sort | cpio -o -H newc 2>/dev/null) \
        | gzip -n >"$work/edgekit.cpio.gz" || { STAGE_ERROR="cannot write edgekit.cpio.gz"; return 1; }
    rm -rf "$work/tree"
    config=$(json_flat "$src/manifest.json" | manifest_config)
    version=$(json_flat "$src/blobs/${config#sha256:}" \
        | sed -n 's/.*"org\.opencontainers\.image\.version":"\([^"]*\)".*/\1/p' | head -n 1)
    parse_ref "$ref" || :
    {
        printf '{\n  "digest": %s,\n  "format": "edgekit-slot/v1",\n' "$(json_str "$digest")"
        slot_entry initrd initrd "$work/initrd"
        printf ',\n'
        slot_entry kernel vmlinuz "$work/vmlinuz"
        printf ',\n'
        slot_entry overlay edgekit.cpio.gz "$work/edgekit.cpio.gz"
        printf ',\n  "ref": %s,\n  "tag": %s,\n  "version": %s\n}\n' "$(json_str "$ref")" \
            "$(json_str "${REF_TAG:-}")" "$(json_str "${version:-${REF_TAG:-}}")"
    } >"$work/image.json" || { STAGE_ERROR="cannot write image.json"; return 1; }
    sync
    rm -rf "$dest" && mv "$work" "$dest" && sync
}

# ---------------------------------------------------------------------------------------
# installing: a staged directory -> the slot directory $2/slots/$3

# Copy staged directory $1 into slot $3 of the COS_STATE mount $2: written as slots/.$3.new,
# synced, every file checked against image.json, then renamed to slots/$3 (the slot is
# complete or absent: a power cut before the rename leaves a .new directory that the next
# install removes, and grubenv still names the slots that were complete).
install_slot() {
    staged=$1 state=$2 slot=$3
    INSTALL_ERROR=""
    new="$state/slots/.$slot.new"
    rm -rf "$new" && mkdir -p "$new" || { INSTALL_ERROR="cannot create $new"; return 1; }
    say "writing slot $slot (as slots/.$slot.new)"
    for f in $SLOT_FILES; do
        [ -s "$staged/$f" ] || { INSTALL_ERROR="the staged payload has no $f"; return 1; }
        cp "$staged/$f" "$new/$f" || { INSTALL_ERROR="cannot write $new/$f (disk full?)"; return 1; }
    done
    sync
    for pair in kernel:vmlinuz initrd:initrd overlay:edgekit.cpio.gz; do
        want=$(slot_sha "$new/image.json" "${pair%%:*}")
        got=$(sha256_of "$new/${pair#*:}")
        if [ -z "$want" ] || [ "$got" != "$want" ]; then
            INSTALL_ERROR="slot $slot's ${pair#*:} does not match image.json (sha256 $got, expected ${want:-none})"
            rm -rf "$new"
            return 1
        fi
    done
    rm -rf "$state/slots/$slot" && mv "$new" "$state/slots/$slot" && sync
}
