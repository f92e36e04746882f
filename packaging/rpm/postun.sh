# aigw %postun ($1: 0 = erase, 1 = upgrade): %systemd_postun_with_restart.
# Keys in /etc/aigw/keys and /var/lib/aigw stay on erase (RPM has no purge;
# a reinstall reuses them): `rm -rf /etc/aigw /var/lib/aigw` removes them.
if [ -x /usr/bin/systemctl ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart aigw.service >/dev/null 2>&1 || :
    fi
fi
exit 0
