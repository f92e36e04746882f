# aigw %preun ($1: 0 = erase, 1 = upgrade): %systemd_preun.
if [ "$1" -eq 0 ] && [ -x /usr/bin/systemctl ]; then
    systemctl --no-reload disable --now aigw.service >/dev/null 2>&1 || :
fi
exit 0
