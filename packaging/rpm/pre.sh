# aigw %pre: the system user before the files (/etc/aigw/aigw.env is
# root:aigw). The line is usr/lib/sysusers.d/aigw.conf (CI checks they match).
if command -v systemd-sysusers >/dev/null 2>&1; then
    echo 'u aigw - "aigw GitLab AI Gateway" /var/lib/aigw /usr/sbin/nologin' |
        systemd-sysusers --replace=/usr/lib/sysusers.d/aigw.conf - || :
else
    getent group aigw >/dev/null || groupadd -r aigw
    getent passwd aigw >/dev/null ||
        useradd -r -g aigw -d /var/lib/aigw -s /usr/sbin/nologin -c "aigw GitLab AI Gateway" aigw
fi
exit 0
