# aigw %post ($1: 1 = install, 2 = upgrade): %systemd_post, then the state
# directory and the signing keys, generated once (upgrades keep them).
if [ "$1" -eq 1 ] && [ -x /usr/bin/systemctl ]; then
    # Distribution preset policy decides (RHEL: disabled until `systemctl enable`).
    systemctl --no-reload preset aigw.service >/dev/null 2>&1 || :
fi
[ -d /var/lib/aigw ] || install -d -o aigw -g aigw -m 0750 /var/lib/aigw
[ -d /etc/aigw/keys ] || install -d -o aigw -g aigw -m 0700 /etc/aigw/keys
for key in duo_workflow_jwt aigw_jwt; do
    f=/etc/aigw/keys/$key.key
    if [ ! -e "$f" ]; then
        if ! out=$(aigw keygen --force "$f.new" 2>&1); then
            echo "$out" >&2
            exit 1
        fi
        chown aigw:aigw "$f.new"
        mv -f "$f.new" "$f"
        echo "aigw: generated the signing key $f"
    fi
done
exit 0
